import json
import math

import pytest

from memory.cases import Case, case_id_for, label_for_reward, parse_plan


def test_id_is_deterministic_and_ignores_case_and_spacing():
    a = Case(question="What is  the capital of France?")
    b = Case(question="what is the capital of france? ")
    assert a.id == b.id == case_id_for("default", "What is the capital of France?")
    assert a.id.startswith("case-")


def test_id_separates_namespaces_and_tasks():
    base = Case(question="q one")
    assert Case(question="q one", namespace="other").id != base.id
    assert Case(question="q one", task_id="t1").id != base.id
    assert Case(question="q one", task_id="t1").id == Case(question="q one", task_id="t1").id


def test_label_follows_reward_when_not_given():
    assert Case(question="q", reward=1.0).label == "positive"
    assert Case(question="q", reward=0.2).label == "negative"
    assert Case(question="q").label == "unknown"
    # An explicit label is kept (a human may disagree with the threshold).
    assert Case(question="q", reward=0.2, label="positive").label == "positive"
    assert label_for_reward(None) == "unknown"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"question": "  "},
        {"question": "q", "label": "great"},
        {"question": "q", "reward_source": "vibes"},
        {"question": "q", "reward": math.nan},
        {"question": "q", "plan": 5},
    ],
)
def test_invalid_records_are_rejected(kwargs):
    with pytest.raises(ValueError):
        Case(**kwargs)


def test_parse_plan_accepts_the_original_string_format():
    original = '{ "plan": [ { "id": 1, "description": "Find X." }, {"id": 2, "description": "Check."} ] }'
    assert parse_plan(original) == [{"id": 1, "description": "Find X."}, {"id": 2, "description": "Check."}]
    assert parse_plan(["a", "b"]) == [{"id": 1, "description": "a"}, {"id": 2, "description": "b"}]
    assert parse_plan("just do it") == [{"id": 1, "description": "just do it"}]
    assert parse_plan(None) == []


def test_metadata_round_trip_keeps_everything_and_usage_in_metadata_wins():
    case = Case(
        question="Who wrote Dune?",
        namespace="ns1",
        plan=[{"id": 1, "description": "search"}],
        answer="Frank Herbert",
        reward=1.0,
        reward_source="ground_truth_judge",
        judge_model="judge-x",
        judge_rationale="matches",
        trajectory_summary="searched once",
        task_id="t-9",
        source="nq",
        models={"planner": "p", "executor": "e"},
    )
    meta = case.to_metadata()
    assert all(v is not None and isinstance(v, str | int | float | bool) for v in meta.values())
    meta["times_retrieved"] = 3
    meta["retrieved_successes"] = 2
    meta["last_retrieved_at"] = 123.0
    back = Case.from_metadata(meta)
    assert (
        back.to_dict() | {"times_retrieved": 0, "retrieved_successes": 0, "last_retrieved_at": None} == case.to_dict()
    )
    assert (back.times_retrieved, back.retrieved_successes, back.last_retrieved_at) == (3, 2, 123.0)
    assert back.success_rate == 1.0
    assert json.loads(back.plan_text()) == {"plan": [{"id": 1, "description": "search"}]}


def test_from_dict_ignores_unknown_keys():
    data = Case(question="q").to_dict() | {"future_field": 1}
    assert Case.from_dict(data).question == "q"
