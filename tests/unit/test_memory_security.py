"""Pure parts of the memory server's defences: caps, ownership, namespaces, tokens."""

from __future__ import annotations

import pytest

from mcp_servers.auth import AuthConfigError, check_http_auth, is_loopback, load_tokens
from mcp_servers.memory_access import check_can_replace, client_case_id, resolve_namespace
from memory.cases import Case
from memory.limits import CaseLimits, cap_plan, cut, share


def test_cut_and_plan_caps():
    assert cut("abc", 5) == "abc" and cut("abcdef", 0) == "abcdef"
    assert cut("abcdef", 2) == "ab … [cut 4 characters]"
    steps = [{"id": i, "description": "x" * 30} for i in range(1, 5)]
    capped = cap_plan(steps, 50)
    assert len(capped[0]["description"]) == 30 and "more steps cut" in capped[-1]["description"]
    assert sum(share([10, 1000, 1000], 310)) == 310 and share([10, 1000, 1000], 310)[0] == 10


def test_limits_from_env(monkeypatch):
    monkeypatch.setenv("MEMENTO_CASE_ANSWER_CHARS", "10")
    case = CaseLimits.from_env().apply(Case(question="q", answer="y" * 100))
    assert case.answer.startswith("y" * 10) and "cut 90" in case.answer
    monkeypatch.setenv("MEMENTO_CASE_ANSWER_CHARS", "ten")
    with pytest.raises(ValueError, match="whole number"):
        CaseLimits.from_env()


def test_client_cases_have_their_own_ids_and_owners(monkeypatch):
    agent = Case(question="Q?", namespace="bob")
    assert client_case_id("stdio", "bob", "Q?", None) != agent.id
    assert client_case_id("alice", "bob", "Q?", None) != client_case_id("carol", "bob", "Q?", None)
    mine = Case(question="Q?", namespace="bob", created_by="mcp:alice")
    check_can_replace(mine, "alice")
    check_can_replace(None, "alice")
    for other in (agent, mine):
        with pytest.raises(ValueError, match="not created by this client"):
            check_can_replace(other, "carol" if other is mine else "alice")
    monkeypatch.setenv("MEMENTO_NAMESPACES", "bob, team")
    assert resolve_namespace(None) == "bob" and resolve_namespace("team") == "team"
    with pytest.raises(ValueError, match="not served here"):
        resolve_namespace("alice")


def test_token_configuration(tmp_path, monkeypatch):
    monkeypatch.delenv("MEMENTO_MCP_TOKEN", raising=False)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")
    check_http_auth("127.0.0.1", {}, no_auth=True)
    with pytest.raises(AuthConfigError, match="needs a bearer token"):
        check_http_auth("127.0.0.1", {}, no_auth=False)
    with pytest.raises(AuthConfigError, match="refusing"):
        check_http_auth("0.0.0.0", {}, no_auth=True)
    path = tmp_path / "tokens"
    path.write_text("alice:" + "a" * 20 + "\n\n# comment\nbob:" + "b" * 20 + "\n")
    assert load_tokens(str(path)) == {"a" * 20: "alice", "b" * 20: "bob"}
    path.write_text("al ice:" + "a" * 20)
    with pytest.raises(AuthConfigError, match="client name"):
        load_tokens(str(path))
    with pytest.raises(AuthConfigError, match="cannot read"):
        load_tokens(str(tmp_path / "missing"))


def test_planner_sees_client_cases_as_unverified():
    from nodes.prompts import UNVERIFIED_CASE_NOTE, format_cases

    base = {"question": "Q?", "plan": [], "answer": "A", "label": "positive"}
    text = format_cases(
        [{**base, "id": "c1", "reward_source": "mcp_client"}, {**base, "id": "c2", "reward_source": "imported"}]
    )
    assert text.count(UNVERIFIED_CASE_NOTE) == 1
    assert text.index(UNVERIFIED_CASE_NOTE) < text.index('<case id="c2"')
