"""Learning from everyday runs: self-judgement, people's feedback, one case per question, the floor.

Against the scripted OpenAI-compatible server, through the real graph, case bank and CLI.
"""

from __future__ import annotations

import json
import re

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from typer.testing import CliRunner

from evals.sim.openai_server import final
from graph.builder import compile_graph
from graph.cli import app
from memory.bank import CaseBank
from memory.experience import ExperienceLog
from nodes.resources import Resources

runner = CliRunner()
QUESTION = "What is the capital city of France?"


def self_verdict(correct: bool, confidence: float = 0.9, rationale: str = "supported by the results") -> str:
    return json.dumps({"correct": correct, "confidence": confidence, "rationale": rationale})


async def run(ctx, payload, thread_id, saver=None):
    resources = Resources(ctx)
    graph = compile_graph(saver or InMemorySaver(), resources=resources)
    try:
        return await graph.ainvoke(payload, {"configurable": {"thread_id": thread_id}}, context=ctx)
    finally:
        await resources.aclose()


def ask(*args: str):
    result = runner.invoke(app, ["ask", *args])
    assert result.exit_code == 0, result.output
    thread = re.search(r"thread (\w+)", result.output)[1]
    return result, thread


@pytest.mark.anyio
async def test_reask_without_ground_truth_shows_the_self_judged_first_case_and_keeps_one_case(
    ctx, llm_server, embedder
):
    llm_server.script("planner", final("Paris"), final("Paris"))
    llm_server.script("judge", self_verdict(True, 0.8), self_verdict(True, 0.9))

    first = await run(ctx, {"question": QUESTION}, "first")
    assert first["label"] == "positive" and first["reward_source"] == "self_judge"
    assert first["judge_confidence"] == 0.8
    judge_prompt = llm_server.requests_for("judge")[0]["messages"][-1]["content"]
    assert "Question: " + QUESTION in judge_prompt and "Plan:" in judge_prompt and "Answer: Paris" in judge_prompt

    second = await run(ctx, {"question": QUESTION}, "second")
    assert [c["id"] for c in second["cases"]] == [first["case_id"]]
    shown = second["cases"][0]
    assert shown["label"] == "positive" and shown["reward_source"] == "self_judge"
    prompt = llm_server.requests_for("planner")[-1]["messages"][-1]["content"]
    assert "Label from: the agent's self-judgement" in prompt

    bank = CaseBank(ctx.bank_path, embedder=embedder)
    assert second["case_id"] == first["case_id"] and bank.count() == 1
    case = bank.get(first["case_id"])
    assert case.attempts == 2 and [a["id"] for a in case.attempt_log] == ["first", "second"]
    assert [a["reward"] for a in case.attempt_log] == [1.0, 1.0] and case.attempt_log[-1]["answer"] == "Paris"
    assert case.judge_confidence == 0.9 and case.attempt_id == "second"
    # The experience log's candidates carry where each label came from (a policy feature).
    rec = ExperienceLog(ctx.experience_path).get(second["retrieval_id"])
    assert rec["candidates"][0]["reward_source"] == "self_judge"


@pytest.mark.anyio
async def test_a_rerun_of_the_same_thread_counts_one_attempt(ctx, llm_server, embedder):
    llm_server.script("planner", final("Paris"), final("Paris"))
    llm_server.script("judge", self_verdict(True), self_verdict(True))
    saver = InMemorySaver()
    await run(ctx, {"question": QUESTION}, "same", saver)
    out = await run(ctx, {"question": QUESTION}, "same", saver)
    case = CaseBank(ctx.bank_path, embedder=embedder).get(out["case_id"])
    assert case.attempts == 1 and len(case.attempt_log) == 1


@pytest.mark.anyio
async def test_self_judge_that_fails_keeps_the_answer(ctx, llm_server, monkeypatch):
    monkeypatch.setattr(ctx, "max_retries", 0)
    llm_server.script("planner", final("Paris"))  # no judge reply scripted: the endpoint answers 500
    out = await run(ctx, {"question": QUESTION}, "judge-down")
    assert out["answer"] == "Paris" and out["label"] == "unknown" and out["case_written"]
    assert any("self-judge failed" in e for e in out["errors"])


