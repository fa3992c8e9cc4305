"""The whole Memento loop over real HTTP (ChatOpenAI -> scripted server), real Chroma, real MCP."""

from __future__ import annotations

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from evals.sim.openai_server import final, plan, tool_call, verdict
from graph.builder import compile_graph
from memory.bank import CaseBank
from nodes.resources import Resources

pytestmark = pytest.mark.anyio


async def run(ctx, payload, thread_id, checkpointer=None):
    resources = Resources(ctx)  # each run its own clients, as each CLI command has
    graph = compile_graph(checkpointer or InMemorySaver(), resources=resources)
    try:
        return await graph.ainvoke(payload, {"configurable": {"thread_id": thread_id}}, context=ctx)
    finally:
        await resources.aclose()


async def test_two_subtasks_tool_call_judge_write_back_and_reuse(ctx, llm_server, thread_id, embedder):
    llm_server.script("planner", plan(["Compute 17 * 3 with the math tool", "Add 4 to the product"]), final("55"))
    llm_server.script(
        "executor",
        tool_call("math_evaluate", {"expression": "17*3"}),
        "17*3 = 51",
        tool_call("math_add", {"a": 51, "b": 4}),
        "51 + 4 = 55",
    )
    llm_server.script("judge", verdict(True, "55 equals the reference"))

    out = await run(
        ctx,
        {
            "question": "What is 17 times 3, plus 4?",
            "ground_truth": "55<|answer_split|>fifty-five",
            "task_id": "arith-1",
        },
        thread_id,
    )

    assert out["answer"] == "55"
    assert out["status"] == "answered"
    assert [s["description"] for s in out["plan"]] == ["Compute 17 * 3 with the math tool", "Add 4 to the product"]
    assert [r["result"] for r in out["subtask_results"]] == ["17*3 = 51", "51 + 4 = 55"]
    assert [c["name"] for c in out["tool_calls"]] == ["math_evaluate", "math_add"]
    assert "51" in out["tool_calls"][0]["result"]
    assert out["reward"] == 1.0 and out["label"] == "positive" and out["reward_source"] == "ground_truth_judge"
    assert out["judge_model"] == "judge" and "reference" in out["judge_rationale"]
    assert out["exact_match"] == 1.0 and out["f1"] == 1.0
    calls = {model: u["llm_calls"] for model, u in out["usage"]["by_model"].items()}
    assert calls == {"planner": 2, "executor": 4, "judge": 1} and out["usage"]["llm_calls"] == 7
    assert out["usage"]["prompt_tokens"] == sum(u["prompt_tokens"] for u in out["usage"]["by_model"].values()) > 0
    # The executor saw the tool result before answering (real tool round trip).
    second_exec = llm_server.requests_for("executor")[1]
    assert second_exec["messages"][-1]["role"] == "tool" and "51" in second_exec["messages"][-1]["content"]
    assert "tools" in llm_server.requests_for("executor")[0]

    bank = CaseBank(ctx.bank_path, embedder=embedder)
    case = bank.get(out["case_id"])
    assert case is not None and case.reward == 1.0 and case.label == "positive"
    assert case.plan == out["plan"] and case.answer == "55" and case.task_id == "arith-1"
    assert "math_evaluate" in case.trajectory_summary and case.judge_model == "judge"

    # A similar question now sees that case as a positive example in the planner prompt.
    llm_server.script("planner", final("60"))
    llm_server.script("judge", verdict(True))
    out2 = await run(ctx, {"question": "What is 19 times 3, plus 3?", "ground_truth": "60"}, thread_id + "b")
    assert [c["id"] for c in out2["cases"]] == [case.id]
    prompt = llm_server.requests_for("planner")[-1]["messages"][-1]["content"]
    assert f'<case id="{case.id}" label="positive">' in prompt
    assert "Question: What is 17 times 3, plus 4?" in prompt
    assert "Label from: a judge with the reference answer" in prompt
    assert bank.get(case.id).times_retrieved == 1
    assert bank.count() == 2


async def test_malformed_plan_is_repaired_once(ctx, llm_server, thread_id):
    llm_server.script("planner", "Sure! Here's my plan: {plan: [oops", '```json\n{"final_answer": "Paris",}\n```')
    llm_server.script("judge", verdict(True))
    out = await run(ctx, {"question": "Capital of France?", "ground_truth": "Paris"}, thread_id)
    assert out["answer"] == "Paris" and out["reward"] == 1.0
    repair = llm_server.requests_for("planner")[1]["messages"][-1]["content"]
    assert "could not be used" in repair


async def test_unusable_planner_is_a_recorded_failure_not_a_crash(ctx, llm_server, thread_id):
    llm_server.script("planner", "no json here", '{"thoughts": "still no plan"}')
    llm_server.script("judge")  # the judge must not be asked: there is no answer
    out = await run(ctx, {"question": "Capital of Peru?", "ground_truth": "Lima"}, thread_id)
    assert out["status"] == "failed" and out["answer"] is None
    assert any("planner output unusable" in e for e in out["errors"])
    assert out["reward"] == 0.0 and out["label"] == "negative"
    assert out["case_written"] is True
    assert not llm_server.requests_for("judge")


