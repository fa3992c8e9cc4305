"""The case-value bandit: subset choice, exact propensities, what it learns, and the A/B rollout gate."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from memory.policy.bandit import BanditConfig, CandidateCase, CaseValueModel, LoggedRetrieval
from memory.policy.learner import START_SHARE, BanditLearner
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
    # Without the gate every refit serves every selection.
    assert len(decisions) == 3 and all(d.share == 1.0 for d in decisions) and learner.share == 1.0
    assert learner.version == 3 and learner.model.n_rows == 60
    gated = BanditLearner(BanditConfig(dims=4), k=3, retrain_every=30, gate=True)
    for r in logs:
        gated.observe(r)
    # These logs name no arm: the gate has nothing to compare and leaves the starting share.
    assert len(gated.decisions) == 2 and all(d.estimate is not None for d in gated.decisions)
    assert gated.share == START_SHARE and "arm" in gated.decisions[-1].reason


def test_refit_is_cheap():
    logs, _, _ = _logs(1000)
    # Questions with words, as served: the word weights and the words' tf-idf gap are part of the cost.
    for i, r in enumerate(logs):
        r.query_key = f"context{i % 4} asks clause{i % 12} of item{i}"
        r.candidates = [replace(c, question=f"context{j % 4} asks clause{(i + j) % 12} of item{i}-{j}")
                        for j, c in enumerate(r.candidates)]  # fmt: skip
    import time

    started = time.process_time()
    CaseValueModel().fit(logs)
    # CPU seconds, not wall time: a budget (2 s per 1,000 retrievals), loose enough for slow CI.
    assert time.process_time() - started < 10


def _arm_logs(n: int, bandit_rate: float, similarity_rate: float, share: float, seed: int = 0):
    """Logs of an A/B rollout: each retrieval's arm drawn with ``share``, its outcome by the arm's rate."""
    rng = np.random.default_rng(seed)
    logs = []
    for _ in range(n):
        bandit = rng.random() < share
        rate = bandit_rate if bandit else similarity_rate
        arm, p = ("bandit", share) if bandit else ("similarity", 1.0 - share)
        logs.append(LoggedRetrieval("q", np.zeros(4, np.float32), [], np.zeros(0, bool), float(rng.random() < rate),
                                    1.0, arm, p))  # fmt: skip
    return logs


def test_arm_gate_promotes_demotes_or_holds_at_the_stated_confidence():
    from memory.policy.learner import DEMOTED_SHARE, PROMOTED_SHARE, arm_gate

    better = arm_gate(_arm_logs(200, 0.8, 0.4, 0.5), 0.5, confidence=0.95)
    assert better.promoted and better.share == PROMOTED_SHARE and better.estimate.low > 0, better.reason
    worse = arm_gate(_arm_logs(200, 0.3, 0.7, 0.5, seed=1), 0.5, confidence=0.95)
    assert worse.demoted and worse.share == DEMOTED_SHARE and "similarity serves" in worse.reason
    # Level arms: not enough evidence either way, the share stays where it is.
    level = arm_gate(_arm_logs(200, 0.5, 0.5, 0.5, seed=2), 0.5, confidence=0.95)
    assert not level.promoted and not level.demoted and level.share == 0.5
    # Only each arm's recent window counts: a bandit that was worse early and better now is promoted.
    history = _arm_logs(300, 0.2, 0.6, 0.5, seed=3) + _arm_logs(200, 0.85, 0.5, 0.5, seed=4)
    assert arm_gate(history, 0.5, window=90).promoted
    assert not arm_gate(history, 0.5, window=0).promoted
    # Once promoted, similarity serves 5%: its window reaches back far enough to still be judged.
    promoted = _arm_logs(2000, 0.3, 0.7, PROMOTED_SHARE, seed=7)
    assert arm_gate(promoted, PROMOTED_SHARE, window=150).demoted


def test_arm_estimates_weight_by_the_inverse_of_the_logged_arm_probability():
    from memory.policy.ope import compare_arms

    # The bandit served 10% of the time at first and 90% later; both arms succeed at their own
    # rate whatever the share, and the estimate recovers each rate.
    logs = _arm_logs(3000, 0.7, 0.4, 0.1, seed=5) + _arm_logs(3000, 0.7, 0.4, 0.9, seed=6)
    est = compare_arms(logs)
    assert est.candidate == pytest.approx(0.7, abs=0.03) and est.incumbent == pytest.approx(0.4, abs=0.03)
    assert est.rows == 6000 and est.promote
    assert compare_arms([r for r in logs if r.arm == "bandit"], min_ess=5).reason.startswith("too little")
    assert compare_arms([]).reason == "no logged retrieval names its arm"


def test_mixture_logs_the_arm_and_its_exact_probability():
    from memory.policy.bandit import SimilarityPolicy, select_mixture

    rng, family_dir = _world(3)
    q, cands, _ = _candidates(rng, family_dir, 0)
    model = CaseValueModel(BanditConfig(show_prior=0.2))
    arms = [select_mixture(SimilarityPolicy(), model, 0.3, q, cands, 2, np.random.default_rng(s)) for s in range(600)]
    share = np.mean([a.arm == "bandit" for a in arms])
    assert 0.24 < share < 0.36
    assert {(a.arm, round(a.arm_propensity, 6)) for a in arms} == {("bandit", 0.3), ("similarity", 0.7)}
    # The whole-set distribution mixes both arms: it sums to one and contains similarity's top 2.
    top2 = tuple(sorted(np.argsort([-c.similarity for c in cands])[:2].tolist()))
    dist = dict(arms[0].slates)
    assert sum(dist.values()) == pytest.approx(1.0) and dist[top2] >= 0.7
    assert select_mixture(SimilarityPolicy(), model, 1.0, q, cands, 2, rng).arm == "bandit"
    assert select_mixture(SimilarityPolicy(), model, 0.0, q, cands, 2, rng).arm == "similarity"


def test_words_that_differ_teach_the_bandit_to_skip_look_alikes():
    """A look-alike shares the query's context but not the words that decide what is asked."""
    clauses = ["which shelf currently holds", "which shelf previously held"]
    contexts = ["In the quarterly warehouse report,", "According to the northern depot ledger,"]
    rng = np.random.default_rng(0)

    def question(f: int, c: int) -> str:
        return f"{contexts[c]} {clauses[f]} item K-{rng.integers(100, 999)}?"

    logs = []
    for _ in range(400):
        f, c = int(rng.integers(2)), int(rng.integers(2))
        q = question(f, c)
        # Same family, other context (helps); other family, same context (hurts). No embedding
        # signal at all (every vector is the same), and similarity ranks the look-alikes first.
        cands = [CandidateCase(f"c{i}", np.ones(8, np.float32), 0.9 - 0.1 * i, "positive", question=question(ff, cc))
                 for i, (ff, cc) in enumerate([(1 - f, c), (1 - f, c), (f, 1 - c), (f, 1 - c)])]  # fmt: skip
        shown = rng.random(4) < 0.5
        p = np.clip(0.3 + 0.3 * shown[2:].sum() - 0.2 * shown[:2].sum(), 0.02, 0.95)
        logs.append(LoggedRetrieval(q.lower(), np.ones(8, np.float32), cands, shown, float(rng.random() < p), 0.0625))
    model = CaseValueModel(BanditConfig(temperature=0.01)).fit(logs)
    assert {"currently", "previously", "holds", "held"} <= set(model.vocab)
    q = question(0, 0)
    test = [CandidateCase("x0", np.ones(8, np.float32), 0.95, "positive", question=question(1, 0)),
            CandidateCase("x1", np.ones(8, np.float32), 0.7, "positive", question=question(0, 1))]  # fmt: skip
    effects, _ = model.effects(np.ones(8, np.float32), test, q)
    assert effects[0] < 0 < effects[1], effects
    chosen = model.select(np.ones(8, np.float32), test, 2, np.random.default_rng(0), explore=False, query=q)
    assert chosen.order.tolist() == [1]
    # Persisted with its vocabulary: a reloaded model scores the same.
    again = CaseValueModel.from_state(model.state())
    np.testing.assert_allclose(again.effects(np.ones(8, np.float32), test, q)[0], effects, rtol=1e-5)


