"""The case-value bandit: subset choice, exact propensities, what it learns, and the OPE gate."""

from __future__ import annotations

import numpy as np
import pytest

from memory.policy.bandit import BanditConfig, CandidateCase, CaseValueModel, LoggedRetrieval
from memory.policy.learner import BanditLearner
from memory.policy.ope import compare


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def _world(seed: int = 0, dim: int = 16):
    """Two kinds of case near every query: 'same' (helps) and 'look-alike' (hurts, and is nearer)."""
    rng = np.random.default_rng(seed)
    family_dir = _unit(rng.standard_normal((4, dim)))
    return rng, family_dir


def _candidates(rng, family_dir, fam: int, n_same: int = 3, n_other: int = 3):
    """A query of family ``fam`` and candidates: same-family ones, and look-alikes of family fam^1."""
    q = _unit(family_dir[fam] + 0.3 * rng.standard_normal(family_dir.shape[1]))
    cands, truth = [], []
    for j in range(n_same):
        e = _unit(family_dir[fam] + 0.6 * rng.standard_normal(family_dir.shape[1]))
        cands.append(CandidateCase(f"s{fam}-{j}-{rng.integers(1e9)}", e, 0.7 + 0.05 * float(rng.random()), "positive"))
        truth.append(0.3)
    for j in range(n_other):
        e = _unit(family_dir[fam ^ 1] + 0.6 * rng.standard_normal(family_dir.shape[1]))
        # Look-alikes are given the higher similarity: similarity prefers them.
        cands.append(CandidateCase(f"o{fam}-{j}-{rng.integers(1e9)}", e, 0.8 + 0.05 * float(rng.random()), "positive"))
        truth.append(-0.2)
    return q, cands, np.array(truth)


def _logs(n: int = 600, seed: int = 0):
    rng, family_dir = _world(seed)
    logs = []
    for _ in range(n):
        fam = int(rng.integers(4))
        q, cands, truth = _candidates(rng, family_dir, fam)
        shown = rng.random(len(cands)) < 0.35
        difficulty = 0.2 + 0.2 * (fam % 2)
        p = np.clip(difficulty + truth[shown].sum(), 0.02, 0.98)
        logs.append(
            LoggedRetrieval(
                f"q{fam}-{rng.integers(1e9)}",
                q,
                cands,
                shown,
                float(rng.random() < p),
                0.35 ** shown.sum() * 0.65 ** (~shown).sum(),
            )
        )
    return logs, rng, family_dir


def test_best_set_is_top_k_of_positive_effects_and_can_be_empty():
    effects = np.array([0.1, -0.2, 0.3, 0.05, 0.2, -0.01])
    assert CaseValueModel.best_set(effects, 2).tolist() == [2, 4]
    assert CaseValueModel.best_set(effects, 10).tolist() == [2, 4, 0, 3]
    assert CaseValueModel.best_set(-np.abs(effects), 4).size == 0


def test_unfitted_prior_shows_nothing_on_its_mean():
    rng, family_dir = _world()
    q, cands, _ = _candidates(rng, family_dir, 0)
    sel = CaseValueModel().select(q, cands, 4, rng, explore=False)
    assert not sel.shown.any()
    assert sel.slate_propensity == 1.0


def test_learns_that_nearer_look_alikes_hurt():
    logs, rng, family_dir = _logs()
    model = CaseValueModel(BanditConfig(dims=8, metric_var=0.05)).fit(logs)
    precision, sim_precision = [], []
    for _ in range(60):
        fam = int(rng.integers(4))
        q, cands, truth = _candidates(rng, family_dir, fam)
        chosen = model.select(q, cands, 3, rng, explore=False).order
        precision.append((truth[chosen] > 0).mean() if chosen.size else 1.0)
        sim_top = np.argsort([-c.similarity for c in cands])[:3]
        sim_precision.append((truth[sim_top] > 0).mean())
    assert np.mean(sim_precision) == 0.0  # similarity always shows the look-alikes
    assert np.mean(precision) > 0.65  # a random choice would be right half the time


def test_a_case_that_keeps_failing_loses_value():
    logs, rng, family_dir = _logs(400)
    # One case with a positive label that misleads: every task that saw it failed.
    bad = CandidateCase("mislabelled", _unit(family_dir[0]), 0.9, "positive")
    for r in logs[:120]:
        r.candidates.append(bad)
        r.shown = np.append(r.shown, True)
        r.reward = 0.0
    model = CaseValueModel(BanditConfig(dims=8)).fit(logs)
    q, _, _ = _candidates(rng, family_dir, 0)
    twin = CandidateCase("fresh-twin", bad.embedding, bad.similarity, "positive")
    mean, _ = model.effects(q, [bad, twin])
    assert mean[0] < mean[1] - 0.05


