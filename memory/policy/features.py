"""Cheap per-candidate features: computed from the bank's search hit, never from a transformer.

The learned scorer sees the query embedding, the case's cached embedding and these scalars. The
names travel in every checkpoint; a checkpoint trained on a different list is refused on load.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

FEATURE_NAMES: tuple[str, ...] = (
    "similarity",
    "similarity_gap",
    "reward",
    "has_reward",
    "label_positive",
    "label_negative",
    "label_unknown",
    "log_times_retrieved",
    "success_rate",
    "log_retrieved_successes",
    "log_retrieved_failures",
)
N_FEATURES = len(FEATURE_NAMES)


def feature_row(
    *,
    similarity: float,
    best_similarity: float,
    reward: float | None,
    label: str | None,
    times_retrieved: int = 0,
    retrieved_successes: int = 0,
    retrieved_failures: int = 0,
) -> np.ndarray:
    """One candidate's feature vector, in `FEATURE_NAMES` order.

    Args:
        similarity: Cosine similarity between query and case.
        best_similarity: The best similarity among this query's candidates (the gap to it tells
            the model how this case ranks without depending on how many candidates there are).
        reward: The case's own reward, or None when it was never judged.
        label: ``positive``/``negative``/``unknown``.
        times_retrieved: How often the case was shown before.
        retrieved_successes: Shown in a task that then succeeded.
        retrieved_failures: Shown in a task that then failed.

    """
    label = label or "unknown"
    # Laplace-smoothed: an unused case sits at 0.5 instead of an undefined 0/0.
    rate = (retrieved_successes + 1.0) / (retrieved_successes + retrieved_failures + 2.0)
    return np.array(
        [
            similarity,
            best_similarity - similarity,
            0.0 if reward is None else float(reward),
            0.0 if reward is None else 1.0,
            1.0 if label == "positive" else 0.0,
            1.0 if label == "negative" else 0.0,
            1.0 if label not in ("positive", "negative") else 0.0,
            math.log1p(max(0, times_retrieved)),
            rate,
            math.log1p(max(0, retrieved_successes)),
            math.log1p(max(0, retrieved_failures)),
        ],
        dtype=np.float32,
    )


def features_for_hits(hits: Sequence[Any]) -> np.ndarray:
    """Feature matrix for `memory.bank.ScoredCase` hits (shape ``(len(hits), N_FEATURES)``)."""
    if not hits:
        return np.zeros((0, N_FEATURES), np.float32)
    best = max(float(h.similarity) for h in hits)
    return np.stack(
        [
            feature_row(
                similarity=float(h.similarity),
                best_similarity=best,
                reward=h.case.reward,
                label=h.case.label,
                times_retrieved=h.case.times_retrieved,
                retrieved_successes=h.case.retrieved_successes,
                retrieved_failures=h.case.retrieved_failures,
            )
            for h in hits
        ]
    )


def features_for_candidates(candidates: Sequence[dict[str, Any]]) -> np.ndarray:
    """Feature matrix for logged candidates (experience-log dicts), same order as given."""
    if not candidates:
        return np.zeros((0, N_FEATURES), np.float32)
    best = max(float(c.get("similarity") or 0.0) for c in candidates)
    return np.stack(
        [
            feature_row(
                similarity=float(c.get("similarity") or 0.0),
                best_similarity=best,
                reward=c.get("reward"),
                label=c.get("label"),
                times_retrieved=int(c.get("times_retrieved") or 0),
                retrieved_successes=int(c.get("retrieved_successes") or 0),
                retrieved_failures=int(c.get("retrieved_failures") or 0),
            )
            for c in candidates
        ]
    )
