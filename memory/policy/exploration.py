"""How case selection deviates from its best guess so the experience log keeps teaching the policy.

Plain numpy (no torch), so similarity retrieval can explore and log propensities even where the
policy package cannot load. Exploration is *local*: it swaps the last of the K shown cases for one
of the next few candidates in the ranking. Those are the cases a reranker could plausibly promote,
so that is where the log needs outcomes; showing K cases drawn from the whole candidate pool
mostly shows unrelated cases, costs far more task success and teaches about cases no sensible
ranking would ever pick.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from memory.config import MemoryConfig

STRATEGIES = ("greedy", "epsilon", "thompson")


@dataclass(frozen=True)
class Exploration:
    """How selections deviate from greedy so the policy keeps learning.

    Attributes:
        strategy: ``greedy`` (top K), ``epsilon`` (top K, but with probability ``epsilon`` the K-th
            is swapped for one drawn uniformly from the next ``window`` candidates of the ranking)
            or ``thompson`` (top K of one dropout draw of the scores).
        epsilon: Exploration rate of ``epsilon``.
        window: Candidates after the top K that an exploration step draws from (None: K).
        samples: Extra draws that estimate Thompson-sampling propensities.
        no_case_margin: Show nothing when the best case's predicted success does not beat the
            predicted success with no case by this margin (probability units). Only active for
            checkpoints that learned a no-case baseline (trained on enough retrievals that showed
            nothing); None disables it.

    """

    strategy: str = "epsilon"
    epsilon: float = 0.1
    window: int | None = None
    samples: int = 64
    no_case_margin: float | None = 0.0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"exploration strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")
        if self.samples < 1:
            raise ValueError("samples must be at least 1")
        if self.window is not None and self.window < 1:
            raise ValueError(f"exploration window must be at least 1, got {self.window}")

    @classmethod
    def parse(cls, spec: Exploration | str | dict[str, Any] | None) -> Exploration:
        """Accept an `Exploration`, a dict of its fields, or a string.

        Strings: ``greedy`` (or ``none``), ``epsilon``, ``epsilon:0.2``, ``thompson``, ``thompson:128``
        (draws). None reads ``MEMENTO_POLICY_EXPLORATION`` (default ``epsilon:0.1``).
        """
        if isinstance(spec, Exploration):
            return spec
        if spec is None or spec == "":
            spec = MemoryConfig.from_env().policy_exploration
        if isinstance(spec, dict):
            known = {f.name for f in fields(cls)}
            unknown = set(spec) - known
            if unknown:
                raise ValueError(f"unknown exploration setting(s) {sorted(unknown)}; known: {sorted(known)}")
            return cls(**spec)
        if not isinstance(spec, str):
            raise ValueError(f"exploration must be a string, dict or Exploration, got {type(spec).__name__}")
        name, _, arg = spec.strip().lower().partition(":")
        try:
            if name in ("greedy", "none"):
                return cls(strategy="greedy", epsilon=0.0)
            if name == "epsilon":
                return cls(strategy="epsilon", epsilon=float(arg) if arg else 0.1)
            if name == "thompson":
                return cls(strategy="thompson", epsilon=0.0, samples=int(arg) if arg else 64)
        except ValueError as exc:
            raise ValueError(f"bad exploration {spec!r}: {exc}") from exc
        raise ValueError(f"bad exploration {spec!r}: use greedy, epsilon[:rate] or thompson[:draws]")


def explore_ranking(
    order: np.ndarray, k: int, cfg: Exploration, rng: np.random.Generator, *, n: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Epsilon-greedy over a ranking: which candidates to show and each one's propensity.

    Args:
        order: Candidate indices, best first (the greedy choice is ``order[:k]``).
        k: Cases to show.
        cfg: Exploration settings (``epsilon`` and ``window``; other strategies act greedily here).
        rng: Randomness of the exploration draw.
        n: Number of candidates (default ``len(order)``).

    Returns:
        ``(shown, propensity)``: a bool mask and the probability of being shown, per candidate.

    """
    order = np.asarray(order, dtype=np.int64)
    n = order.size if n is None else n
    shown = np.zeros(n, dtype=bool)
    propensity = np.zeros(n)
    k = max(0, min(k, order.size))
    if k == 0:
        return shown, propensity
    eps = cfg.epsilon if cfg.strategy == "epsilon" else 0.0
    window = order[k : k + (cfg.window or k)]
    propensity[order[:k]] = 1.0
    if eps <= 0.0 or window.size == 0:
        shown[order[:k]] = True
        return shown, propensity
    propensity[order[k - 1]] = 1.0 - eps
    propensity[window] = eps / window.size
    shown[order[: k - 1]] = True
    if rng.random() < eps:
        shown[window[rng.integers(window.size)]] = True
    else:
        shown[order[k - 1]] = True
    return shown, propensity
