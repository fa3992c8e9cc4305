"""Eval metrics: per-answer scores (from the judge's `nodes.scoring`) and their aggregates.

Normalisation follows the SQuAD convention (lower case, no punctuation, no articles, folded
whitespace). Ground truths may pack alternatives separated by the literal ``<|answer_split|>``;
every metric takes the best alternative.
"""

from __future__ import annotations

from nodes.scoring import ANSWER_SPLIT, exact_match, normalize_answer, score_answer, split_answers, token_f1

__all__ = [
    "ANSWER_SPLIT",
    "aggregate",
    "breakdown",
    "exact_match",
    "is_correct",
    "mean",
    "normalize_answer",
    "score_answer",
    "split_answers",
    "token_f1",
]


def is_correct(reward: float | None, em: float | None = None, threshold: float = 0.5) -> bool | None:
    """Correctness of one result: the judge's reward when there is one, else exact match."""
    if reward is not None:
        return float(reward) >= threshold
    if em is not None:
        return float(em) >= 1.0
    return None


def mean(values: list[float]) -> float | None:
    """Arithmetic mean, None for no values."""
    return sum(values) / len(values) if values else None


def aggregate(records: list[dict]) -> dict[str, float | int | None]:
    """Accuracy, EM, F1, tokens, cost and latency of a group of result records.

    Records with an ``error`` count in ``n`` and ``errors`` and as incorrect answers (a crash is
    not a success), but not in the token and latency means.
    """
    n = len(records)
    correct = [1.0 if r.get("correct") else 0.0 for r in records]
    ok = [r for r in records if not r.get("error")]
    tokens = [float(r.get("tokens") or 0) for r in ok]
    latency = sorted(float(r.get("latency_s") or 0.0) for r in ok)
    return {
        "n": n,
        "errors": n - len(ok),
        "accuracy": mean(correct),
        "exact_match": mean([float(r.get("exact_match") or 0.0) for r in records]),
        "f1": mean([float(r.get("f1") or 0.0) for r in records]),
        "tokens_per_task": mean(tokens),
        "cost_usd": sum(float(r.get("cost_usd") or 0.0) for r in records),
        "latency_mean_s": mean(latency),
        "latency_p50_s": latency[len(latency) // 2] if latency else None,
    }


def breakdown(records: list[dict], by: str | tuple[str, ...] = "source") -> dict[tuple, dict]:
    """`aggregate` per value of one or several record fields (e.g. per source)."""
    keys = (by,) if isinstance(by, str) else tuple(by)
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        groups.setdefault(tuple(rec.get(k) for k in keys), []).append(rec)
    return {k: aggregate(groups[k]) for k in sorted(groups, key=_sort_key)}


def _sort_key(key: tuple) -> tuple:
    # Numbers (pass numbers) sort numerically, everything else as text, None last.
    return tuple(
        (0, x, "") if isinstance(x, int | float) else (1, 0, str(x)) if x is not None else (2, 0, "") for x in key
    )
