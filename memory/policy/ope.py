"""Off-policy evaluation of case-selection policies from the experience log.

Every logged retrieval carries the exact probability with which the logging policy showed the set
it showed (``slate_propensity``). A policy that would show that same set with probability ``π``
gets the importance weight ``w = π / μ``; the self-normalised estimate of its success rate is
``Σ w·y / Σ w`` (SNIPS over whole slates: unbiased up to normalisation, no model of the reward).

`compare` estimates a candidate and the incumbent on the same logged retrievals and bootstraps the
difference over retrievals (paired: each resample uses the same retrievals for both), so a
promotion is made only when the candidate is better at the stated confidence.

Whole-slate weights are zero whenever the candidate would not show exactly the logged set, which
with 32 candidates is most of the time. `compare_additive` is the slate estimator for outcomes that
are additive in the shown cases (the model the bandit itself assumes): the pseudo-inverse estimator
of Swaminathan et al. (2017). With ``s~ = [1, shown]`` and ``Γ = E_μ[s~ s~ᵀ]`` computed exactly
from the logging policy's distribution over sets, ``Γ⁺ s~ y`` is an unbiased estimate of the
per-case effects (and the baseline), so a policy with marginals ``q`` is worth ``[1, q]ᵀ Γ⁺ s~ y``.
It needs only the candidates' marginal probabilities, so policies that rarely pick the logged set
exactly still get a precise estimate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from memory.policy.bandit import LoggedRetrieval

# A policy's probability of showing exactly the logged set, given one logged retrieval.
SlateProbability = Callable[[LoggedRetrieval], float]


@dataclass(frozen=True)
class OpeEstimate:
    """A candidate against the incumbent on the same logged retrievals.

    Attributes:
        candidate: SNIPS estimate of the candidate's success rate (nan without overlap).
        incumbent: The same for the incumbent.
        difference: ``candidate - incumbent``.
        low: Lower bound of the difference at ``confidence`` (one-sided, paired bootstrap).
        high: Upper bound of the two-sided interval at the same level.
        confidence: The confidence level of ``low``.
        rows: Logged retrievals used (with a known propensity).
        ess_candidate: Effective sample size of the candidate's weights.
        ess_incumbent: The same for the incumbent.
        promote: Whether the candidate is better at the stated confidence (and has enough overlap).
        reason: One line saying why.

    """

    candidate: float
    incumbent: float
    difference: float
    low: float
    high: float
    confidence: float
    rows: int
    ess_candidate: float
    ess_incumbent: float
    promote: bool
    reason: str


# A policy's exact probability of showing each logged candidate.
Marginals = Callable[[LoggedRetrieval], np.ndarray]


def compare_additive(
    logs: Sequence[LoggedRetrieval],
    candidate: Marginals,
    incumbent: Marginals,
    *,
    confidence: float = 0.9,
    min_rows: int = 100,
    min_coverage: float = 0.5,
    boots: int = 300,
    seed: int = 0,
) -> OpeEstimate:
    """Pseudo-inverse slate estimates of two policies on the same log, and whether to promote.

    Args:
        logs: Judged retrievals; those without the logging policy's set distribution are skipped.
        candidate: The candidate's marginal probability of showing each logged candidate.
        incumbent: The incumbent's.
        confidence: One-sided confidence that the difference is positive, for promotion.
        min_rows: Fewest usable retrievals for a decision.
        min_coverage: Least share of the candidate's shown mass on cases the log ever showed
            (effects of never-shown cases are not identified; the estimate treats them as zero).
        boots: Bootstrap resamples.
        seed: Bootstrap seed.

    """
    rows = [r for r in logs if r.slates]
    nan = float("nan")
    if len(rows) < min_rows:
        return OpeEstimate(nan, nan, nan, nan, nan, confidence, len(rows), 0.0, 0.0, False,
                           f"only {len(rows)} logged retrievals with their set distribution (< {min_rows})")  # fmt: skip
    y = np.array([r.reward for r in rows], dtype=np.float64)
    base = float(y.mean())
    vc, vi, diff = np.zeros(len(rows)), np.zeros(len(rows)), np.zeros(len(rows))
    covered = total = 0.0
    for t, r in enumerate(rows):
        if r.ope_terms is None:
            r.ope_terms = _pseudo_inverse_terms(r)
        g, logged = r.ope_terms
        qc = np.concatenate([[1.0], candidate(r)])
        qi = np.concatenate([[1.0], incumbent(r)])
        vc[t], vi[t] = qc @ g * y[t], qi @ g * y[t]
        # The baseline cancels in the difference (both have intercept 1): subtracting the mean
        # outcome leaves it unbiased and removes most of its variance.
        diff[t] = (qc - qi) @ g * (y[t] - base)
        covered += float(qc[1:][logged].sum())
        total += float(qc[1:].sum())
    coverage = covered / total if total > 0 else 1.0
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(rows), size=(boots, len(rows)))].mean(1)
    low, high = float(np.quantile(means, 1.0 - confidence)), float(np.quantile(means, confidence))
    est_c, est_i, d = float(vc.mean()), float(vi.mean()), float(diff.mean())
    better = low > 0.0 and coverage >= min_coverage
    why = (f"candidate {est_c:.3f} vs incumbent {est_i:.3f} (difference {d:+.3f}, lower bound {low:+.3f} "
           f"at {confidence:.0%}, {len(rows)} retrievals, coverage {coverage:.0%})")  # fmt: skip
    if better:
        reason = "better: " + why
    elif coverage < min_coverage:
        reason = "not promoted, it would mostly show cases the log never tried: " + why
    else:
        reason = "not better at the stated confidence: " + why
    return OpeEstimate(est_c, est_i, d, low, high, confidence, len(rows), float(len(rows)), float(len(rows)), better, reason)


def _pseudo_inverse_terms(r: LoggedRetrieval) -> tuple[np.ndarray, np.ndarray]:
    """``Γ⁺ s~`` of one logged retrieval, and which candidates its logging policy could show."""
    n = len(r.candidates)
    slates = r.slates or []
    s_all = np.zeros((len(slates), n + 1))
    s_all[:, 0] = 1.0
    probs = np.array([p for _, p in slates])
    for j, (st, _) in enumerate(slates):
        s_all[j, [i + 1 for i in st]] = 1.0
    gamma = (s_all * probs[:, None]).T @ s_all
    s_t = np.concatenate([[1.0], np.asarray(r.shown, dtype=np.float64)])
    # A relative cut-off drops directions the logging policy almost never explored: their inverse
    # would multiply an outcome by thousands (a few such rows decide a whole comparison).
    g = np.linalg.pinv(gamma, rcond=1e-3, hermitian=True) @ s_t
    return g, s_all[:, 1:].T @ probs > 0


def _snips(w: np.ndarray, y: np.ndarray) -> float:
    total = w.sum()
    return float((w * y).sum() / total) if total > 0 else float("nan")


def _ess(w: np.ndarray) -> float:
    sq = float((w * w).sum())
    return float(w.sum() ** 2 / sq) if sq > 0 else 0.0


def compare(
    logs: Sequence[LoggedRetrieval],
    candidate: SlateProbability,
    incumbent: SlateProbability,
    *,
    confidence: float = 0.9,
    min_ess: float = 10.0,
    boots: int = 300,
    seed: int = 0,
) -> OpeEstimate:
    """SNIPS estimates of two policies on the same log, and whether the candidate is better.

    Args:
        logs: Judged retrievals; those without a logged slate propensity are skipped.
        candidate: The candidate's probability of each logged set.
        incumbent: The incumbent's.
        confidence: One-sided confidence that the difference is positive, for promotion.
        min_ess: Both policies need at least this effective sample size (else: not enough overlap).
        boots: Bootstrap resamples.
        seed: Bootstrap seed.

    """
    rows = [r for r in logs if r.slate_propensity and r.slate_propensity > 0]
    nan = float("nan")
    if not rows:
        return OpeEstimate(nan, nan, nan, nan, nan, confidence, 0, 0.0, 0.0, False, "no logged retrieval with a propensity")
    mu = np.array([r.slate_propensity for r in rows], dtype=np.float64)
    y = np.array([r.reward for r in rows], dtype=np.float64)
    wc = np.array([candidate(r) for r in rows]) / mu
    wi = np.array([incumbent(r) for r in rows]) / mu
    vc, vi = _snips(wc, y), _snips(wi, y)
    ess_c, ess_i = _ess(wc), _ess(wi)
    if ess_c < min_ess or ess_i < min_ess:
        return OpeEstimate(vc, vi, vc - vi, nan, nan, confidence, len(rows), ess_c, ess_i, False,
                           f"too little overlap with the log (effective sizes {ess_c:.0f} and {ess_i:.0f} < {min_ess:.0f})")  # fmt: skip
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(rows), size=(boots, len(rows)))
    diffs = np.array([_snips(wc[i], y[i]) - _snips(wi[i], y[i]) for i in idx])
    diffs = diffs[np.isfinite(diffs)]
    low = float(np.quantile(diffs, 1.0 - confidence)) if diffs.size else nan
    high = float(np.quantile(diffs, confidence)) if diffs.size else nan
    better = bool(np.isfinite(low) and low > 0.0)
    reason = (
        f"candidate {vc:.3f} vs incumbent {vi:.3f}: better at {confidence:.0%} confidence (lower bound {low:+.3f})"
        if better
        else f"candidate {vc:.3f} vs incumbent {vi:.3f}: not better at {confidence:.0%} confidence (lower bound {low:+.3f})"
    )
    return OpeEstimate(vc, vi, vc - vi, low, high, confidence, len(rows), ess_c, ess_i, better, reason)
