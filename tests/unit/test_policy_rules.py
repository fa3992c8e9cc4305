"""Conservative learning rules: similarity prior, set credit, support limits, local exploration, promotion."""

from __future__ import annotations

import numpy as np
import pytest

from memory.bank import ScoredCase
from memory.cases import Case
from memory.policy.checkpoint import load_checkpoint, save_checkpoint
from memory.policy.data import PolicyData
from memory.policy.exploration import Exploration, explore_ranking
from memory.policy.features import feature_row
from memory.policy.online import similarity_selection_auc, train_and_promote
from memory.policy.selection import Selector, load_selector
from memory.policy.train import TrainConfig, case_contributions, fit_and_save, predict_sets
from tests.unit.test_policy import DIM, FAST, _unit, synthetic


def sets(n_queries: int = 80, shown: int = 2, seed: int = 0, rule: str = "similarity") -> PolicyData:
    """Retrievals that each showed ``shown`` cases and one outcome for all of them.

    ``rule="similarity"``: the task succeeds iff its most similar shown case is above 0.3.
    ``rule="any"``: it succeeds iff a shown case is labelled positive.
    """
    rng = np.random.default_rng(seed)
    q_emb = _unit(rng.normal(size=(n_queries, DIM)))
    rows = n_queries * shown
    q_index = np.repeat(np.arange(n_queries), shown)
    c_emb = _unit(rng.normal(size=(rows, DIM)))
    positive = rng.random(rows) < 0.5
    sims = np.einsum("ij,ij->i", q_emb[q_index], c_emb)
    best = np.maximum.reduceat(sims, np.arange(0, rows, shown))
    feats = np.stack(
        [
            feature_row(
                similarity=float(s),
                best_similarity=float(best[i // shown]),
                reward=float(p),
                label="positive" if p else "negative",
            )
            for i, (s, p) in enumerate(zip(sims, positive, strict=True))
        ]
    ).astype(np.float32)
    outcome = best > 0.3 if rule == "similarity" else positive.reshape(n_queries, shown).any(axis=1)
    return PolicyData(
        queries=[f"question {i}" for i in range(n_queries)],
        query_emb=q_emb,
        q_index=q_index,
        case_emb=c_emb,
        features=feats,
        is_null=np.zeros(rows, bool),
        target=np.repeat(outcome, shown).astype(np.float32),
        weight=np.ones(rows, np.float32),
        case_ids=[f"case-{i}" for i in range(rows)],
        sources=["synthetic"],
        group=q_index.copy(),
    )


def test_local_exploration_propensities_are_exact_and_stay_near_the_top():
    order = np.array([3, 1, 0, 2, 4, 5, 6, 7])
    cfg = Exploration(strategy="epsilon", epsilon=0.2)
    rng = np.random.default_rng(0)
    counts = np.zeros(8)
    for _ in range(4000):
        shown, propensity = explore_ranking(order, 3, cfg, rng)
        assert shown.sum() == 3
        counts += shown
    assert propensity[[3, 1]].tolist() == [1.0, 1.0]
    assert propensity[0] == pytest.approx(0.8)
    assert propensity[[2, 4, 5]] == pytest.approx([0.2 / 3] * 3)
    assert propensity[[6, 7]].tolist() == [0.0, 0.0]  # beyond the window: never shown
    assert counts / 4000 == pytest.approx(propensity, abs=0.02)
    greedy, p = explore_ranking(order, 3, Exploration.parse("greedy"), rng)
    assert set(np.flatnonzero(greedy)) == {3, 1, 0} and p.sum() == 3
    few, p = explore_ranking(order[:3], 3, cfg, rng, n=8)  # nothing left to explore with
    assert few.sum() == 3 and p.sum() == 3
    with pytest.raises(ValueError, match="window"):
        Exploration(window=0)


def _rank_corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1])


