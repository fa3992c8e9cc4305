"""Learning within a stream: refit the case-value bandit every few dozen outcomes, promote by OPE.

`BanditLearner` owns the serving model (the incumbent), the logged retrievals and the retraining
cadence. Every ``retrain_every`` outcomes it fits a candidate on everything logged so far (a few
milliseconds to a second) and installs it only when off-policy evaluation on the log says it is
better than the incumbent at the stated confidence (`memory.policy.ope.compare`: self-normalised IPS
over whole shown sets, which assumes nothing about how cases combine); with the gate off every refit
is installed. Each decision is kept in ``decisions``. The first incumbent is similarity, so the
learned mode never serves a bandit the log says is worse than showing the nearest cases; a bandit
that later falls behind similarity is retired.

(A pseudo-inverse slate estimator, which needs far fewer logged matches but trusts that cases add
up, was tried first: where success is capped or floored it promoted candidates that were much
worse, so it was removed.)

Off-policy evaluation can only judge a candidate on cases the log has seen shown. A cautious
incumbent rarely shows the cases a better candidate wants, so the newest candidate serves a
``canary`` share of selections (the logged probabilities account for the mixture exactly); the
next decision then has outcomes for what it proposes. That is how a policy is rolled out.

The graph's online trainer and the simulator's fast stream use this same class.
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
from memory.policy.ope import OpeEstimate, compare


@dataclass
class Decision:
    """One retraining round: the estimate it was decided on and whether the candidate was installed."""

    promoted: bool
    reason: str
    rows: int
    fit_seconds: float
    estimate: OpeEstimate | None = None
    version: int = 0
    finished_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the promotion history)."""
        out: dict[str, Any] = {k: v for k, v in self.__dict__.items() if k != "estimate"}
        if self.estimate is not None:
            out["estimate"] = dict(self.estimate.__dict__)
        return out


def canary_share(share: float, estimate: OpeEstimate | None) -> float:
    """The canary's share: full while the candidate may be better, a quarter once the log says it is worse.

    A candidate the log already shows to be worse than the incumbent (its upper bound below zero)
    would only cost tasks; it keeps a small probe share so a later, better fit can still be judged.
    """
    if estimate is None:
        return share
    # With too little overlap for an interval, the point estimate decides (it is all there is).
    bound = estimate.high if np.isfinite(estimate.high) else estimate.difference
    return share / 4.0 if np.isfinite(bound) and bound < 0.0 else share


@dataclass
class GateVerdict:
    """Whether a candidate replaces the incumbent, or the incumbent gives way to similarity."""

    promote: bool
    retire: bool
    reason: str
    estimate: OpeEstimate


def gate_decision(
    logs: list[LoggedRetrieval],
    candidate: CaseValueModel,
    incumbent: CaseValueModel | SimilarityPolicy,
    k: int,
    *,
    confidence: float = 0.95,
    min_ess: float = 20.0,
    seed: int = 0,
    incumbent_probability: Any = None,
) -> GateVerdict:
    """The promotion rule, shared by the in-process learner and the served policy's retraining.

    A candidate is promoted when self-normalised IPS on the log says it beats the incumbent at
    ``confidence`` and, when the incumbent is a bandit, its estimate is not below similarity's.
    An incumbent bandit that the log says is worse than similarity at ``confidence`` is retired.
    """
    similarity = SimilarityPolicy()

    def cand(r: LoggedRetrieval) -> float:
        return candidate.slate_probability(r.query_embedding, r.candidates, r.shown, k)

    def inc(r: LoggedRetrieval) -> float:
        return incumbent.slate_probability(r.query_embedding, r.candidates, r.shown, k)

    def sim(r: LoggedRetrieval) -> float:
        return similarity.slate_probability(r.query_embedding, r.candidates, r.shown, k)

    inc_p = incumbent_probability or inc
    est = compare(logs, cand, inc_p, confidence=confidence, min_ess=min_ess, seed=seed)
    if isinstance(incumbent, SimilarityPolicy):
        return GateVerdict(est.promote, False, est.reason, est)
    if est.promote:
        vs_sim = compare(logs, cand, sim, confidence=confidence, min_ess=min_ess, seed=seed)
        if vs_sim.difference >= 0.0:
            return GateVerdict(True, False, est.reason, est)
        return GateVerdict(False, False, "better than the incumbent but not than similarity: " + vs_sim.reason, est)
    back = compare(logs, sim, inc_p, confidence=confidence, min_ess=min_ess, seed=seed)
    if back.promote:
        return GateVerdict(False, True, "incumbent retired, similarity serves: " + back.reason, est)
    return GateVerdict(False, False, est.reason, est)


