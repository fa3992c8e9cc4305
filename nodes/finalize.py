"""`finalize` node: a forced answer synthesised from what the subtasks found."""

from __future__ import annotations

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from graph.context import Context
from graph.state import State
from nodes import prompts
from nodes.json_output import extract_json_object
from nodes.models import ModelReplyError, add_usage, ainvoke, text_of
from nodes.resources import Resources


async def finalize(state: State, runtime: Runtime[Context], resources: Resources) -> dict:
    """Answer from the gathered results after the last cycle (or a planner failure)."""
    ctx = Context.resolve(runtime.context)
    if not state.subtask_results:
        # Nothing was found and the planner gave no answer: record the failure, invent nothing.
        return {"status": "failed", "answer": None, "errors": [*state.errors, "no answer: nothing was gathered"]}
    model = resources.chat_model(ctx, "planner")
    try:
        reply = await ainvoke(
            model,
            [
                SystemMessage(prompts.FINALIZE_SYSTEM),
                HumanMessage(
                    prompts.FINALIZE_TASK.format(
                        question=state.question, results_block=prompts.format_results(state.subtask_results)
                    )
                ),
            ],
        )
    except ModelReplyError as exc:
        return {"status": "failed", "answer": None, "errors": [*state.errors, f"finalize: {exc}"]}
    answer = text_of(reply).strip()
    for prefix in ("final answer:", "answer:"):
        if answer.lower().startswith(prefix):
            answer = answer[len(prefix) :].strip()
    usage = add_usage(state.usage, reply, ctx.planner_model)
    try:
        data = extract_json_object(answer)
    except ValueError:
        data = None
    if data is not None and ("plan" in data or "final_answer" in data):
        # Models trained on the planner format sometimes answer in it; a plan is never an answer.
        answer = str(data.get("final_answer") or "").strip() if "plan" not in data else ""
    if not answer:
        return {
            "status": "failed",
            "answer": None,
            "usage": usage,
            "errors": [*state.errors, "finalize returned no text"],
        }
    return {"status": "answered", "answer": answer, "usage": usage}