def test_propensities_are_exact_over_the_ensemble():
    logs, rng, family_dir = _logs(300)
    model = CaseValueModel(BanditConfig(dims=8, temperature=1.0, draws=16)).fit(logs)
    q, cands, _ = _candidates(rng, family_dir, 1)
    first = model.select(q, cands, 2, np.random.default_rng(0))
    # Replaying every ensemble member gives the same marginal and slate probabilities.
    _, draws = model.effects(q, cands)
    sets = [tuple(sorted(model.best_set(d, 2).tolist())) for d in draws]
    counts = np.zeros(len(cands))
    for s in sets:
        counts[list(s)] += 1
    np.testing.assert_allclose(first.propensity, counts / len(sets))
    chosen = tuple(sorted(np.flatnonzero(first.shown).tolist()))
    assert first.slate_propensity == pytest.approx(sets.count(chosen) / len(sets))
    assert model.slate_probability(q, cands, first.shown, 2) == pytest.approx(first.slate_propensity)
    # And the frequencies of many selections converge to them.
    freq = np.mean([model.select(q, cands, 2, np.random.default_rng(s)).shown for s in range(800)], axis=0)
    np.testing.assert_allclose(freq, first.propensity, atol=0.07)


def test_state_round_trip_keeps_predictions():
    logs, rng, family_dir = _logs(200)
    model = CaseValueModel(BanditConfig(dims=8)).fit(logs)
    again = CaseValueModel.from_state(model.state())
    q, cands, _ = _candidates(rng, family_dir, 2)
    np.testing.assert_allclose(model.effects(q, cands)[0], again.effects(q, cands)[0], rtol=1e-5)


def test_ope_prefers_the_policy_that_shows_the_helpful_cases():
    logs, _, _ = _logs(800, seed=3)

    def good(r: LoggedRetrieval) -> float:
        # Shows exactly the helpful ones (ids starting with "s").
        want = np.array([c.case_id.startswith("s") for c in r.candidates])
        return float((r.shown == want).all())

    def bad(r: LoggedRetrieval) -> float:
        want = np.array([c.case_id.startswith("o") for c in r.candidates])
        return float((r.shown == want).all())

    est = compare(logs, good, bad, confidence=0.9, min_ess=3)
    assert est.promote and est.candidate > est.incumbent and est.low > 0
    assert not compare(logs, bad, good, min_ess=3).promote
    same = compare(logs, good, good, min_ess=3)
    assert not same.promote and same.difference == 0.0
    none = compare(logs, lambda r: 0.0, good)
    assert not none.promote and "overlap" in none.reason


def test_learner_refits_on_schedule_and_records_decisions():
    logs, _, _ = _logs(60)
    learner = BanditLearner(BanditConfig(dims=4), k=3, retrain_every=20, gate=False)
    decisions = [d for r in logs if (d := learner.observe(r)) is not None]
    assert len(decisions) == 3 and all(d.promoted for d in decisions)
    assert learner.version == 3 and learner.model.n_rows == 60
    gated = BanditLearner(BanditConfig(dims=4), k=3, retrain_every=30, gate=True)
    for r in logs:
        gated.observe(r)
    assert len(gated.decisions) == 2 and all(d.estimate is not None for d in gated.decisions)


def test_refit_is_cheap():
    logs, _, _ = _logs(1000)
    import time

    started = time.process_time()
    CaseValueModel().fit(logs)
    # CPU seconds, not wall time: a budget (2 s per 1,000 retrievals), loose enough for slow CI.
    assert time.process_time() - started < 10


def test_gate_promotes_a_bandit_over_similarity_only_when_the_log_says_it_is_better():
    from memory.policy.bandit import SimilarityPolicy
    from memory.policy.learner import gate_decision

    logs, _, _ = _logs(2500, seed=5)
    good = CaseValueModel(BanditConfig(dims=8, metric_var=0.05, temperature=0.01)).fit(logs)
    # Similarity shows the nearer look-alikes here: the fitted bandit beats it on the log.
    verdict = gate_decision(logs, good, SimilarityPolicy(), 3, confidence=0.95, min_ess=10)
    assert verdict.promote and not verdict.retire, verdict.reason
    assert verdict.estimate.candidate > verdict.estimate.incumbent
    # A candidate no better than the incumbent (itself) is not promoted.
    again = gate_decision(logs, good, good, 3, confidence=0.95, min_ess=10)
    assert not again.promote and not again.retire


def test_canary_share_shrinks_once_the_candidate_is_shown_worse():
    from memory.policy.learner import canary_share
    from memory.policy.ope import OpeEstimate

    def est(diff: float, high: float) -> OpeEstimate:
        return OpeEstimate(0.5, 0.5, diff, float("nan"), high, 0.95, 100, 50.0, 50.0, False, "")

    assert canary_share(0.2, None) == 0.2
    assert canary_share(0.2, est(0.01, 0.05)) == 0.2
    assert canary_share(0.2, est(-0.1, -0.02)) == pytest.approx(0.05)
    assert canary_share(0.2, est(-0.1, float("nan"))) == pytest.approx(0.05)
