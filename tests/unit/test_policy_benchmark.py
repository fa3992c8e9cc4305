"""The policy benchmark's bandit scorer and its multi-split summary, on small synthetic pair data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evals.benchmarks.policy import BANDIT_CONFIGS, PairRows, bandit_logs, bandit_scores, fit_bandit, summarise
from memory.policy.bandit import BanditConfig
from memory.policy.data import PolicyData
from memory.policy.features import feature_row
from memory.policy.metrics import roc_auc

DIM = 24


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def pair_rows(n_queries: int = 90, per_query: int = 8, seed: int = 0) -> PairRows:
    """The original format in miniature: the outcome is per query and set by where its embedding points."""
    rng = np.random.default_rng(seed)
    # Query difficulty lies along the embedding's main direction of variation (which the bandit's
    # PCA keeps), as a learnable trend.
    q_emb = _unit(rng.normal(size=(n_queries, DIM)) * np.r_[4.0, np.ones(DIM - 1)])
    success = q_emb[:, 0] > 0.05
    rows = n_queries * per_query
    q_index = np.repeat(np.arange(n_queries), per_query)
    c_emb = _unit(rng.normal(size=(rows, DIM)))
    labels = np.tile(["positive"] * (per_query // 2) + ["negative"] * (per_query - per_query // 2), n_queries)
    sims = np.einsum("ij,ij->i", q_emb[q_index], c_emb)
    feats = np.stack(
        [
            feature_row(similarity=float(s), best_similarity=1.0, reward=float(lab == "positive"), label=str(lab))
            for s, lab in zip(sims, labels, strict=True)
        ]
    ).astype(np.float32)
    data = PolicyData(
        queries=[f"question number {i}" for i in range(n_queries)],
        query_emb=q_emb,
        q_index=q_index,
        case_emb=c_emb,
        features=feats,
        is_null=np.zeros(rows, bool),
        target=success[q_index].astype(np.float32),
        weight=np.ones(rows, np.float32),
        case_ids=[f"case-{i % 150}" for i in range(rows)],
    )
    return PairRows(data, [f"case question {i % 150}" for i in range(rows)], [str(lab) for lab in labels])


def test_each_row_is_a_retrieval_that_showed_its_one_case():
    rows = pair_rows(n_queries=3)
    logs = bandit_logs(rows, np.array([0, 9]))
    assert [len(r.candidates) for r in logs] == [1, 1]
    assert all(r.shown.tolist() == [True] for r in logs)
    assert logs[1].query_key == "question number 1"
    assert logs[1].candidates[0].question == rows.case_text[9]
    assert logs[1].reward == float(rows.data.target[9])


def test_bandit_is_chosen_on_validation_and_learns_difficulty_of_unseen_queries():
    rows = pair_rows()
    per_query = 8
    queries = np.arange(90)
    train_q, val_q, test_q = queries[:54], queries[54:72], queries[72:]
    idx = lambda qs: np.flatnonzero(np.isin(rows.data.q_index, qs))  # noqa: E731
    configs = {"no trend": BanditConfig(), "trend": BanditConfig(dims=8, trend_var=0.05, max_queries=0)}
    model, info = fit_bandit(rows, idx(train_q), idx(val_q), seed=0, configs=configs)
    # The choice is the setting with the best validation AUC, and the model returned is that setting's.
    assert info["chosen"] == max(info["val_auc"], key=info["val_auc"].get)
    assert model.config.dims == configs[info["chosen"]].dims
    assert info["chosen"] == "trend"
    scores = bandit_scores(model, rows, idx(test_q))
    assert scores.shape == (test_q.size * per_query,)
    # Test queries were never seen: only the trend over their embedding can rank them.
    assert roc_auc(rows.data.target[idx(test_q)], scores) > 0.8


def test_default_bandit_settings_are_few():
    # Choosing among many settings on 140 validation queries would overfit validation.
    assert 1 <= len(BANDIT_CONFIGS) <= 3


def _split(seed: int, aucs: dict[str, float]) -> dict:
    return {"seed": seed, "metrics": {m: {"auc": a} for m, a in aucs.items()}}


def test_summary_gives_mean_per_method_and_paired_differences_to_the_original():
    splits = [
        _split(0, {"similarity": 0.5, "policy": 0.70, "bandit": 0.60, "original (MiniLM)": 0.65}),
        _split(1, {"similarity": 0.5, "policy": 0.60, "bandit": 0.68, "original (MiniLM)": 0.62}),
        _split(2, {"similarity": 0.5, "policy": 0.66, "bandit": 0.64, "original (MiniLM)": 0.60}),
    ]
    summary, paired = summarise(splits)
    assert summary["policy"]["auc"] == [0.70, 0.60, 0.66]
    assert summary["policy"]["mean"] == pytest.approx(0.6533, abs=1e-4)
    assert paired["policy"]["per_seed"] == pytest.approx([0.05, -0.02, 0.06])
    assert paired["policy"]["mean"] == pytest.approx(0.03)
    assert paired["policy"]["wins"] == 2
    assert paired["bandit"]["wins"] == 2
    assert "original (MiniLM)" not in paired


def test_summary_without_the_original_has_no_paired_differences():
    summary, paired = summarise([_split(0, {"similarity": 0.5, "bandit": 0.6})])
    assert set(summary) == {"similarity", "bandit"}
    assert paired == {}
    assert math.isclose(summary["bandit"]["sd"], 0.0)
