"""`plan` node: the planner answers with a JSON plan of subtasks or with the final answer."""

from __future__ import annotations

from dataclasses import dataclass

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from graph.context import Context
from graph.state import State
from memory.records import PlanStep
from nodes import prompts
from nodes.json_output import extract_json_object
from nodes.models import ModelReplyError, add_usage, ainvoke, text_of
from nodes.resources import Resources

_ANSWER_KEYS = ("final_answer", "answer")


@dataclass
class PlannerReply:
    """A parsed planner reply: exactly one of ``steps`` or ``answer`` is set."""

    steps: list[PlanStep] | None = None
    answer: str | None = None


def parse_planner_reply(text: str, max_steps: int) -> PlannerReply:
    """Read a plan or a final answer out of planner text.

    A reply holding a plan is always a plan, even if it also has an answer key, so a plan can
    never be returned to the user as the answer.

    Raises:
        ValueError: The reply holds neither; the message is fed back to the planner.

    """
    data = extract_json_object(text)
    if "plan" in data:
        raw = data["plan"]
        if not isinstance(raw, list) or not raw:
            raise ValueError('"plan" must be a non-empty list of {"id", "description"} objects')
        steps: list[PlanStep] = []
        for i, step in enumerate(raw[:max_steps], start=1):
            if isinstance(step, str):
                description = step
            elif isinstance(step, dict):
                description = step.get("description") or step.get("task") or ""
            else:
                description = ""
            if not str(description).strip():
                raise ValueError(f"plan step {i} has no description")
            steps.append({"id": i, "description": str(description).strip()})
        return PlannerReply(steps=steps)
    for key in _ANSWER_KEYS:
        if key in data:
            answer = data[key]
            if isinstance(answer, dict | list):
                raise ValueError(f'"{key}" must be text, not {type(answer).__name__}')
            if answer is None or not str(answer).strip():
                raise ValueError(f'"{key}" is empty')
            return PlannerReply(answer=str(answer).strip())
    raise ValueError('the JSON has neither "plan" nor "final_answer"')


async def plan(state: State, runtime: Runtime[Context], resources: Resources) -> dict:
    """Ask the planner; one repair round-trip on malformed output, then a recorded failure."""
    ctx = Context.resolve(runtime.context)
    last = state.cycle + 1 >= ctx.max_cycles
    task = prompts.PLANNER_TASK.format(
        cases_block=prompts.format_cases(state.cases, ctx.case_prompt_chars),
        question=state.question,
        results_block=prompts.format_results(state.subtask_results),
        cycle=state.cycle + 1,
        max_cycles=ctx.max_cycles,
        last_cycle_note=prompts.LAST_CYCLE_NOTE if last else "",
    )
    messages = [SystemMessage(prompts.PLANNER_SYSTEM), HumanMessage(task)]
    model = resources.chat_model(ctx, "planner")
    usage = state.usage
    error = None
    for _attempt in range(2):
        try:
            reply: AIMessage = await ainvoke(model, messages)
        except ModelReplyError as exc:
            # Nothing readable came back: ask again once, as for a malformed plan.
            error = str(exc)
            continue
        usage = add_usage(usage, reply, ctx.planner_model)
        text = text_of(reply)
        try:
            parsed = parse_planner_reply(text, ctx.max_subtasks)
        except ValueError as exc:
            error = str(exc)
            messages = [*messages, AIMessage(text), HumanMessage(prompts.PLAN_REPAIR.format(error=error))]
            continue
        if parsed.answer is not None:
            return {"answer": parsed.answer, "status": "answered", "route": "judge", "usage": usage}
        return {
            "plan": parsed.steps,
            "plans": [*state.plans, parsed.steps],
            "cycle": state.cycle + 1,
            "subtask_index": 0,
            "messages": [],
            "executor_steps": 0,
            "route": "execute",
            "usage": usage,
        }
    return {
        "errors": [*state.errors, f"planner output unusable after one repair (cycle {state.cycle + 1}): {error}"],
        "route": "finalize",
        "usage": usage,
    }
