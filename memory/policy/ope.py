"""Off-policy evaluation of case-selection policies from the experience log.

Every logged retrieval carries the exact probability with which the logging policy showed the set
it showed (``slate_propensity``). A policy that would show that same set with probability ``π``
gets the importance weight ``w = π / μ``; the self-normalised estimate of its success rate is
``Σ w·y / Σ w`` (SNIPS over whole slates: unbiased up to normalisation, no model of the reward).

`compare` estimates a candidate and the incumbent on the same logged retrievals and bootstraps the
difference over retrievals (paired: each resample uses the same retrievals for both), so a
promotion is made only when the candidate is better at the stated confidence.
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
        return OpeEstimate(
            nan, nan, nan, nan, nan, confidence, 0, 0.0, 0.0, False, "no logged retrieval with a propensity"
        )
    mu = np.array([r.slate_propensity for r in rows], dtype=np.float64)
    y = np.array([r.reward for r in rows], dtype=np.float64)
    wc = np.array([candidate(r) for r in rows]) / mu
    wi = np.array([incumbent(r) for r in rows]) / mu
    return _compare(wc, wi, y, confidence=confidence, min_ess=min_ess, boots=boots, seed=seed)


def compare_arms(
    logs: Sequence[LoggedRetrieval],
    candidate: str = "bandit",
    incumbent: str = "similarity",
    *,
    window: int = 0,
    confidence: float = 0.95,
    min_ess: float = 15.0,
    boots: int = 300,
    seed: int = 0,
) -> OpeEstimate:
    """Two serving arms on the same log: the success rate if each arm served every task.

    Each logged retrieval says which arm (policy) chose it and with what probability that arm was
    drawn. The weight of a retrieval for arm ``a`` is ``1[arm = a] / P(arm = a)``, so the
    self-normalised estimate is each arm's success rate corrected for a share that changed over
    time: a randomised A/B comparison, exact whatever the arms do inside. Unlike a comparison of
    whole shown sets it needs no overlap between what the two arms show, and it judges a learning
    policy as it learns.

    Args:
        logs: Judged retrievals, oldest first; those without a logged arm are skipped.
        candidate: The arm being judged.
        incumbent: The arm it is judged against.
        window: Use only each arm's most recent this many retrievals (0: all): a policy that
            learns is judged on what it does now, and an arm with a small share still has its
            own recent outcomes to be judged on.
        confidence: One-sided confidence that the difference is positive, for promotion.
        min_ess: Both arms need at least this effective sample size.
        boots: Bootstrap resamples.
        seed: Bootstrap seed.

    """
    rows = [r for r in logs if r.arm and r.arm_propensity and r.arm_propensity > 0]
    if window > 0:
        keep: set[int] = set()
        for arm in (candidate, incumbent):
            keep.update([i for i, r in enumerate(rows) if r.arm == arm][-window:])
        rows = [r for i, r in enumerate(rows) if i in keep]
    if not rows:
        nan = float("nan")
        return OpeEstimate(nan, nan, nan, nan, nan, confidence, 0, 0.0, 0.0, False, "no logged retrieval names its arm")
    mu = np.array([r.arm_propensity for r in rows], dtype=np.float64)
    y = np.array([r.reward for r in rows], dtype=np.float64)
    wc = np.array([r.arm == candidate for r in rows], dtype=np.float64) / mu
    wi = np.array([r.arm == incumbent for r in rows], dtype=np.float64) / mu
    return _compare(
        wc, wi, y, confidence=confidence, min_ess=min_ess, boots=boots, seed=seed, names=(candidate, incumbent)
    )


def _compare(
    wc: np.ndarray,
    wi: np.ndarray,
    y: np.ndarray,
    *,
    confidence: float,
    min_ess: float,
    boots: int,
    seed: int,
    names: tuple[str, str] = ("candidate", "incumbent"),
) -> OpeEstimate:
    """SNIPS of both weightings, and a paired bootstrap of their difference over the same rows."""
    nan = float("nan")
    rows = y.size
    vc, vi = _snips(wc, y), _snips(wi, y)
    ess_c, ess_i = _ess(wc), _ess(wi)
    if ess_c < min_ess or ess_i < min_ess:
        return OpeEstimate(vc, vi, vc - vi, nan, nan, confidence, rows, ess_c, ess_i, False,
                           f"too little overlap with the log (effective sizes {ess_c:.0f} and {ess_i:.0f} < {min_ess:.0f})")  # fmt: skip
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, rows, size=(boots, rows))
    diffs = np.array([_snips(wc[i], y[i]) - _snips(wi[i], y[i]) for i in idx])
    diffs = diffs[np.isfinite(diffs)]
    low = float(np.quantile(diffs, 1.0 - confidence)) if diffs.size else nan
    high = float(np.quantile(diffs, confidence)) if diffs.size else nan
    better = bool(np.isfinite(low) and low > 0.0)
    reason = (
        f"{names[0]} {vc:.3f} vs {names[1]} {vi:.3f}: better at {confidence:.0%} confidence (lower bound {low:+.3f})"
        if better
        else f"{names[0]} {vc:.3f} vs {names[1]} {vi:.3f}: not better at {confidence:.0%} confidence (lower bound {low:+.3f})"
    )
    return OpeEstimate(vc, vi, vc - vi, low, high, confidence, rows, ess_c, ess_i, better, reason)
