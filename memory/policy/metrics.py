"""Classification metrics for the policy: ranking (AUC), thresholded (accuracy, F1), calibration.

Plain numpy so the CLI, the trainer and the benchmark agree on one implementation and the project
needs no scikit-learn.
"""

from __future__ import annotations

import math

import numpy as np


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied scores counted half).

    Returns:
        The AUC, or NaN when only one class is present (AUC is undefined then).

    """
    y = np.asarray(y_true, dtype=bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size, dtype=np.float64)
    sorted_s = s[order]
    # Average ranks over ties so that a constant scorer gets exactly 0.5.
    boundaries = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [s.size]])
    for a, b in zip(starts, ends, strict=True):
        ranks[order[a:b]] = (a + b + 1) / 2.0
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """ECE over equal-width probability bins, weighted by bin size."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    if p.size == 0:
        return float("nan")
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            total += mask.sum() / p.size * abs(p[mask].mean() - y[mask].mean())
    return float(total)


def classification_report(y_true: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """AUC, accuracy, precision, recall, F1 (at ``threshold``), Brier score and ECE.

    Args:
        y_true: Binary labels.
        probs: Predicted probabilities of the positive class.
        threshold: Decision threshold for the thresholded metrics.

    Returns:
        JSON-plain floats (NaN where undefined).

    """
    y = np.asarray(y_true, dtype=bool).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    if y.size != p.size:
        raise ValueError(f"{y.size} labels but {p.size} predictions")
    pred = p >= threshold
    tp = int((pred & y).sum())
    fp = int((pred & ~y).sum())
    fn = int((~pred & y).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "auc": roc_auc(y, p),
        "accuracy": float((pred == y).mean()) if y.size else float("nan"),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "brier": float(np.mean((p - y) ** 2)) if y.size else float("nan"),
        "ece": expected_calibration_error(y, p),
        "n": int(y.size),
        "positive_rate": float(y.mean()) if y.size else float("nan"),
    }


def finite_or_none(value: float) -> float | None:
    """NaN/inf to None, for JSON files and checkpoint metadata."""
    return None if value is None or not math.isfinite(value) else float(value)
