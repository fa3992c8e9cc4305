"""Every prompt the agent sends, in one place. Nodes format these; they hold no prompt text."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from memory.limits import PROMPT_CASE_CHARS, cut, share

PLANNER_SYSTEM = """You are the planner of a research agent. You solve the user's task by writing a plan \
of subtasks that an executor with tools carries out, then answering from the results.

Reply with JSON only, in exactly one of two forms:
1. A plan, when more information is needed:
   {"plan": [{"id": 1, "description": "<one self-contained subtask>"}, ...]}
2. The final answer, when the results (or your knowledge) suffice:
   {"final_answer": "<short, direct answer>"}

Keep plans short (1-4 subtasks). Each description must make sense on its own, without the others. \
Past cases, when shown, are earlier tasks with the plans that were tried: imitate what worked \
(positive cases) and avoid what failed (negative cases). Each case says where its label came from: \
a person (most trusted), a judge that compared the answer with a reference answer, or the agent's own \
self-judgement without a reference (least trusted: it may be wrong)."""

PLANNER_TASK = """{cases_block}Question: {question}
{results_block}
Cycle {cycle} of {max_cycles}.{last_cycle_note} Reply with the JSON plan or the JSON final answer."""

CASES_HEADER_POSITIVE = "Past cases that worked (positive):"
CASES_HEADER_NEGATIVE = "Past cases that failed (negative):"
CASE_BLOCK = """<case id="{id}" label="{label}">
Question: {question}
Plan: {plan}
Answer: {answer}
Label from: {label_source}
</case>"""
# How the planner is told where a case's label came from (`Case.reward_source`).
LABEL_SOURCES = {
    "human": "a person's feedback",
    "ground_truth_judge": "a judge with the reference answer",
    "exact_match": "exact match with the reference answer",
    "self_judge": "the agent's self-judgement (no reference answer)",
    "imported": "an imported record",
    "mcp_client": "another agent's own report through the memory server (unverified)",
}

UNVERIFIED_CASE_NOTE = "(Added by a client of the memory server; its plan and outcome are not verified.)"

RESULTS_HEADER = "Results of the subtasks so far:"
RESULT_ITEM = "[{id}] {description}\n=> {result}"
LAST_CYCLE_NOTE = " This is the last cycle: prefer a final answer."

PLAN_REPAIR = """Your reply could not be used: {error}
Reply again with JSON only: either {{"plan": [{{"id": 1, "description": "..."}}]}} or {{"final_answer": "..."}}."""

EXECUTOR_SYSTEM = """You are the executor of a research agent. Carry out the one subtask you are given, \
using the tools when they help. When done, reply with the result in plain text (no tool call): the \
facts found, with numbers and names exact. If the subtask cannot be done, say why."""

EXECUTOR_TASK = """Overall question (for context): {question}
{results_block}
Your subtask: {subtask}"""

EXECUTOR_STEP_CAP = "Step limit of {steps} reached without a result."

FINALIZE_SYSTEM = """You write the final answer of a research agent from the results its executor \
gathered. Answer the question directly and briefly (a name, number, date or short phrase when \
possible). If the results do not settle it, give your best answer."""

FINALIZE_TASK = """Question: {question}
{results_block}
Final answer:"""

JUDGE_SYSTEM = """You grade answers. Given a question, the reference answers (any one of them is \
correct) and a predicted answer, decide whether the prediction means the same as a reference: \
ignore wording, case and format; a prediction that contradicts or hedges between answers is wrong.
Reply with JSON only: {"correct": true|false, "rationale": "<one sentence>"}"""

JUDGE_TASK = """Question: {question}
Reference answers: {references}
Predicted answer: {answer}"""

SELF_JUDGE_SYSTEM = """You grade a research agent's run when no reference answer exists. From the \
question, the plan, what the subtasks and tools returned, and the final answer, decide whether the \
answer is correct: it answers what was asked, it is supported by the results (or is well-established \
knowledge), and nothing in the results contradicts it. An unsupported guess, a hedge between answers, a \
refusal or "I do not know" is not correct. Give your confidence that your verdict is right.
Reply with JSON only: {"correct": true|false, "confidence": <0.0 to 1.0>, "rationale": "<one sentence>"}"""

SELF_JUDGE_TASK = """Question: {question}
Plan: {plan}
{results_block}{tools_block}
Answer: {answer}"""
TOOLS_HEADER = "Tool calls:"
TOOL_ITEM = "- {name}({args}) [{status}] -> {result}"


def format_cases(cases: Sequence[Mapping[str, Any]], case_chars: int = PROMPT_CASE_CHARS) -> str:
    """Positive then negative cases, each in a tagged block; empty when none.

    Args:
        cases: The shown cases (``id``, ``label``, ``question``, ``plan``, ``answer``).
        case_chars: Most characters of one case's question, plan and answer together; the
            longest fields are cut first (0: no cap).

    """
    if not cases:
        return ""
    blocks = []
    for header, label in ((CASES_HEADER_POSITIVE, "positive"), (CASES_HEADER_NEGATIVE, "negative")):
        chosen = [c for c in cases if c.get("label") == label]
        if not chosen:
            continue
        blocks.append(header)
        for case in chosen:
            fields = [
                str(case["question"]),
                json.dumps({"plan": case.get("plan", [])}, ensure_ascii=False),
                str(case.get("answer") or "(none)"),
            ]
            if case_chars > 0:
                fields = [cut(f, n) for f, n in zip(fields, share([len(f) for f in fields], case_chars), strict=True)]
            if case.get("reward_source") == "mcp_client":
                # Written and scored by another agent through the memory server: say so.
                fields[2] += "\n" + UNVERIFIED_CASE_NOTE
            blocks.append(
                CASE_BLOCK.format(
                    id=case["id"],
                    label=label,
                    question=fields[0],
                    plan=fields[1],
                    answer=fields[2],
                    label_source=LABEL_SOURCES.get(case.get("reward_source") or "", "unknown"),
                )
            )
    return "\n".join(blocks) + "\n\n" if blocks else ""


def format_results(results: list[dict[str, Any]], limit: int = 1500) -> str:
    """Subtask results so far; each truncated so long tool output cannot crowd out the task."""
    if not results:
        return ""
    items = [
        RESULT_ITEM.format(id=r["id"], description=r["description"], result=_truncate(r["result"], limit))
        for r in results
    ]
    return RESULTS_HEADER + "\n" + "\n".join(items) + "\n"


def format_tool_calls(calls: list[dict[str, Any]], last: int = 10, limit: int = 300) -> str:
    """The run's last tool calls with truncated results, for the self-judge; empty when none."""
    if not calls:
        return ""
    items = [
        TOOL_ITEM.format(
            name=c.get("name"),
            args=_truncate(json.dumps(c.get("args"), ensure_ascii=False, default=str), 200),
            status=c.get("status", "ok"),
            result=_truncate(c.get("result", ""), limit),
        )
        for c in calls[-last:]
    ]
    return TOOLS_HEADER + "\n" + "\n".join(items) + "\n"


def _truncate(text: str, limit: int) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit] + f" … [{len(text) - limit} more characters]"
