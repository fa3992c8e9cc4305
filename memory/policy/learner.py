"""Learning within a stream: refit the case-value bandit every few dozen outcomes, roll it out by A/B.

Two policies serve retrieval side by side: similarity (the nearest K cases, the control arm) and
the case-value bandit (the treatment arm). Each selection draws its arm at random with the current
``share`` (``START_SHARE`` at first), and the arm and its probability are logged with the outcome. Every ``retrain_every``
outcomes:

1. the bandit is refit on everything logged so far (both arms' outcomes are training rows: the
   model regresses outcomes on what was shown, whoever chose it);
2. the gate compares the two arms off-policy (`memory.policy.ope.compare_arms`: self-normalised IPS
   over the logged arm propensities, on each arm's most recent ``window`` outcomes) and moves the share:
   * **promote** the bandit to ``promoted_share`` when it is better at ``confidence``;
   * **demote** it to ``demoted_share`` when it is worse at ``confidence``;
   * otherwise leave the share where it is.

Why arms rather than comparing each refit with the incumbent on whole shown sets: a refit shows
different sets from the model before it, so the logged sets almost never match what it would show
and the estimate has no overlap (on the confounder grid such a gate almost never promoted, and the
learned mode stayed similarity). The arm comparison is exact whatever the arms do inside, and it
judges the bandit as it actually learns. Both arms keep a share (the smaller one explores), so a
bandit that later falls behind is caught and similarity takes over again.

With the gate off the bandit serves every selection. The graph's online trainer
(`memory.policy.bandit_serving.retrain_from_log`) applies the same rule (`arm_gate`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from memory.policy.bandit import (
    BanditConfig,
    CandidateCase,
    CaseValueModel,
    LoggedRetrieval,
    Selection,
    SimilarityPolicy,
    add_pair_outcomes,
    fill_pair_history,
    select_mixture,
)
from memory.policy.ope import OpeEstimate, compare_arms

# The bandit's share of selections before any evidence. Its prior is cautious (it shows a case only
# where it expects one to help, nearest first), while similarity shows the nearest K whatever they
# are: on the confounder grid an even split cost up to 0.08 of pass-1 accuracy against showing
# nothing, 80/20 about half that. Similarity keeps a fifth as the control arm until the comparison decides.
START_SHARE = 0.8
PROMOTED_SHARE = 0.95
DEMOTED_SHARE = 0.05
# Each arm is judged on its own most recent this many outcomes: a bandit that learns is judged on
# what it does now, not on its first pass. At the grid's hardest point (24 seeds each on 0–23 and
# 24–47) a window of 40, 60, 100 and 150 closed 81%/82%, 80%/82%, 75%/81% and 73%/81% of the gap
# (with idf⁴ and no embedding-gap prior): a long window promoted the bandit later.
WINDOW = 60
MIN_ESS = 15.0


@dataclass
class Decision:
    """One retraining round: the refit, the arm comparison it was decided on, and the new share."""

    promoted: bool
    reason: str
    rows: int
    fit_seconds: float
    estimate: OpeEstimate | None = None
    version: int = 0
    share: float = START_SHARE
    demoted: bool = False
    finished_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the promotion history)."""
        out: dict[str, Any] = {k: v for k, v in self.__dict__.items() if k != "estimate"}
        if self.estimate is not None:
            out["estimate"] = dict(self.estimate.__dict__)
        return out


@dataclass(frozen=True)
class ArmVerdict:
    """The gate's answer: the bandit's new share, and why."""

    share: float
    promoted: bool
    demoted: bool
    reason: str
    estimate: OpeEstimate


def arm_gate(
    logs: list[LoggedRetrieval],
    share: float,
    *,
    confidence: float = 0.95,
    window: int = WINDOW,
    min_ess: float = MIN_ESS,
    promoted_share: float = PROMOTED_SHARE,
    demoted_share: float = DEMOTED_SHARE,
    seed: int = 0,
) -> ArmVerdict:
    """The rollout rule, shared by the in-process learner and the served policy's retraining.

    Args:
        logs: Judged retrievals, oldest first.
        share: The bandit's current share of selections.
        confidence: One-sided confidence for moving the share either way.
        window: The arms are compared on each arm's most recent this many retrievals.
        min_ess: Each arm needs this effective sample size in the window.
        promoted_share: The bandit's share once it is better at ``confidence``.
        demoted_share: Its share once it is worse at ``confidence``.
        seed: Bootstrap seed.

    """
    est = compare_arms(logs, "bandit", "similarity", window=window, confidence=confidence, min_ess=min_ess, seed=seed)
    if est.promote:
        return ArmVerdict(promoted_share, share < promoted_share, False, est.reason, est)
    # The mirror test: similarity better than the bandit at the same confidence.
    high = est.high
    if np.isfinite(high) and high < 0.0:
        reason = (
            f"bandit arm {est.candidate:.3f} vs similarity {est.incumbent:.3f}: worse at {confidence:.0%} "
            f"confidence (upper bound {high:+.3f}); similarity serves"
        )
        return ArmVerdict(demoted_share, False, share > demoted_share, reason, est)
    return ArmVerdict(share, False, False, est.reason, est)


