"""The whole graph in-process with fake chat models: no HTTP, no sockets, every model call recorded."""

from __future__ import annotations

import asyncio

from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from evals.sim.openai_server import final, plan, verdict
from graph.builder import compile_graph
from graph.context import Context
from memory.bank import CaseBank
from memory.embeddings import HashEmbedder
from nodes.resources import Resources
from tests.fakes.chat_model import FakeChatModel


def _ctx(tmp_path, **kw) -> Context:
    settings = {
        "planner_model": "planner",
        "executor_model": "executor",
        "judge_model": "judge",
        "bank_path": str(tmp_path / "bank"),
        "experience_path": str(tmp_path / "exp.sqlite"),
        "policy_path": str(tmp_path / "policy.pt"),
        "mcp_config": "",
        "min_similarity": 0.0,
    }
    return Context(**{**settings, **kw})


def _run(resources: Resources, ctx: Context, payload: dict, thread: str = "t1") -> dict:
    async def go() -> dict:
        graph = compile_graph(InMemorySaver(), resources=resources)
        try:
            return await graph.ainvoke(payload, {"configurable": {"thread_id": thread}}, context=ctx)
        finally:
            await resources.aclose()

    return asyncio.run(go())


def test_plan_execute_answer_judge_and_write_back(tmp_path):
    planner = FakeChatModel(replies=[plan(["Look up the capital of Peru"]), final("Lima")])
    executor = FakeChatModel(replies=["The capital of Peru is Lima."])
    judge = FakeChatModel(replies=[verdict(True, "matches")])
    ctx = _ctx(tmp_path)
    embedder = HashEmbedder(16)
    resources = Resources(
        ctx, embedder=embedder, chat_models={"planner": planner, "executor": executor, "judge": judge}
    )

    out = _run(resources, ctx, {"question": "What is the capital of Peru?", "ground_truth": "Lima"})

    assert out["answer"] == "Lima" and out["reward"] == 1.0 and out["label"] == "positive"
    assert out["case_written"] is True
    assert [s["description"] for s in out["plan"]] == ["Look up the capital of Peru"]
    assert out["subtask_results"][0]["result"] == "The capital of Peru is Lima."
    # Four model calls, each counted with its model's tokens (the fake reports 10 in, 5 out).
    assert out["usage"]["llm_calls"] == 4 and out["usage"]["prompt_tokens"] == 40
    assert out["usage"]["by_model"]["planner"]["llm_calls"] == 2
    # What each role was asked: the executor its subtask (no tools configured), the judge the reference.
    assert "Look up the capital of Peru" in executor.last_text() and executor.calls[0]["tools"] == []
    assert "Lima" in judge.last_text()
    assert "The capital of Peru is Lima." in planner.last_text()  # the second plan call sees the result
    # The case is in the bank for the next task.
    stored = CaseBank(ctx.bank_path, embedder=embedder).list_cases()
    assert [c.question for c in stored] == ["What is the capital of Peru?"]


def test_the_fake_records_the_tools_it_was_bound_to():
    @tool
    def lookup(city: str) -> str:
        """Look a city up."""
        return f"{city}: capital"

    model = FakeChatModel(replies=["ok"])
    assert model.bind_tools([lookup]).invoke("Is Lima a capital?").content == "ok"
    assert model.calls[0]["tools"] == ["lookup"] and model.last_text() == "Is Lima a capital?"


def test_executor_tool_calls_go_to_the_tools_node_and_back(tmp_path):
    call = AIMessage(content="", tool_calls=[{"id": "c1", "name": "lookup", "args": {"city": "Lima"}}])
    planner = FakeChatModel(replies=[plan(["Check Lima"]), final("Lima")])
    executor = FakeChatModel(replies=[call, "Lima is a capital."])
    judge = FakeChatModel(replies=[verdict(True)])
    ctx = _ctx(tmp_path, memory_mode="none", write_back=False)
    resources = Resources(ctx, chat_models={"planner": planner, "executor": executor, "judge": judge})

    out = _run(resources, ctx, {"question": "Is Lima a capital?", "ground_truth": "Lima"})

    # No servers are configured, so the tools node answers the call with an error the model reads.
    assert out["tool_calls"][0]["name"] == "lookup" and out["tool_calls"][0]["status"] == "error"
    second = executor.calls[1]["messages"]
    assert second[-1].type == "tool" and "no tools are configured" in str(second[-1].content)
    assert out["answer"] == "Lima"


def test_a_second_task_is_shown_the_first_tasks_case(tmp_path):
    ctx = _ctx(tmp_path)
    embedder = HashEmbedder(16)
    first = Resources(
        ctx,
        embedder=embedder,
        chat_models={
            "planner": FakeChatModel(replies=[final("Lima")]),
            "judge": FakeChatModel(replies=[verdict(True)]),
        },
    )
    _run(first, ctx, {"question": "What is the capital of Peru?", "ground_truth": "Lima"}, "a")

    planner = FakeChatModel(replies=[final("Lima")])
    second = Resources(
        ctx, embedder=embedder, chat_models={"planner": planner, "judge": FakeChatModel(replies=[verdict(True)])}
    )
    out = _run(second, ctx, {"question": "What is the capital of Peru?", "ground_truth": "Lima"}, "b")

    assert [c["question"] for c in out["cases"]] == ["What is the capital of Peru?"]
    assert "Past cases that worked (positive):" in planner.last_text(0)
