import pytest

from evals.metrics import (
    aggregate,
    breakdown,
    exact_match,
    is_correct,
    normalize_answer,
    score_answer,
    token_f1,
)


def test_em_and_f1_take_best_alternative():
    gt = "The Eiffel Tower<|answer_split|>Tour Eiffel"
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert exact_match("eiffel tower", gt) == 1.0
    assert exact_match("tower", gt) == 0.0
    assert token_f1("tour eiffel paris", gt) == pytest.approx(0.8)
    assert score_answer(None, gt) == {"exact_match": 0.0, "f1": 0.0}


def test_correctness_prefers_judge_then_exact_match():
    assert is_correct(1.0, 0.0) is True
    assert is_correct(0.0, 1.0) is False
    assert is_correct(None, 1.0) is True
    assert is_correct(None, None) is None


def rec(mode, it, source, correct, em=0.0, f1=0.0, tokens=100, latency=1.0, error=None, cost=0.0):
    return {
        "mode": mode,
        "iteration": it,
        "split": "train",
        "source": source,
        "correct": correct,
        "exact_match": em,
        "f1": f1,
        "tokens": tokens,
        "latency_s": latency,
        "error": error,
        "cost_usd": cost,
    }


def test_aggregate_counts_errors_as_wrong_but_not_in_latency():
    rows = [
        rec("s", 1, "a", True, em=1, f1=1, latency=2.0, cost=0.5),
        rec("s", 1, "a", False, latency=4.0),
        rec("s", 1, "b", False, tokens=0, latency=None, error="boom"),
    ]
    agg = aggregate(rows)
    assert agg["n"] == 3 and agg["errors"] == 1
    assert agg["accuracy"] == pytest.approx(1 / 3)
    assert agg["exact_match"] == pytest.approx(1 / 3)
    assert agg["latency_mean_s"] == pytest.approx(3.0)
    assert agg["tokens_per_task"] == pytest.approx(100)
    assert agg["cost_usd"] == pytest.approx(0.5)


def test_breakdown_per_source_sorts_passes_numerically():
    rows = [rec("s", 10, "a", True), rec("s", 2, "a", False), rec("s", 2, "b", True)]
    per = breakdown(rows, ("iteration", "source"))
    assert list(per) == [(2, "a"), (2, "b"), (10, "a")]
    assert per[(2, "b")]["accuracy"] == 1.0
    assert aggregate([])["accuracy"] is None
