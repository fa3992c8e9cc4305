"""Answer scoring for the judge node: exact match and token F1 against a ground truth.

Normalisation follows the SQuAD convention (lower case, no punctuation, no articles, folded
whitespace). Ground truths may pack alternatives separated by the literal ``<|answer_split|>``;
every metric takes the best alternative. The eval harness (`evals.metrics`) re-exports these, so
the runtime never depends on the harness.
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