async def test_plan_is_never_returned_as_the_answer(ctx, llm_server, thread_id):
    # A reply with both keys is a plan; finalize's plan-shaped reply is not an answer either.
    llm_server.script(
        "planner", '{"plan": [{"id": 1, "description": "look"}], "final_answer": "x"}', plan(["again"]), plan(["more"])
    )
    llm_server.script("executor", "found a", "found b", "found c")
    llm_server.script("planner", plan(["still planning"]))
    out = await run(ctx, {"question": "Q?"}, thread_id)
    assert out["status"] == "failed" and out["answer"] is None
    assert out["cycle"] == 3 and len(out["subtask_results"]) == 3
    assert out["reward"] is None and out["label"] == "unknown"


async def test_unknown_tool_and_failing_tool_go_back_as_errors(ctx, llm_server, thread_id):
    ctx.self_judge = False  # grading is not under test here
    llm_server.script("planner", plan(["use tools"]), final("done"))
    llm_server.script(
        "executor",
        tool_call("web_teleport", {"to": "mars"}),
        tool_call("math_evaluate", {"expression": "1/"}),
        "tools failed, reporting",
    )
    out = await run(ctx, {"question": "Try tools"}, thread_id)
    assert [c["status"] for c in out["tool_calls"]] == ["error", "error"]
    assert "unknown tool 'web_teleport'" in out["tool_calls"][0]["result"]
    assert "math_evaluate" in out["tool_calls"][0]["result"]  # lists the real tools
    third = llm_server.requests_for("executor")[2]["messages"]
    assert third[-1]["role"] == "tool" and "Error" in third[-1]["content"]
    assert out["answer"] == "done"


async def test_executor_that_never_finishes_is_capped(ctx, llm_server, thread_id):
    ctx.self_judge = False  # grading is not under test here
    ctx.max_executor_steps = 3
    llm_server.script("planner", plan(["loop forever"]), final("gave up"))
    llm_server.respond_with("executor", lambda req: tool_call("math_add", {"a": 1, "b": 1}))
    out = await run(ctx, {"question": "Loop"}, thread_id)
    assert len(llm_server.requests_for("executor")) == 3
    assert out["subtask_results"][0]["status"] == "step_cap"
    assert any("Step limit of 3" in e for e in out["errors"])
    assert out["answer"] == "gave up"


async def test_max_cycles_forces_finalize(ctx, llm_server, thread_id):
    ctx.self_judge = False  # grading is not under test here
    ctx.max_cycles = 2
    llm_server.script("planner", plan(["a"]), plan(["b"]), "The answer is 42.")
    llm_server.script("executor", "ra", "rb")
    out = await run(ctx, {"question": "Meaning?"}, thread_id)
    assert out["cycle"] == 2 and out["answer"] == "The answer is 42."
    finalize_prompt = llm_server.requests_for("planner")[-1]["messages"][-1]["content"]
    assert "ra" in finalize_prompt and "rb" in finalize_prompt and "Final answer:" in finalize_prompt


async def test_empty_question_is_refused(ctx, thread_id):
    with pytest.raises(ValueError, match="question is empty"):
        await run(ctx, {"question": "   "}, thread_id)


async def test_no_ground_truth_and_self_judge_off_means_unknown_reward(ctx, llm_server, thread_id):
    ctx.self_judge = False
    llm_server.script("planner", final("blue"))
    out = await run(ctx, {"question": "Favourite colour?"}, thread_id)
    assert out["reward"] is None and out["label"] == "unknown" and out["reward_source"] == "none"
    assert not llm_server.requests_for("judge")


async def test_self_judge_without_ground_truth(ctx, llm_server, thread_id):
    ctx.self_judge = True
    llm_server.script("planner", final("blue"))
    llm_server.script("judge", verdict(False, "unsupported"))
    out = await run(ctx, {"question": "Favourite colour?"}, thread_id)
    assert out["reward"] == 0.0 and out["reward_source"] == "self_judge"


async def test_malformed_judge_falls_back_to_exact_match(ctx, llm_server, thread_id):
    llm_server.script("planner", final("The Paris"))
    llm_server.script("judge", "I think it's right")
    out = await run(ctx, {"question": "Capital of France?", "ground_truth": "Paris"}, thread_id)
    assert out["reward"] == 1.0 and out["reward_source"] == "exact_match"
    assert any("judge reply unusable" in e for e in out["errors"])


async def test_eval_mode_leakage_guard(ctx, llm_server, thread_id):
    llm_server.script("planner", final("Lima"), final("Lima"), final("Lima"))
    llm_server.script("judge", verdict(True), verdict(True), verdict(True))
    await run(ctx, {"question": "What is the capital of Peru?", "ground_truth": "Lima", "task_id": "peru"}, thread_id)
    ctx.eval_mode = True
    same = await run(
        ctx, {"question": "What is the capital of Peru?", "ground_truth": "Lima", "task_id": "peru-2"}, thread_id + "b"
    )
    assert same["cases"] == []  # near-identical question excluded
    ctx.eval_mode = False
    shown = await run(
        ctx, {"question": "What is the capital of Peru?", "ground_truth": "Lima", "task_id": "peru-3"}, thread_id + "c"
    )
    assert len(shown["cases"]) >= 1
