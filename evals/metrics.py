"""Answer-scoring metrics shared by the judge node and the eval harness.

Normalisation follows the SQuAD convention (lower case, no punctuation, no articles, folded
whitespace). Ground truths may pack alternatives separated by the literal ``<|answer_split|>``;
every metric takes the best alternative.
"""

from __future__ import annotations

import re
import string
from collections import Counter

ANSWER_SPLIT = "<|answer_split|>"

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def split_answers(ground_truth: str | list[str] | None) -> list[str]:
    """Alternatives of a ground truth: a list, or a string packed with ``<|answer_split|>``."""
    if ground_truth is None:
        return []
    items = ground_truth if isinstance(ground_truth, list) else str(ground_truth).split(ANSWER_SPLIT)
    return [a.strip() for a in items if a and a.strip()]


def normalize_answer(text: str) -> str:
    """SQuAD-style normalisation."""
    text = str(text).lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str | None, ground_truth: str | list[str] | None) -> float:
    """1.0 when the normalised prediction equals any normalised alternative."""
    if not prediction:
        return 0.0
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(a) for a in split_answers(ground_truth)))


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str | None, ground_truth: str | list[str] | None) -> float:
    """Best token-overlap F1 over the alternatives."""
    answers = split_answers(ground_truth)
    if not prediction or not answers:
        return 0.0
    pred = normalize_answer(prediction).split()
    return max(_f1(pred, normalize_answer(a).split()) for a in answers)


def score_answer(prediction: str | None, ground_truth: str | list[str] | None) -> dict[str, float]:
    """Normalised exact match and token F1 of one prediction."""
    return {"exact_match": exact_match(prediction, ground_truth), "f1": token_f1(prediction, ground_truth)}


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
