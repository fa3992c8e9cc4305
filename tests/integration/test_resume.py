"""Checkpointed runs: pause for approval, resume from a new process, write the case exactly once."""

from __future__ import annotations

import subprocess
import sys

import pytest

from evals.sim.openai_server import final, plan, tool_call, verdict
from graph.builder import compile_graph
from graph.persistence import open_checkpointer
from memory.bank import CaseBank
from nodes.resources import Resources
from tests.integration.conftest import POSTGRES_URL

pytestmark = pytest.mark.anyio


def memento(*args: str, env: dict, stdin: str = "") -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "graph", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def script_sensitive_run(llm_server) -> None:
    llm_server.script("planner", plan(["Compute 6*7"]), final("42"))
    llm_server.script("executor", tool_call("math_evaluate", {"expression": "6*7"}), "6*7 = 42")
    llm_server.script("judge", verdict(True))


@pytest.fixture(params=["sqlite", "postgres"])
def checkpoint_url(request, tmp_path, agent_env, monkeypatch):
    if request.param == "postgres":
        import psycopg

        try:
            psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
        except psycopg.OperationalError as exc:
            pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}")
        url = POSTGRES_URL
    else:
        url = str(tmp_path / "cp.sqlite")
    monkeypatch.setenv("MEMENTO_CHECKPOINT_URL", url)
    agent_env["MEMENTO_CHECKPOINT_URL"] = url
    return url


async def test_approval_pause_then_resume_in_new_process(
    ctx, llm_server, thread_id, checkpoint_url, agent_env, embedder
):
    ctx.sensitive_tools = ["math_evaluate"]
    agent_env["MEMENTO_SENSITIVE_TOOLS"] = "math_evaluate"
    script_sensitive_run(llm_server)
    config = {"configurable": {"thread_id": thread_id}}
    async with open_checkpointer(checkpoint_url) as saver:
        resources = Resources(ctx)
        graph = compile_graph(saver, resources=resources)
        result = await graph.ainvoke({"question": "What is 6*7?", "ground_truth": "42"}, config, context=ctx)
        await resources.aclose()
        assert "__interrupt__" in result
        request = result["__interrupt__"][0].value
        assert request["type"] == "tool_approval" and request["tool_calls"][0]["name"] == "math_evaluate"
        snapshot = await graph.aget_state(config)
        assert snapshot.next == ("tools",)

    bank = CaseBank(ctx.bank_path, embedder=embedder)
    assert bank.count() == 0

    # A different process picks the run up from the checkpoint and approves.
    proc = memento("ask", "--thread", thread_id, "--approve", env=agent_env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("42")
    assert "tool math_evaluate" in proc.stderr
    assert bank.count() == 1
    case_id = bank.list_cases()[0].id

    # Resuming a finished thread again changes nothing and duplicates nothing.
    again = memento("ask", "--thread", thread_id, env=agent_env)
    assert again.returncode == 0, again.stderr
    assert bank.count() == 1 and bank.list_cases()[0].id == case_id
    assert len(llm_server.requests_for("judge")) == 1


async def test_rejected_tool_call_reaches_the_model_as_error(ctx, llm_server, thread_id, tmp_path):
    from langgraph.types import Command

    ctx.sensitive_tools = ["math"]  # a server name covers all its tools
    llm_server.script("planner", plan(["Compute 6*7"]), final("unknown"))
    llm_server.script("executor", tool_call("math_evaluate", {"expression": "6*7"}), "not allowed to compute")
    llm_server.script("judge", verdict(False))
    config = {"configurable": {"thread_id": thread_id}}
    async with open_checkpointer(str(tmp_path / "cp.sqlite")) as saver:
        resources = Resources(ctx)
        graph = compile_graph(saver, resources=resources)
        first = await graph.ainvoke({"question": "What is 6*7?", "ground_truth": "42"}, config, context=ctx)
        assert first["__interrupt__"][0].value["tool_calls"][0]["name"] == "math_evaluate"
        out = await graph.ainvoke(Command(resume={"approved": False, "reason": "no maths today"}), config, context=ctx)
        await resources.aclose()
    assert out["tool_calls"][0]["approved"] is False and out["tool_calls"][0]["status"] == "error"
    tool_msg = llm_server.requests_for("executor")[1]["messages"][-1]
    assert tool_msg["role"] == "tool" and "rejected" in tool_msg["content"] and "no maths today" in tool_msg["content"]
    assert out["answer"] == "unknown" and out["reward"] == 0.0


async def test_write_back_crash_is_resumed_without_duplicate(
    ctx, llm_server, thread_id, tmp_path, monkeypatch, embedder
):
    """The bank fails during write_back: the case is spooled, the run resumes and writes it once."""
    llm_server.script("planner", final("Lima"))
    llm_server.script("judge", verdict(True))
    config = {"configurable": {"thread_id": thread_id}}
    import memory.bank

    calls = {"n": 0}
    real_upsert = memory.bank.CaseBank.upsert

    def broken_upsert(self, cases, **kw):
        calls["n"] += 1
        raise OSError("disk full")

    monkeypatch.setattr(memory.bank.CaseBank, "upsert", broken_upsert)
    async with open_checkpointer(str(tmp_path / "cp.sqlite")) as saver:
        resources = Resources(ctx)
        graph = compile_graph(saver, resources=resources)
        with pytest.raises(RuntimeError, match=r"pending_cases\.jsonl"):
            await graph.ainvoke({"question": "Capital of Peru?", "ground_truth": "Lima"}, config, context=ctx)
        assert calls["n"] == 3  # retried before giving up
        monkeypatch.setattr(memory.bank.CaseBank, "upsert", real_upsert)
        snapshot = await graph.aget_state(config)
        assert snapshot.next == ("write_back",)
        out = await graph.ainvoke(None, config, context=ctx)
    assert out["case_written"] is True
    bank = CaseBank(ctx.bank_path, embedder=embedder)
    assert bank.count() == 1
    assert len(llm_server.requests_for("judge")) == 1  # resumed at write_back, not rerun
