"""`execute` node: the executor works on the current subtask with the tools bound."""

from __future__ import annotations

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from graph.context import Context
from graph.state import State
from nodes import prompts
from nodes.models import ModelReplyError, add_usage, ainvoke, text_of
from nodes.resources import Resources


def _record(state: State, result: str, status: str, steps: int) -> dict:
    """Close the current subtask: store its result and move to the next one."""
    step = state.plan[state.subtask_index]
    return {
        "subtask_results": [
            *state.subtask_results,
            {
                "id": step["id"],
                "cycle": state.cycle,
                "description": step["description"],
                "result": result,
                "status": status,
                "steps": steps,
            },
        ],
        "subtask_index": state.subtask_index + 1,
        "messages": [],
        "executor_steps": 0,
    }


async def execute(state: State, runtime: Runtime[Context], resources: Resources) -> dict:
    """One executor step: a tool request (routed to `tools`) or the subtask's result."""
    ctx = Context.resolve(runtime.context)
    step = state.plan[state.subtask_index]
    messages = list(state.messages)
    if not messages:
        messages = [
            SystemMessage(prompts.EXECUTOR_SYSTEM),
            HumanMessage(
                prompts.EXECUTOR_TASK.format(
                    question=state.question,
                    results_block=prompts.format_results(state.subtask_results),
                    subtask=step["description"],
                )
            ),
        ]
    if state.executor_steps >= ctx.max_executor_steps:
        last = next((m for m in reversed(messages) if isinstance(m, AIMessage) and text_of(m)), None)
        partial = f" Last output: {text_of(last)}" if last else ""
        note = prompts.EXECUTOR_STEP_CAP.format(steps=ctx.max_executor_steps) + partial
        return {
            **_record(state, note, "step_cap", state.executor_steps),
            "errors": [*state.errors, f"subtask {step['id']}: {note}"],
        }
    toolbox = resources.toolbox(ctx)
    tools = await toolbox.tools() if toolbox else []
    model = resources.chat_model(ctx, "executor")
    bound = model.bind_tools(tools) if tools else model
    try:
        reply: AIMessage = await ainvoke(bound, messages)
    except ModelReplyError as exc:
        note = f"the executor's reply could not be read: {exc}"
        return {
            **_record(state, note, "error", state.executor_steps + 1),
            "errors": [*state.errors, f"subtask {step['id']}: {note}"],
        }
    usage = add_usage(state.usage, reply, ctx.executor_model)
    # Calls whose arguments are not valid JSON land in invalid_tool_calls; `tools` answers them
    # with an error so the model can retry, instead of the subtask ending with no text.
    if reply.tool_calls or reply.invalid_tool_calls:
        return {
            "messages": [*messages, reply],
            "executor_steps": state.executor_steps + 1,
            "usage": usage,
        }
    result = text_of(reply).strip() or "(the executor returned no text)"
    return {**_record(state, result, "done", state.executor_steps + 1), "usage": usage}