def test_similarity_prior_holds_to_similarity_as_far_as_the_outcomes_support_it():
    informative = sets(rule="similarity")
    result, _, _ = fit_and_save_quiet(informative, TrainConfig(seed=0))
    assert result.model.beta > 2.0
    assert _rank_corr(case_contributions(result.model, informative), informative.features[:, 0]) > 0.95
    blind, _, _ = fit_and_save_quiet(informative, TrainConfig(seed=0, similarity_prior=False))
    assert _rank_corr(case_contributions(blind.model, informative), informative.features[:, 0]) < 0.9

    # Where outcomes have nothing to do with similarity, the prior starts (and stays) weak.
    noise = sets(rule="similarity", seed=1)
    noise.target = np.repeat((np.random.default_rng(1).random(noise.n_queries) < 0.5).astype(np.float32), 2)
    weak, _, _ = fit_and_save_quiet(noise, TrainConfig(seed=0))
    assert weak.model.beta < 0.5 * result.model.beta


def fit_and_save_quiet(data, cfg):
    from memory.policy.train import fit

    return fit(data, cfg, progress=False)


def test_set_credit_predicts_whole_retrievals_from_their_cases():
    data = sets(n_queries=200, rule="any")
    cfg = TrainConfig(epochs=60, patience=60, hidden=32, dropout=0.1, weight_decay=1e-4, lr=3e-3, batch_size=32)
    result, _, val = fit_and_save_quiet(data, cfg)
    probs, y = predict_sets(result.model, val)
    assert probs.shape == y.shape == (val.n_queries,)  # one prediction per retrieval, not per case
    assert result.val_metrics["n"] == val.n_queries and result.val_metrics["auc"] > 0.9
    h = case_contributions(result.model, data)
    pos = data.features[:, 4] > 0.5
    assert h[pos].min() > h[~pos].max()  # every positive case outranks every negative one


def _hits(sims, labels, dim=DIM, seed=0):
    rng = np.random.default_rng(seed)
    embs = _unit(rng.normal(size=(len(sims), dim)))
    return [
        ScoredCase(Case(question=f"case {i}", label=lab, reward=1.0 if lab == "positive" else 0.0), s, embs[i])
        for i, (s, lab) in enumerate(zip(sims, labels, strict=True))
    ]


def test_policy_does_not_promote_cases_outside_its_training_support(tmp_path):
    path = tmp_path / "p.pt"
    fit_and_save(synthetic(), path, FAST, progress=False)  # learns: positive cases help
    selector = Selector.from_path(path)
    query = _unit(np.random.default_rng(3).normal(size=DIM))
    hits = _hits([0.9, 0.88, 0.7, 0.6, 0.5], ["negative", "negative", "positive", "positive", "positive"])
    rng = np.random.default_rng(0)
    selector.max_gap = None
    free = {c.index for c in selector.select(query, hits, 3, rng, exploration="greedy") if c.shown}
    assert free == {2, 3, 4}
    # Trained only on cases within 0.05 of the best: further ones keep their similarity order.
    selector.max_gap = 0.05
    held = {c.index for c in selector.select(query, hits, 3, rng, exploration="greedy") if c.shown}
    assert held == {0, 1, 2}
    assert load_checkpoint(path).metadata["support"]["max_similarity_gap"] > 0


def test_promotion_requires_beating_similarity_and_retires_a_policy_that_falls_behind(tmp_path):
    data = sets(n_queries=120, rule="similarity")
    assert similarity_selection_auc(data) > 0.9
    path = tmp_path / "policy.pt"
    # A scorer that ignores similarity (no prior, never trained) selects worse: not installed.
    blind = TrainConfig(similarity_prior=False, lr=0.0, epochs=1, hidden=32)
    first = train_and_promote(data, path, blind)
    assert not first.promoted and "worse than similarity" in first.reason
    assert first.candidate_auc < first.similarity_auc and not path.exists()

    # One that learned from the data is.
    good = train_and_promote(data, path, TrainConfig(seed=0))
    assert good.promoted and good.candidate_auc >= good.similarity_auc
    assert load_selector(path).version == good.version

    # An incumbent that now loses to similarity is retired along with the losing candidate.
    bad = fit_and_save_quiet(data, blind)[0]
    save_checkpoint(bad.model, path, metadata={"null_examples": 0})
    last = train_and_promote(data, path, blind)
    assert not last.promoted and "retired" in last.reason
    assert not path.exists() and (tmp_path / "policy.pt.retired").exists()
    assert load_selector(path) is None  # retrieval falls back to similarity

    few = train_and_promote(sets(n_queries=5), tmp_path / "few.pt", TrainConfig())
    assert not few.promoted and "judged queries" in few.reason