def test_static_features_left_out_of_the_design_carry_no_weight():
    """``static_features`` keeps only the named static columns; the rest are zero, whatever is fitted."""
    from memory.policy.bandit import STATIC_FEATURES

    logs, rng, family_dir = _logs(200)
    kept = ("show", "positive", "negative", "similarity_gap")
    slim = CaseValueModel(BanditConfig(static_features=kept)).fit(logs)
    full = CaseValueModel(BanditConfig(static_features=())).fit(logs)
    q, cands, _ = _candidates(rng, family_dir, 0)
    rows = slim.case_features(q, cands)[:, : len(STATIC_FEATURES)]
    dropped = [i for i, name in enumerate(STATIC_FEATURES) if name not in kept]
    assert not rows[:, dropped].any()
    assert rows[:, STATIC_FEATURES.index("similarity")].sum() == 0.0
    assert full.case_features(q, cands)[:, STATIC_FEATURES.index("similarity")].min() > 0.5
    # Predicted effects differ only through the kept columns (and the words and case values).
    assert not np.allclose(slim.effects(q, cands)[0], full.effects(q, cands)[0])
    with pytest.raises(ValueError, match="unknown static features"):
        BanditConfig(static_features=("shw",))
    # A config read back from a checkpoint's JSON (a list) is the same config.
    assert BanditConfig(static_features=list(kept)) == BanditConfig(static_features=kept)  # type: ignore[arg-type]


