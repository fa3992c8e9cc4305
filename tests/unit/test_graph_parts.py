"""Pure units of the graph: output parsing, routing, context, tool config. No network, no models."""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import AIMessage

from graph.context import Context
from graph.state import State
from mcp_servers.toolbox import ToolConfigError, load_connections
from nodes.json_output import extract_json_object
from nodes.judge import parse_verdict
from nodes.plan import parse_planner_reply
from nodes.prompts import format_cases
from nodes.routing import route_after_plan
from nodes.tools import _approved, is_sensitive


@pytest.mark.parametrize(
    "text",
    [
        '{"plan": [{"id": 1, "description": "a"}]}',
        'Here you go:\n```json\n{"plan": [{"id": 1, "description": "a"}]}\n```\nGood luck!',
        'I will plan. {"plan": [{"id": 7, "description": "a"},]} That is all.',
        '{"plan": ["a"]}',
    ],
)
def test_plan_is_found_in_noisy_text(text):
    reply = parse_planner_reply(text, max_steps=5)
    assert reply.steps == [{"id": 1, "description": "a"}] and reply.answer is None


def test_final_answer_and_plan_precedence():
    assert parse_planner_reply('{"final_answer": " 42 "}', 5).answer == "42"
    assert parse_planner_reply('{"answer": 7}', 5).answer == "7"
    both = parse_planner_reply('{"final_answer": "x", "plan": [{"description": "y"}]}', 5)
    assert both.answer is None and both.steps == [{"id": 1, "description": "y"}]


def test_plan_is_capped_at_max_steps():
    text = json.dumps({"plan": [{"id": i, "description": f"s{i}"} for i in range(10)]})
    assert len(parse_planner_reply(text, 3).steps) == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("just prose", "no JSON object"),
        ('{"plan": []}', "non-empty list"),
        ('{"plan": [{"id": 1}]}', "no description"),
        ('{"final_answer": ""}', "empty"),
        ('{"final_answer": {"x": 1}}', "must be text"),
        ('{"thoughts": "hmm"}', 'neither "plan" nor "final_answer"'),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_unusable_planner_replies_say_why(text, message):
    with pytest.raises(ValueError, match=message):
        parse_planner_reply(text, 5)


def test_json_extraction_respects_strings_with_braces():
    assert extract_json_object('prefix {"a": "} not the end {", "b": 1} suffix') == {"a": "} not the end {", "b": 1}


def test_verdict_parsing():
    assert parse_verdict('{"correct": true, "rationale": "same"}') == (True, "same")
    assert parse_verdict('```json\n{"correct": "no"}\n```') == (False, "")
    with pytest.raises(ValueError):
        parse_verdict('{"correct": "maybe"}')


def test_cases_are_split_positive_then_negative():
    cases = [
        {"id": "c2", "label": "negative", "question": "Q2", "plan": [], "answer": "A2"},
        {"id": "c1", "label": "positive", "question": "Q1", "plan": [{"id": 1, "description": "d"}], "answer": "A1"},
    ]
    text = format_cases(cases)
    assert text.index('<case id="c1" label="positive">') < text.index('<case id="c2" label="negative">')
    assert "worked (positive)" in text and "failed (negative)" in text
    assert format_cases([]) == ""


def test_route_after_plan():
    assert route_after_plan(State(question="q", answer="a", status="answered")) == "judge"
    assert route_after_plan(State(question="q", plan=[{"id": 1, "description": "d"}], route="execute")) == "execute"
    assert route_after_plan(State(question="q", route="finalize")) == "finalize"


def test_sensitive_tools_and_decisions():
    assert is_sensitive("code_run_python", ["code"])
    assert is_sensitive("code_run_python", ["code_run_python"])
    assert not is_sensitive("codex_run", ["code"])
    assert not is_sensitive("math_add", ["code"])
    assert _approved(True, "c1") == (True, "")
    assert _approved("reject", "c1")[0] is False
    assert _approved({"c1": False, "c2": True}, "c2")[0] is True
    assert _approved({"approved": False, "reason": "no"}, "c1") == (False, "no")


def test_context_defaults_env_fallback_and_validation(monkeypatch):
    ctx = Context()
    assert ctx.k == 4 and ctx.max_cycles == 3 and ctx.memory_mode == "similarity"
    monkeypatch.setenv("MEMENTO_K", "7")
    monkeypatch.setenv("MEMENTO_SENSITIVE_TOOLS", "code,documents_read")
    monkeypatch.setenv("MEMENTO_EVAL_MODE", "true")
    ctx = Context()
    assert ctx.k == 7 and ctx.sensitive_tools == ["code", "documents_read"] and ctx.eval_mode is True
    assert Context(k=2).k == 2  # an explicit value beats the environment
    assert Context.resolve({"k": 3, "unknown": 1}).k == 3
    assert Context.resolve(None).k == 7
    with pytest.raises(ValueError, match="memory_mode"):
        Context(memory_mode="psychic")


def test_context_never_holds_the_api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    ctx = Context()
    assert ctx.api_key == "sk-secret"
    assert "sk-secret" not in json.dumps(ctx.__dict__)


def test_tool_config_loading(tmp_path, monkeypatch):
    monkeypatch.setenv("SEARX", "http://127.0.0.1:9999")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    cfg = tmp_path / "servers.json"
    cfg.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "math": {"command": "python", "args": ["-m", "mcp_servers.math"], "env": {"URL": "${SEARX}"}},
                    "remote": {"transport": "http", "url": "http://127.0.0.1:8123/mcp"},
                    "off": {"command": "x", "disabled": True},
                }
            }
        )
    )
    conns = load_connections(cfg)
    assert set(conns) == {"math", "remote"}
    assert conns["math"]["env"]["URL"] == "http://127.0.0.1:9999"
    assert "OPENAI_API_KEY" not in conns["math"]["env"]  # servers never inherit the agent's keys
    assert conns["remote"]["transport"] == "streamable_http"
    for bad in (
        "{",
        json.dumps({"mcpServers": {"a b": {"command": "x"}}}),
        json.dumps({"mcpServers": {"s": {"transport": "stdio"}}}),
    ):
        cfg.write_text(bad)
        with pytest.raises(ToolConfigError):
            load_connections(cfg)
    with pytest.raises(ToolConfigError, match="not found"):
        load_connections(tmp_path / "missing.json")


def test_state_is_json_plain_after_a_step():
    state = State(question="q", messages=[AIMessage("x")])
    plain = {k: v for k, v in state.__dict__.items() if k != "messages"}
    json.dumps(plain)
