"""Attempts, label precedence and outcomes: `memory.outcomes` and the feedback input parser."""

from __future__ import annotations

import pytest

from memory.cases import Case
from memory.experience import ExperienceLog
from memory.outcomes import attempt_record, merge_attempt, record_outcome
from nodes.feedback import parse_feedback

Q = "Who wrote Dracula?"


def attempt(case: Case, attempt_id: str) -> tuple[Case, dict]:
    rec = attempt_record(
        attempt_id,
        retrieval_id=f"ret-{attempt_id}",
        reward=case.reward,
        label=case.label,
        reward_source=case.reward_source,
        answer=case.answer,
    )
    return case, rec


def new(answer: str, reward: float | None, source: str) -> Case:
    return Case(question=Q, answer=answer, reward=reward, reward_source=source, plan=[f"look up {answer}"])


def test_reasks_count_once_per_attempt_and_keep_history():
    first = merge_attempt(None, *attempt(new("Stoker", 1.0, "self_judge"), "t1"))
    assert first.attempts == 1 and first.attempt_id == "t1"
    second = merge_attempt(first, *attempt(new("Shelley", 0.0, "self_judge"), "t2"))
    assert second.id == first.id and second.attempts == 2
    assert [(a["id"], a["reward"], a["answer"]) for a in second.attempt_log] == [
        ("t1", 1.0, "Stoker"),
        ("t2", 0.0, "Shelley"),
    ]
    # Same source rank: the latest attempt is the one shown.
    assert second.answer == "Shelley" and second.label == "negative"
    # The same attempt written again (a resumed run) is not counted again.
    resumed = merge_attempt(second, *attempt(new("Shelley", 0.0, "self_judge"), "t2"))
    assert resumed.attempts == 2 and len(resumed.attempt_log) == 2


def test_a_human_label_outranks_later_judges_but_not_a_later_human():
    human = new("Stoker", 1.0, "human")
    stored = merge_attempt(None, *attempt(human, "t1"))
    judged = merge_attempt(stored, *attempt(new("Shelley", 0.0, "self_judge"), "t2"))
    assert judged.label == "positive" and judged.reward_source == "human" and judged.answer == "Stoker"
    assert judged.attempt_id == "t1" and judged.attempts == 2 and judged.attempt_log[-1]["reward"] == 0.0
    gt = merge_attempt(judged, *attempt(new("Shelley", 0.0, "ground_truth_judge"), "t3"))
    assert gt.reward_source == "human"
    again = merge_attempt(gt, *attempt(new("Bram Stoker", 0.0, "human"), "t4"))
    assert again.reward_source == "human" and again.answer == "Bram Stoker" and again.label == "negative"


def test_a_resumed_write_keeps_the_human_verdict_on_its_attempt():
    stored = merge_attempt(None, *attempt(new("Stoker", 1.0, "self_judge"), "t1"))
    stored.attempt_log[0].update(reward=0.0, label="negative", reward_source="human")
    stored.reward, stored.label, stored.reward_source = 0.0, "negative", "human"
    resumed = merge_attempt(stored, *attempt(new("Stoker", 1.0, "self_judge"), "t1"))
    assert resumed.label == "negative" and resumed.reward_source == "human"
    assert resumed.attempt_log[0]["reward_source"] == "human" and resumed.attempts == 1


def test_unlabelled_attempts_do_not_replace_a_judged_case():
    stored = merge_attempt(None, *attempt(new("Stoker", 1.0, "ground_truth_judge"), "t1"))
    later = merge_attempt(stored, *attempt(new("?", None, "none"), "t2"))
    assert later.label == "positive" and later.answer == "Stoker" and later.attempt_log[-1]["answer"] == "?"


def test_attempt_log_text_is_cleaned_of_lone_surrogates():
    # The log rides in the case's Chroma metadata, which cannot hold a lone surrogate.
    rec = attempt_record(
        "t1\udcff", retrieval_id="r1", reward=1.0, label="positive", reward_source="self_judge", answer="Lima \ud800"
    )
    assert rec["answer"] == "Lima \ufffd" and rec["id"] == "t1\ufffd"
    case = merge_attempt(None, new("Lima", 1.0, "self_judge"), rec)
    case.to_metadata()["record"].encode("utf-8")
    # A record imported with a raw surrogate in its log is cleaned too.
    imported = Case.from_dict({**case.to_dict(), "attempt_log": [{"id": "t2", "answer": "x \udfff"}]})
    assert imported.attempt_log == [{"id": "t2", "answer": "x \ufffd"}]


def test_record_outcome_keeps_the_most_trusted(tmp_path):
    log = ExperienceLog(tmp_path / "x.sqlite")
    log.log_retrieval("r1", namespace="default", query=Q, candidates=[], selector="similarity")
    assert record_outcome(log, "r1", reward=1.0, reward_source="self_judge")
    assert record_outcome(log, "r1", reward=0.0, reward_source="human")
    assert not record_outcome(log, "r1", reward=1.0, reward_source="self_judge")
    assert not record_outcome(log, "r1", reward=1.0, reward_source="ground_truth_judge")
    rec = log.get("r1")
    assert rec["reward"] == 0.0 and rec["label"] == "negative" and rec["reward_source"] == "human"
    assert record_outcome(log, "r1", reward=1.0, reward_source="human")
    assert log.get("r1")["label"] == "positive"


def test_parse_feedback_forms():
    assert parse_feedback({"good": False, "note": "wrong"}) == (False, "wrong")
    assert parse_feedback({"label": "good"}) == (True, None)
    assert parse_feedback("bad") == (False, None)
    for bad in ({"good": "maybe"}, {}, 1, None):
        with pytest.raises(ValueError, match="feedback must be"):
            parse_feedback(bad)
