"""The learned case-selection policy: model, training, checkpoints, selection, online learning."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from memory.bank import ScoredCase
from memory.cases import Case
from memory.experience import ExperienceLog
from memory.policy.checkpoint import (
    FORMAT_VERSION,
    PolicyCheckpointError,
    load_checkpoint,
    read_checkpoint,
)
from memory.policy.data import PolicyData, from_experience
from memory.policy.features import FEATURE_NAMES, N_FEATURES, feature_row
from memory.policy.metrics import classification_report, roc_auc
from memory.policy.model import CaseScorer
from memory.policy.online import OnlineTrainer
from memory.policy.selection import Exploration, Selector, SelectorCache
from memory.policy.train import TrainConfig, evaluate, fit, fit_and_save, predict

DIM = 8


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def synthetic(n_queries: int = 60, per_query: int = 6, seed: int = 0, null_every: int = 0) -> PolicyData:
    """Success iff the shown case is labelled positive (a feature the model must find)."""
    rng = np.random.default_rng(seed)
    q_emb = _unit(rng.normal(size=(n_queries, DIM)))
    rows = n_queries * per_query
    q_index = np.repeat(np.arange(n_queries), per_query)
    c_emb = _unit(rng.normal(size=(rows, DIM)))
    positive = rng.random(rows) < 0.4
    sims = np.einsum("ij,ij->i", q_emb[q_index], c_emb)
    feats = np.stack(
        [
            feature_row(
                similarity=float(s), best_similarity=1.0, reward=float(p), label="positive" if p else "negative"
            )
            for s, p in zip(sims, positive, strict=True)
        ]
    )
    is_null = np.zeros(rows, bool)
    target = positive.astype(np.float32)
    if null_every:
        # Rows that showed nothing: those tasks always succeeded.
        is_null[::null_every] = True
        feats[is_null] = 0.0
        target[is_null] = 1.0
    return PolicyData(
        queries=[f"question {i}" for i in range(n_queries)],
        query_emb=q_emb,
        q_index=q_index,
        case_emb=c_emb,
        features=feats.astype(np.float32),
        is_null=is_null,
        target=target,
        weight=np.ones(rows, np.float32),
        case_ids=[f"case-{i}" for i in range(rows)],
        sources=["synthetic"],
    )


FAST = TrainConfig(epochs=25, patience=25, hidden=32, dropout=0.1, weight_decay=1e-4, lr=3e-3, batch_size=64)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = synthetic()
    path = tmp_path_factory.mktemp("policy") / "policy.pt"
    version, result = fit_and_save(data, path, FAST, progress=False)
    return path, version, result, data


def hits_for(data: PolicyData, query: int) -> tuple[np.ndarray, list[ScoredCase]]:
    rows = np.flatnonzero(data.q_index == query)
    hits = []
    for r in rows:
        label = "positive" if data.features[r, FEATURE_NAMES.index("label_positive")] else "negative"
        case = Case(question=f"case {r}", label=label, reward=1.0 if label == "positive" else 0.0)
        hits.append(ScoredCase(case, float(data.features[r, 0]), data.case_emb[r]))
    return data.query_emb[query], hits


def test_metrics_match_known_values():
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert roc_auc(y, np.ones(4)) == pytest.approx(0.5)
    assert np.isnan(roc_auc(np.ones(3), np.arange(3)))
    rep = classification_report(y, np.array([0.0, 0.0, 1.0, 1.0]))
    assert rep["accuracy"] == 1.0 and rep["f1"] == 1.0 and rep["brier"] == 0.0 and rep["ece"] == 0.0


def test_forward_shapes_and_probabilities():
    model = CaseScorer(dim=DIM, hidden=16).eval()
    q, c = torch.randn(5, DIM), torch.randn(5, DIM)
    f = torch.randn(5, N_FEATURES)
    null = torch.tensor([False, False, False, False, True])
    with torch.no_grad():
        logits = model(q, c, f, null)
        other = model(q, torch.randn(5, DIM), torch.randn(5, N_FEATURES), null)
    assert logits.shape == (5,)
    probs = torch.sigmoid(logits)
    assert torch.all((probs > 0) & (probs < 1))
    # The no-case row ignores the case it is given: only the query matters there.
    assert float(other[4]) == pytest.approx(float(logits[4]))
    assert not torch.allclose(other[:4], logits[:4])


def test_split_is_by_query_and_seeded():
    data = synthetic(n_queries=40)
    train, val, test = data.split_by_query((0.2, 0.2), seed=3)
    parts = [set(p.q_index.tolist()) for p in (train, val, test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert sum(len(p) for p in (train, val, test)) == len(data)
    again = data.split_by_query((0.2, 0.2), seed=3)
    assert set(again[1].q_index.tolist()) == parts[1]


def test_training_finds_the_predictive_feature(trained):
    _, _, result, data = trained
    assert result.val_metrics["auc"] > 0.95
    assert result.train_metrics["auc"] > 0.95
    # Class weighting is undone: predicted rates stay near the true positive rate.
    probs = predict(result.model, data)
    assert abs(float(probs.mean()) - float(data.target.mean())) < 0.1


def test_training_refuses_single_class():
    data = synthetic()
    data.target[:] = 0.0
    with pytest.raises(ValueError, match="only failures"):
        fit(data, FAST, progress=False)


def test_checkpoint_round_trip(trained):
    path, version, result, data = trained
    raw = torch.load(path, weights_only=True)
    assert raw["version"] == version and raw["format_version"] == FORMAT_VERSION
    json.dumps(raw["metadata"])  # JSON-plain
    loaded = load_checkpoint(path)
    assert loaded.version == version
    meta = loaded.metadata
    assert meta["features"] == list(FEATURE_NAMES)
    assert meta["data_hash"] == data.data_hash()
    assert meta["backbone"] == "all-MiniLM-L6-v2"
    assert meta["metrics"]["val"]["auc"] == pytest.approx(result.val_metrics["auc"])
    np.testing.assert_allclose(predict(loaded.model, data), predict(result.model, data), rtol=1e-5)
    assert evaluate(loaded.model, data)["auc"] > 0.9


def test_tampered_weights_are_refused(trained, tmp_path):
    path = trained[0]
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["p3.bias"] += 5.0
    bad = tmp_path / "tampered.pt"
    torch.save(payload, bad)
    with pytest.raises(PolicyCheckpointError, match="digest"):
        load_checkpoint(bad)


class Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_unsafe_pickle_is_refused(tmp_path):
    bad = tmp_path / "evil.pt"
    torch.save({"format": "memento-case-policy", "x": Evil()}, bad)
    with pytest.raises(PolicyCheckpointError, match="weights_only"):
        read_checkpoint(bad)


def test_incompatible_checkpoints_are_refused(trained, tmp_path):
    payload = torch.load(trained[0], weights_only=True)
    cases = {
        "features": lambda p: p["config"].__setitem__("feature_names", ["similarity"]),
        "format version": lambda p: p.__setitem__("format_version", FORMAT_VERSION + 1),
        "not a Memento": lambda p: p.__setitem__("format", "something-else"),
    }
    for message, change in cases.items():
        copy = torch.load(trained[0], weights_only=True)
        change(copy)
        bad = tmp_path / "bad.pt"
        torch.save(copy, bad)
        with pytest.raises(PolicyCheckpointError, match=message):
            load_checkpoint(bad)
    # Weights whose digest matches but whose shapes do not fit the declared architecture.
    payload["config"]["head"]["hidden"] = 64
    bad = tmp_path / "shape.pt"
    torch.save(payload, bad)
    with pytest.raises(PolicyCheckpointError, match="do not fit"):
        load_checkpoint(bad)
    with pytest.raises(PolicyCheckpointError, match="no policy checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_selection_greedy_epsilon_thompson(trained):
    path, _, _, data = trained
    selector = Selector.from_path(path)
    query, hits = hits_for(data, 0)
    k = 3
    greedy = selector.select(query, hits, k, np.random.default_rng(0), exploration="greedy")
    assert [c.index for c in greedy] == list(range(len(hits)))
    order = np.argsort([-c.score for c in greedy], kind="stable")[:k]
    assert {c.index for c in greedy if c.shown} == set(order.tolist())
    assert all(c.propensity == (1.0 if c.shown else 0.0) for c in greedy)
    # The policy learned that positive cases lead to success.
    assert (
        all(hits[c.index].case.label == "positive" for c in greedy if c.shown)
        or sum(h.case.label == "positive" for h in hits) < k
    )

    rng = np.random.default_rng(1)
    for strategy in ("epsilon:0.3", "thompson:32"):
        for _ in range(8):
            choices = selector.select(query, hits, k, rng, exploration=strategy)
            props = np.array([c.propensity for c in choices])
            assert sum(c.shown for c in choices) == k
            assert np.all((props >= 0) & (props <= 1))
            assert props.sum() == pytest.approx(k)
            assert all(c.propensity > 0 for c in choices if c.shown)
    eps = selector.select(query, hits, k, rng, exploration=Exploration(strategy="epsilon", epsilon=0.3))
    # Local exploration: the K-th greedy slot gives way, with probability epsilon, to one of the
    # next K candidates of the ranking; nothing further down is ever shown.
    ranked = [c.index for c in sorted(greedy, key=lambda c: -c.score)]
    props = {c.index: c.propensity for c in eps}
    assert [props[i] for i in ranked[: k - 1]] == [1.0] * (k - 1)
    assert props[ranked[k - 1]] == pytest.approx(0.7)
    assert [props[i] for i in ranked[k : 2 * k]] == pytest.approx([0.3 / k] * k)

    with pytest.raises(ValueError, match="include_embeddings"):
        selector.select(query, [ScoredCase(hits[0].case, 0.5, None)], 1, rng)
    with pytest.raises(ValueError, match="bad exploration"):
        Exploration.parse("softmax")


def test_show_nothing_when_no_case_is_expected_to_help(tmp_path):
    data = synthetic(null_every=3)
    # Here cases only ever hurt: every shown case's task failed, every empty retrieval succeeded.
    data.target[~data.is_null] = 0.0
    path = tmp_path / "nothing.pt"
    fit_and_save(data, path, FAST, progress=False)
    selector = Selector.from_path(path)
    assert selector.can_show_nothing
    query, hits = hits_for(data, 1)
    rng = np.random.default_rng(0)
    choices = selector.select(query, hits, 3, rng, exploration="greedy")
    assert not any(c.shown for c in choices)
    assert all(c.propensity == 0.0 for c in choices)
    forced = selector.select(query, hits, 3, rng, exploration={"strategy": "greedy", "no_case_margin": None})
    assert sum(c.shown for c in forced) == 3
    # Exploration still shows random cases now and then, and says how likely each was.
    explored = selector.select(query, hits, 3, rng, exploration="epsilon:1.0")
    assert sum(c.shown for c in explored) == 3


def test_load_selector_absent_cached_and_reloaded(tmp_path, trained):
    selectors = SelectorCache()  # what a graph's resources hold
    path = tmp_path / "live.pt"
    assert selectors.load_selector(path) is None
    assert selectors.load_selector("") is None
    path.write_bytes(trained[0].read_bytes())
    first = selectors.load_selector(path)
    assert first is not None and selectors.load_selector(path) is first
    fit_and_save(synthetic(seed=5), path, FAST, progress=False)
    second = selectors.load_selector(path)
    assert second is not first and second.version != first.version
    # A damaged replacement does not take a running graph down: the last good version serves.
    path.write_bytes(b"not a checkpoint")
    assert selectors.load_selector(path) is second


def _experience(path, n: int, seed: int = 0) -> None:
    """Judged retrievals where tasks succeed iff a positive case was shown."""
    rng = np.random.default_rng(seed)
    log = ExperienceLog(path)
    for i in range(n):
        cands = []
        for j in range(4):
            positive = bool(rng.random() < 0.5)
            cands.append(
                {
                    "case_id": f"case-{i}-{j}",
                    "question": f"past question {i} {j}",
                    "similarity": float(rng.uniform(0.2, 0.9)),
                    "score": 0.5,
                    "shown": j == 0,
                    "propensity": 0.5,
                    "label": "positive" if positive else "negative",
                    "reward": 1.0 if positive else 0.0,
                }
            )
        log.log_retrieval(
            f"r{seed}-{i}", namespace="default", query=f"question {seed} {i}", candidates=cands, selector="similarity"
        )
        ok = cands[0]["label"] == "positive"
        log.log_outcome(f"r{seed}-{i}", reward=1.0 if ok else 0.0, label="positive" if ok else "negative")


def test_experience_rows(tmp_path):
    from memory.embeddings import HashEmbedder

    _experience(tmp_path / "exp.sqlite", 10)
    data = from_experience(ExperienceLog(tmp_path / "exp.sqlite").records(), HashEmbedder(DIM))
    assert len(data) == 10 and data.n_queries == 10  # only shown candidates become rows
    assert np.allclose(data.weight, 2.0)  # inverse propensity
    assert data.target.tolist() == data.features[:, FEATURE_NAMES.index("label_positive")].tolist()


def _bandit_experience(path, bank, n: int, seed: int = 0, *, bandit_helps: bool = True, share: float = 0.8) -> None:
    """Judged retrievals of an A/B rollout: positive cases help, negative ones hurt.

    Each retrieval draws its arm with ``share`` and logs it. The similarity arm shows any set of at
    most two of six stored cases, uniformly; the bandit arm shows the two positive cases (or, with
    ``bandit_helps`` off, the two negative ones).
    """
    from itertools import combinations

    rng = np.random.default_rng(seed)
    ids = sorted(bank.get_embeddings(_BANDIT_IDS, namespace="default"))
    labels = {cid: ("positive" if i % 2 else "negative") for i, cid in enumerate(_BANDIT_IDS)}
    slates = [list(c) for size in range(3) for c in combinations(range(len(ids)), size)]
    log = ExperienceLog(path)
    for i in range(n):
        bandit = bool(rng.random() < share)
        if bandit:
            chosen = [j for j, cid in enumerate(ids) if (labels[cid] == "positive") == bandit_helps][:2]
        else:
            chosen = slates[int(rng.integers(len(slates)))]
        cands = [{"case_id": cid, "similarity": float(rng.uniform(0.3, 0.8)), "label": labels[cid], "shown": j in chosen,
                  "propensity": sum(j in st for st in slates) / len(slates), "score": None} for j, cid in enumerate(ids)]  # fmt: skip
        rid = f"r{seed}-{i}"
        arm = {"arm": "bandit", "p": share} if bandit else {"arm": "similarity", "p": 1.0 - share}
        log.log_retrieval(rid, namespace="default", query=f"question {i}", candidates=cands, selector="learned",
                          slates=[(st, 1.0 / len(slates)) for st in slates], arm=arm)  # fmt: skip
        helped = sum(1 if labels[ids[j]] == "positive" else -1 for j in chosen)
        ok = rng.random() < min(1.0, max(0.0, 0.35 + 0.3 * helped))
        log.log_outcome(rid, reward=float(ok), label="positive" if ok else "negative")


_BANDIT_IDS = [f"case-{i}" for i in range(6)]


@pytest.fixture
def bandit_bank(tmp_path):
    from memory.bank import CaseBank
    from memory.embeddings import HashEmbedder

    bank = CaseBank(tmp_path / "bank", embedder=HashEmbedder(DIM))
    bank.upsert([Case(id=cid, question=f"stored case {cid}", label="positive" if i % 2 else "negative", reward=float(i % 2))
                 for i, cid in enumerate(_BANDIT_IDS)])  # fmt: skip
    return bank


def test_online_trainer_moves_the_share_by_the_arm_comparison(tmp_path, bandit_bank):
    from memory.embeddings import HashEmbedder
    from memory.policy.learner import DEMOTED_SHARE, PROMOTED_SHARE, START_SHARE
    from memory.policy.selection import load_bandit_selector

    exp = tmp_path / "exp.sqlite"
    policy = tmp_path / "policy.pt"
    _bandit_experience(exp, bandit_bank, 300)
    trainer = OnlineTrainer(
        policy, exp, every=3, bank=bandit_bank, embedder=HashEmbedder(DIM), namespace="default", k=2
    )
    # Before any retraining the bandit's prior serves its starting share.
    before = load_bandit_selector(policy)
    assert before.version == "prior" and before.share == START_SHARE
    assert trainer.notify_outcome() is False
    assert trainer.notify_outcome() is False
    assert trainer.notify_outcome() is True
    first = trainer.wait(timeout=120)
    # The bandit arm (it shows the cases that help) beats the similarity arm on the log.
    assert first is not None and first.promoted and first.share == PROMOTED_SHARE, first
    assert first.candidate > first.incumbent and first.low > 0
    live = load_bandit_selector(policy)
    assert live.version == first.version and live.share == PROMOTED_SHARE

    # Later the bandit arm shows the harmful cases: the comparison on recent outcomes demotes it.
    _bandit_experience(exp, bandit_bank, 600, seed=1, bandit_helps=False, share=PROMOTED_SHARE)
    second = trainer.retrain()
    assert second.demoted and not second.promoted and second.share == DEMOTED_SHARE, second
    assert second.candidate < second.incumbent
    live = load_bandit_selector(policy)
    assert live.version == second.version and live.share == DEMOTED_SHARE

    history = [json.loads(line) for line in (tmp_path / "policy.pt.history.jsonl").read_text().splitlines()]
    assert [(h["promoted"], h["demoted"], h["share"]) for h in history] == [
        (True, False, PROMOTED_SHARE),
        (False, True, DEMOTED_SHARE),
    ]


def test_online_trainer_waits_for_enough_data(tmp_path, bandit_bank):
    from memory.embeddings import HashEmbedder
    from memory.policy.learner import START_SHARE

    trainer = OnlineTrainer(
        tmp_path / "p.pt", tmp_path / "exp.sqlite", every=1, bank=bandit_bank, embedder=HashEmbedder(DIM)
    )
    result = trainer.retrain()
    assert not result.promoted and "no judged retrieval" in result.reason
    _bandit_experience(tmp_path / "exp.sqlite", bandit_bank, 4)
    result = trainer.retrain()
    # Four outcomes are too few to compare the arms: the refit is written at its starting share.
    assert not result.promoted and not result.demoted and "too little overlap" in result.reason
    assert result.share == START_SHARE and (tmp_path / "p.pt").exists()
    assert OnlineTrainer(tmp_path / "p.pt", every=0).notify_outcome() is False
