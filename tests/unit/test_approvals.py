"""Reading a person's answer to an approval request: anything but a clear yes is a no."""

from __future__ import annotations

from nodes.approvals import bind_policy, decided_by, read_decision


def test_unclear_answers_reject():
    assert read_decision({"other-call": True}, "c1")[0] is False  # names another call only
    assert read_decision({"approve": True}, "c1")[0] is False  # a misspelt key is not a yes
    assert read_decision(None, "c1")[0] is False
    assert read_decision("maybe", "c1")[0] is False
    assert read_decision([True], "c1")[0] is False
    assert read_decision({"approved": True, "reason": "ok"}, "c1") == (True, "ok")
    assert read_decision("Approve", "c1")[0] is True


def test_policy_only_grows_and_decider_is_named():
    assert bind_policy(["math"], []) == ["math"]
    assert bind_policy(["math"], ["code", "math"]) == ["math", "code"]
    assert decided_by({"approved": False, "by": "alice"}, {}) == "alice"
    assert decided_by(False, {"user_id": "bob"}) == "bob"
    assert decided_by(False, {}) == "unknown"