@pytest.mark.anyio
async def test_feedback_input_on_the_thread_relabels_the_case(ctx, llm_server, embedder):
    llm_server.script("planner", final("Lyon"), final("Paris"))
    llm_server.script("judge", self_verdict(True), self_verdict(True))
    saver = InMemorySaver()
    out = await run(ctx, {"question": QUESTION}, "fb", saver)
    assert out["label"] == "positive"

    relabelled = await run(ctx, {"feedback": {"good": False, "note": "Lyon is not the capital"}}, "fb", saver)
    assert relabelled["label"] == "negative" and relabelled["reward_source"] == "human"
    assert relabelled["judge_rationale"] == "Lyon is not the capital"
    assert llm_server.pending("planner") == 1  # nothing was re-run: the second planner reply is unused
    bank = CaseBank(ctx.bank_path, embedder=embedder)
    case = bank.get(out["case_id"])
    assert (
        case.label == "negative" and case.reward_source == "human" and case.attempt_log[0]["reward_source"] == "human"
    )
    outcome = ExperienceLog(ctx.experience_path).get(out["retrieval_id"])
    assert outcome["reward"] == 0.0 and outcome["reward_source"] == "human"

    # A later, self-judged re-ask does not overwrite the person's label.
    again = await run(ctx, {"question": QUESTION}, "fb-2")
    assert again["cases"][0]["label"] == "negative" and again["cases"][0]["reward_source"] == "human"
    case = bank.get(out["case_id"])
    assert case.label == "negative" and case.reward_source == "human" and case.answer == "Lyon"
    assert case.attempts == 2 and case.attempt_log[-1]["reward_source"] == "self_judge"

    with pytest.raises(ValueError, match="feedback must be"):
        await run(ctx, {"feedback": {"good": "perhaps"}}, "fb", saver)


@pytest.mark.anyio
async def test_feedback_corrects_the_counters_of_the_cases_that_run_showed(ctx, llm_server, embedder):
    """The shown cases were counted with the judge's verdict; a person's verdict replaces it there too."""
    llm_server.script("planner", final("Paris"), final("Lyon"))
    llm_server.script("judge", self_verdict(True), self_verdict(True))
    first = await run(ctx, {"question": QUESTION}, "first")
    saver = InMemorySaver()
    second = await run(ctx, {"question": QUESTION}, "second", saver)
    assert [c["id"] for c in second["cases"]] == [first["case_id"]]
    bank = CaseBank(ctx.bank_path, embedder=embedder)

    def counters():
        case = bank.get(first["case_id"])
        return case.times_retrieved, case.retrieved_successes, case.retrieved_failures

    assert counters() == (1, 1, 0)  # shown once, in a run the self-judge passed
    await run(ctx, {"feedback": {"good": False, "note": "Lyon is not the capital"}}, "second", saver)
    assert counters() == (1, 0, 1)
    await run(ctx, {"feedback": "good"}, "second", saver)  # a person may change their mind
    assert counters() == (1, 1, 0)
    await run(ctx, {"feedback": "good"}, "second", saver)  # the same verdict again moves nothing
    assert counters() == (1, 1, 0)


def test_cli_feedback_bad_flips_the_label_and_the_next_ask_shows_it(agent_env, llm_server):
    llm_server.script("planner", final("Lyon"), final("Paris"))
    llm_server.script("judge", self_verdict(True), self_verdict(True))
    first, thread = ask(QUESTION, "--mcp-config", "")
    assert "judge" in first.output and "self_judge" in first.output
    assert "cases 0 shown" in first.output and "no judged case in this namespace yet" in first.output

    fb = runner.invoke(app, ["feedback", thread, "--bad", "--note", "Lyon is not the capital"])
    assert fb.exit_code == 0, fb.output
    assert "negative (human)" in fb.stdout

    second, _ = ask(QUESTION, "--mcp-config", "")
    assert re.search(r"negative\s+1\.00\s+human", second.output), second.output
    prompt = llm_server.requests_for("planner")[-1]["messages"][-1]["content"]
    assert 'label="negative"' in prompt and "Label from: a person's feedback" in prompt

    good = runner.invoke(app, ["feedback", re.search(r"case-\w+", second.output)[0], "--good"])
    assert good.exit_code == 0 and "positive (human)" in good.stdout

    missing = runner.invoke(app, ["feedback", "no-such-thread", "--bad"])
    assert missing.exit_code == 1 and "no run found" in missing.output and "Traceback" not in missing.output
    neither = runner.invoke(app, ["feedback", thread])
    assert neither.exit_code == 2 and "--good or --bad" in neither.output


def test_unrelated_question_shows_no_case_and_says_why(agent_env, llm_server):
    llm_server.script("planner", final("Paris"), final("6"))
    llm_server.script("judge", self_verdict(True), self_verdict(True))
    ask(QUESTION, "--mcp-config", "")
    unrelated, _ = ask("What is 3+3?", "--mcp-config", "")
    assert "cases 0 shown" in unrelated.output
    assert "min_similarity" in unrelated.output
    prompt = llm_server.requests_for("planner")[-1]["messages"][-1]["content"]
    assert "<case" not in prompt


def test_ask_without_self_judge_leaves_the_case_unlabelled(agent_env, llm_server):
    llm_server.script("planner", final("Paris"))
    result, _ = ask(QUESTION, "--mcp-config", "", "--no-self-judge", "--json")
    state = json.loads(result.stdout)
    assert state["label"] == "unknown" and state["reward_source"] == "none" and state["case_written"]
    assert not llm_server.requests_for("judge")