class BanditLearner:
    """The bandit, its share against similarity, its log, and when to refit and move the share."""

    def __init__(
        self,
        config: BanditConfig | None = None,
        *,
        k: int = 4,
        retrain_every: int = 25,
        gate: bool = True,
        confidence: float = 0.95,
        share: float = START_SHARE,
        window: int = WINDOW,
        min_ess: float = MIN_ESS,
        promoted_share: float = PROMOTED_SHARE,
        demoted_share: float = DEMOTED_SHARE,
    ):
        """Start from the bandit's prior serving ``share`` of selections and similarity the rest.

        Args:
            config: Bandit priors and sizes.
            k: Cases shown at most.
            retrain_every: Refit after this many new outcomes (0: never refit automatically).
            gate: Move the share by the A/B comparison of arms; off: the bandit serves everything.
            confidence: One-sided confidence of the gate.
            share: The bandit's share before any evidence.
            window: The gate compares the arms on each arm's this many most recent outcomes.
            min_ess: Effective sample size each arm needs in the window for a decision.
            promoted_share: The bandit's share once promoted.
            demoted_share: Its share once demoted (it keeps exploring and learning).

        """
        self.config = config or BanditConfig()
        self.k = k
        self.retrain_every = retrain_every
        self.gate = gate
        self.confidence = confidence
        self.window = window
        self.min_ess = min_ess
        self.promoted_share = promoted_share
        self.demoted_share = demoted_share
        self.share = share if gate else 1.0
        self.model = CaseValueModel(self.config)
        self.similarity = SimilarityPolicy()
        self.version = 0
        self.logs: list[LoggedRetrieval] = []
        self.decisions: list[Decision] = []
        self._pending = 0
        self._pairs: dict[str, tuple[float, float]] = {}

    def with_history(self, query: str, candidates: list[CandidateCase]) -> list[CandidateCase]:
        """The candidates with every earlier outcome of this question per case (exact, up to now)."""
        return fill_pair_history(self._pairs, query, candidates)

    def select(
        self,
        query_embedding: np.ndarray,
        candidates: list[CandidateCase],
        rng: np.random.Generator,
        query: str = "",
    ) -> Selection:
        """The bandit's exploring choice with probability ``share``, else similarity's; exact propensities.

        Pass candidates through `with_history` first, and log those (the features as selected),
        with the selection's arm and arm propensity.
        """
        return select_mixture(self.similarity, self.model, self.share, query_embedding, candidates, self.k, rng, query)

    def observe(self, record: LoggedRetrieval) -> Decision | None:
        """Log an outcome; refit (and maybe move the share) when due. Returns the decision if one was made."""
        self.logs.append(record)
        add_pair_outcomes(self._pairs, record)
        self._pending += 1
        if self.retrain_every and self._pending >= self.retrain_every:
            self._pending = 0
            return self.retrain()
        return None

    def retrain(self) -> Decision:
        """Refit the bandit on the whole log and let the arm comparison set its share."""
        started = time.perf_counter()
        cfg = replace(self.config, seed=self.config.seed + self.version + 1)
        self.model = CaseValueModel(cfg).fit(self.logs)
        self.version += 1
        fit_s = time.perf_counter() - started
        if not self.gate:
            decision = Decision(False, "no gate: the bandit serves every selection", len(self.logs), fit_s, share=1.0)
        else:
            verdict = arm_gate(self.logs, self.share, confidence=self.confidence, window=self.window,
                               min_ess=self.min_ess, promoted_share=self.promoted_share,
                               demoted_share=self.demoted_share, seed=self.version)  # fmt: skip
            self.share = verdict.share
            decision = Decision(verdict.promoted, verdict.reason, len(self.logs), fit_s, verdict.estimate,
                                share=verdict.share, demoted=verdict.demoted)  # fmt: skip
        decision.version = self.version
        self.decisions.append(decision)
        return decision
