"""Routers: each returns the next node's name; the `Literal` types let Studio draw the edges."""

from __future__ import annotations

from typing import Literal

from langchain_core.messages import AIMessage
from langgraph.runtime import Runtime

from graph.context import Context
from graph.state import State


def route_start(state: State) -> Literal["feedback", "retrieve_cases"]:
    """A run whose input carries ``feedback`` labels the thread's last run; anything else is a task."""
    # An empty value (a form field left blank in Studio) is no feedback.
    return "feedback" if state.feedback else "retrieve_cases"


def route_after_plan(state: State) -> Literal["execute", "finalize", "judge"]:
    """A final answer goes to the judge, a plan to the executor, an unusable reply to finalize."""
    if state.answer is not None and state.status == "answered":
        return "judge"
    if state.route == "execute" and state.plan:
        return "execute"
    return "finalize"


def route_after_execute(state: State, runtime: Runtime[Context]) -> Literal["tools", "execute", "plan", "finalize"]:
    """Tool requests go to `tools`; then the next subtask; then a new cycle or the forced answer."""
    last = state.messages[-1] if state.messages else None
    if isinstance(last, AIMessage) and (last.tool_calls or last.invalid_tool_calls):
        return "tools"
    if state.subtask_index < len(state.plan):
        return "execute"
    ctx = Context.resolve(runtime.context)
    return "plan" if state.cycle < ctx.max_cycles else "finalize"
