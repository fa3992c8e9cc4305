"""Broken model replies end as recorded failures or error results, never as a crash of the run."""

from __future__ import annotations

import time

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from openai import APITimeoutError

from evals.sim.openai_server import error, final, plan, verdict
from graph.builder import compile_graph
from graph.context import Context
from nodes.resources import Resources
from tests.fakes.raw_http import RawServer, completion

pytestmark = pytest.mark.anyio


async def run(ctx, payload, thread_id):
    resources = Resources(ctx)
    graph = compile_graph(InMemorySaver(), resources=resources)
    try:
        return await graph.ainvoke(payload, {"configurable": {"thread_id": thread_id}}, context=ctx)
    finally:
        await resources.aclose()


def nested(depth: int) -> str:
    return '{"plan": ' + "[" * depth + "]" * depth + "}"


async def test_deeply_nested_planner_json_is_a_recorded_failure(ctx, llm_server, thread_id):
    llm_server.script("planner", nested(5_000), nested(5_000))
    out = await run(ctx, {"question": "Capital of Peru?", "ground_truth": "Lima"}, thread_id)
    assert out["status"] == "failed" and out["answer"] is None
    assert any("nested too deeply" in e for e in out["errors"])
    assert out["case_written"] is True and out["reward"] == 0.0


async def test_invalid_utf8_from_the_planner_is_retried_then_recorded(agent_env, thread_id):
    with RawServer(answer=lambda req: completion(req, "x").replace(b'"x"', b'"\xff\xfe"')) as raw:
        out = await run(Context(base_url=raw.url, max_retries=0), {"question": "Q?", "ground_truth": "A"}, thread_id)
        assert raw.posts == 2  # one retry, then a recorded failure
    assert out["status"] == "failed"
    assert any("not valid UTF-8" in e for e in out["errors"])
    assert out["case_written"] is True


async def test_invalid_utf8_from_the_executor_fails_the_subtask_not_the_run(agent_env, thread_id):
    def answer(req):
        if req["model"] == "planner":
            planned = any(m["role"] == "user" and "could not be read" in str(m.get("content")) for m in req["messages"])
            return completion(req, final("partial") if planned else plan(["look it up"]))
        if req["model"] == "executor":
            return b'{"id": "x", "choices": [{"message": {"content": "\xc3\x28"}}]}'
        return completion(req, verdict(False))

    with RawServer(answer=answer) as raw:
        out = await run(Context(base_url=raw.url, max_retries=0), {"question": "Q?", "ground_truth": "A"}, thread_id)
    result = out["subtask_results"][0]
    assert result["status"] == "error" and "not valid UTF-8" in result["result"]
    assert out["answer"] == "partial" and out["case_written"] is True


async def test_judge_http_error_falls_back_to_exact_match(ctx, llm_server, thread_id):
    ctx.max_retries = 0
    llm_server.script("planner", final("Paris"))
    llm_server.script("judge", error(500, "judge backend down"))
    out = await run(ctx, {"question": "Capital of France?", "ground_truth": "Paris"}, thread_id)
    assert out["reward"] == 1.0 and out["reward_source"] == "exact_match" and out["label"] == "positive"
    assert any("judge call failed" in e and "500" in e for e in out["errors"])
    assert out["case_written"] is True


async def test_tool_call_with_invalid_json_arguments_goes_back_as_an_error(ctx, llm_server, thread_id):
    bad = {
        "content": "",
        "tool_calls": [
            {"id": "call_bad", "type": "function", "function": {"name": "math_add", "arguments": '{"a": 1, "b":'}}
        ],
    }
    llm_server.script("planner", plan(["add numbers"]), final("2"))
    llm_server.script("executor", bad, "1 + 1 = 2")
    out = await run(ctx, {"question": "1+1?"}, thread_id)
    assert out["subtask_results"][0]["result"] == "1 + 1 = 2"
    assert [(c["name"], c["status"]) for c in out["tool_calls"]] == [("math_add", "error")]
    retry = llm_server.requests_for("executor")[1]["messages"]
    assert retry[-2]["tool_calls"][0]["id"] == "call_bad"
    assert retry[-1]["role"] == "tool" and retry[-1]["tool_call_id"] == "call_bad"
    assert "not a valid JSON object" in retry[-1]["content"] and '{"a": 1, "b":' in retry[-1]["content"]


async def test_hung_endpoint_is_bounded_by_the_context_timeout(agent_env, thread_id):
    assert Context().request_timeout == 60.0 and Context().max_retries == 2
    with RawServer(hang=30) as raw:
        started = time.monotonic()
        with pytest.raises(APITimeoutError):
            await run(Context(base_url=raw.url, request_timeout=0.5, max_retries=1), {"question": "Q?"}, thread_id)
        assert time.monotonic() - started < 5
        assert raw.posts == 2


def test_timeout_settings_are_validated_and_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("MEMENTO_REQUEST_TIMEOUT", "7.5")
    monkeypatch.setenv("MEMENTO_MAX_RETRIES", "0")
    ctx = Context()
    assert (ctx.request_timeout, ctx.max_retries) == (7.5, 0)
    with pytest.raises(ValueError, match="request_timeout"):
        Context(request_timeout=0)
    with pytest.raises(ValueError, match="max_retries"):
        Context(max_retries=-1)


async def test_damaged_bank_at_retrieval_is_reported_and_the_task_still_runs(ctx, llm_server, thread_id, monkeypatch):
    import nodes.retrieve_cases
    from memory.bank import BankError

    def damaged(*args, **kwargs):
        raise BankError("the vector index ... holds 1 of its 1278 cases; rebuild it with `memento memory repair`")

    monkeypatch.setattr(nodes.retrieve_cases, "select_cases", damaged)
    llm_server.script("planner", final("Lima"))
    llm_server.script("judge", verdict(True))
    out = await run(ctx, {"question": "Capital of Peru?", "ground_truth": "Lima"}, thread_id)
    assert out["answer"] == "Lima" and out["cases"] == []
    assert any("no cases shown" in e and "memento memory repair" in e for e in out["errors"])


async def test_tool_arguments_that_are_not_an_object_fail_the_subtask_not_the_run(ctx, llm_server, thread_id):
    # JSON, but a list: langchain cannot build the message at all (a pydantic error before).
    bad = {
        "content": "",
        "tool_calls": [
            {"id": "call_list", "type": "function", "function": {"name": "math_add", "arguments": "[1, 2]"}}
        ],
    }
    llm_server.script("planner", plan(["add numbers"]), final("3"))
    llm_server.script("executor", bad)
    out = await run(ctx, {"question": "1+2?"}, thread_id)
    result = out["subtask_results"][0]
    assert result["status"] == "error" and "chat message format" in result["result"]
    assert out["answer"] == "3"