def test_lexical_prior_counts_differing_words_against_a_case_before_any_outcome():
    """With a negative word prior, an unfitted-words model ranks the case that shares the query's words first."""
    logs, rng, family_dir = _logs(60)
    # Teach the vocabulary: the logged questions are word lists; no outcome depends on the words.
    for i, r in enumerate(logs):
        r.query_key = ("alpha beta", "alpha gamma")[i % 2] + f" item{i % 4}"
    q, cands, _ = _candidates(rng, family_dir, 0, n_same=1, n_other=1)
    cands = [
        CandidateCase("a", cands[0].embedding, 0.8, "positive", question="alpha beta"),
        CandidateCase("b", cands[1].embedding, 0.8, "positive", question="alpha gamma"),
    ]
    neutral = CaseValueModel(BanditConfig(lexical_var=1e-6, lexical_prior=0.0)).fit(logs)
    wary = CaseValueModel(BanditConfig(lexical_var=1e-6, lexical_prior=-0.05)).fit(logs)
    assert {"beta", "gamma"} <= set(wary.vocab)
    n_eff, w_eff = neutral.effects(q, cands, "alpha beta")[0], wary.effects(q, cands, "alpha beta")[0]
    # Case b differs from the query in two words (beta, gamma), case a in none: the prior puts b
    # 2 × 0.05 further behind a than the neutral prior does (the shared weights absorb the rest).
    assert (w_eff[0] - w_eff[1]) - (n_eff[0] - n_eff[1]) == pytest.approx(0.1, abs=1e-3)


def _clause_logs(n_rows: int = 48) -> list[LoggedRetrieval]:
    """Logged questions built like the simulator's: 2 contexts × 8 clauses, so clause words are the rarer."""
    logs, _, _ = _logs(n_rows)
    for i, r in enumerate(logs):
        r.query_key = f"context{i % 2} says clause{i % 8} asks item{i}"
    return logs


def _clause_candidates():
    """A clause-worded query and two candidates: same clause in another context, and a same-context look-alike."""
    rng, family_dir = _world(1)
    q, base, _ = _candidates(rng, family_dir, 0, n_same=1, n_other=1)
    query = "context0 says clause3 asks item900"
    cands = [
        CandidateCase("same", base[0].embedding, 0.7, "positive", question="context1 says clause3 asks item901"),
        CandidateCase("look", base[1].embedding, 0.8, "positive", question="context0 says clause4 asks item902"),
    ]
    return q, cands, query