class BanditLearner:
    """The incumbent bandit, its log, and when to refit and promote."""

    def __init__(
        self,
        config: BanditConfig | None = None,
        *,
        k: int = 4,
        retrain_every: int = 25,
        gate: bool = True,
        confidence: float = 0.95,
        canary: float = 0.1,
        min_ess: float = 20.0,
        start: str = "similarity",
    ):
        """Start from similarity (or the bandit's prior) and learn from there.

        Args:
            config: Bandit priors and sizes.
            k: Cases shown at most (the OPE replays selections with the same K).
            retrain_every: Refit after this many new outcomes (0: never refit automatically).
            gate: Install a refit only when OPE (self-normalised IPS over whole shown sets) prefers it at
                ``confidence``.
            confidence: One-sided confidence of the OPE gate.
            canary: Share of selections served by the newest unpromoted candidate (gate on).
            min_ess: Effective sample size both policies need on the log for a decision.
            start: First incumbent: ``similarity`` (a bandit serves only once OPE prefers it to
                similarity) or ``prior`` (the cautious bandit prior serves from the start).

        """
        self.config = config or BanditConfig()
        self.k = k
        self.retrain_every = retrain_every
        self.gate = gate
        self.confidence = confidence
        self.canary = canary
        self.min_ess = min_ess
        if start not in ("similarity", "prior"):
            raise ValueError(f"start must be similarity or prior, got {start!r}")
        self.model: CaseValueModel | SimilarityPolicy = (
            SimilarityPolicy() if start == "similarity" and gate else CaseValueModel(self.config)
        )
        self.challenger: CaseValueModel | None = None
        self.challenger_share = 0.0
        self.version = 0
        self.logs: list[LoggedRetrieval] = []
        self.decisions: list[Decision] = []
        self._pending = 0
        self._incumbent_slate_p: dict[int, np.ndarray] = {}
        self._pairs: dict[str, tuple[float, float]] = {}

    def with_history(self, query: str, candidates: list[CandidateCase]) -> list[CandidateCase]:
        """The candidates with every earlier outcome of this question per case (exact, up to now)."""
        return fill_pair_history(self._pairs, query, candidates)

    def select(
        self, query_embedding: np.ndarray, candidates: list[CandidateCase], rng: np.random.Generator
    ) -> Selection:
        """The incumbent's exploring choice, or the canary's, with exact propensities of the mixture.

        Pass candidates through `with_history` first, and log those (the features as selected).
        """
        return select_mixture(
            self.model, self.challenger, self.challenger_share, query_embedding, candidates, self.k, rng
        )

    def observe(self, record: LoggedRetrieval) -> Decision | None:
        """Log an outcome; refit (and maybe promote) when due. Returns the decision if one was made."""
        self.logs.append(record)
        add_pair_outcomes(self._pairs, record)
        self._pending += 1
        if self.retrain_every and self._pending >= self.retrain_every:
            self._pending = 0
            return self.retrain()
        return None

    def retrain(self) -> Decision:
        """Fit a candidate on the whole log and decide whether it serves."""
        started = time.perf_counter()
        cfg = replace(self.config, seed=self.config.seed + self.version + 1)
        candidate = CaseValueModel(cfg).fit(self.logs)
        fit_s = time.perf_counter() - started
        if not self.gate:
            decision = Decision(True, "installed without a gate", len(self.logs), fit_s)
        else:
            k = self.k
            cache = self._incumbent_slate_p
            incumbent_model = self.model

            def incumbent(r: LoggedRetrieval) -> float:
                # The incumbent is unchanged until a promotion: replay each retrieval once.
                if id(r) not in cache:
                    cache[id(r)] = np.array(
                        [incumbent_model.slate_probability(r.query_embedding, r.candidates, r.shown, k)]
                    )
                return float(cache[id(r)][0])

            verdict = gate_decision(self.logs, candidate, incumbent_model, k, confidence=self.confidence,
                                    min_ess=self.min_ess, seed=self.version, incumbent_probability=incumbent)  # fmt: skip
            decision = Decision(verdict.promote, verdict.reason, len(self.logs), fit_s, verdict.estimate)
            if verdict.retire:
                self.model = SimilarityPolicy()
                self._incumbent_slate_p = {}
        if decision.promoted:
            self.model = candidate
            self.challenger = None
            self.challenger_share = 0.0
            self._incumbent_slate_p = {}
            self.version += 1
        elif self.gate:
            self.challenger = candidate
            self.challenger_share = canary_share(self.canary, decision.estimate)
        decision.version = self.version
        self.decisions.append(decision)
        return decision