def test_text_gap_scores_a_case_by_the_rare_words_it_shares_with_the_query():
    """The tf-idf gap puts the same-clause case (other context) ahead of the same-context look-alike."""
    from memory.policy.bandit import STATIC_FEATURES

    logs = _clause_logs()
    q, cands, query = _clause_candidates()
    model = CaseValueModel(BanditConfig(lexical_var=1e-6)).fit(logs)
    gap = model.case_features(q, cands, query)[:, STATIC_FEATURES.index("text_gap")]
    assert gap[0] == 0.0 < gap[1]
    # The idf power leans on the rarer (clause) words: classic tf-idf (power 1) sets them apart less.
    classic = CaseValueModel(BanditConfig(lexical_var=1e-6, idf_power=1.0)).fit(logs)
    assert 0.0 < classic.case_features(q, cands, query)[1, STATIC_FEATURES.index("text_gap")] < gap[1]
    # The prior's weight on the gap is what separates them before any outcome says so.
    flat = CaseValueModel(BanditConfig(lexical_var=1e-6, text_gap_prior=0.0, text_var=1e-6)).fit(logs)
    eff, flat_eff = model.effects(q, cands, query)[0], flat.effects(q, cands, query)[0]
    assert (eff[0] - eff[1]) - (flat_eff[0] - flat_eff[1]) == pytest.approx(gap[1], abs=0.02)
    # Unfitted, there is no idf table: the feature is zero.
    assert not CaseValueModel().case_features(q, cands, query)[:, STATIC_FEATURES.index("text_gap")].any()
    # Persisted with its idf table: a reloaded model scores the same.
    again = CaseValueModel.from_state(model.state())
    np.testing.assert_allclose(again.effects(q, cands, query)[0], eff, rtol=1e-5)


def test_a_checkpoint_from_before_idf_power_keeps_classic_tf_idf():
    """A state whose config has no ``idf_power`` was fit on power 1 and reloads with it, predictions unchanged."""
    logs = _clause_logs()
    q, cands, query = _clause_candidates()
    classic = CaseValueModel(BanditConfig(idf_power=1.0)).fit(logs)
    state = classic.state()
    del state["config"]["idf_power"]
    old = CaseValueModel.from_state(state)
    assert old.config.idf_power == 1.0
    np.testing.assert_allclose(old.effects(q, cands, query)[0], classic.effects(q, cands, query)[0], rtol=1e-6)
    # Read with today's default power instead, the same weights would score the look-alike differently.
    state["config"]["idf_power"] = 2.0
    assert not np.allclose(
        CaseValueModel.from_state(state).effects(q, cands, query)[0], old.effects(q, cands, query)[0]
    )


def test_a_checkpoint_from_before_the_text_gap_loads_and_predicts_as_before():
    """An old state (no ``text_gap`` column, no idf table, all static features by default) keeps its predictions."""
    from memory.policy.bandit import STATIC_FEATURES

    logs = _clause_logs()
    old_names = STATIC_FEATURES[: STATIC_FEATURES.index("text_gap")]
    model = CaseValueModel(BanditConfig(static_features=old_names)).fit(logs)
    state = model.state()
    column = model._layout()["static"].start + STATIC_FEATURES.index("text_gap")
    state["theta_mean"] = torch.from_numpy(np.delete(model.theta_mean, column))
    state["theta_draws"] = torch.from_numpy(np.delete(model.theta_draws, column, axis=1))
    state["config"] = {
        k: v for k, v in state["config"].items() if k not in ("static_features", "text_gap_prior", "text_var")
    }
    for key in ("static_names", "idf_words", "idf_values"):
        del state[key]
    old = CaseValueModel.from_state(state)
    assert old.config.static_features == old_names
    rng, family_dir = _world(2)
    q, cands, _ = _candidates(rng, family_dir, 1)
    np.testing.assert_allclose(
        old.effects(q, cands, "context0 says clause1")[0],
        model.effects(q, cands, "context0 says clause1")[0],
        rtol=1e-5,
        atol=1e-6,
    )
