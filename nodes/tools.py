"""`tools` node: runs the executor's tool calls through MCP, pausing for approval where configured."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from langchain_core.messages import AIMessage, ToolMessage
from langgraph.config import get_config
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from graph.context import Context
from graph.state import State
from nodes.approvals import bind_policy, decided_by, decision_record, is_sensitive, read_decision
from nodes.resources import Resources

__all__ = ["is_sensitive", "tools"]

_RESULT_LIMIT = 8000


def _approved(decision: Any, call_id: str) -> tuple[bool, str]:
    """Read a human decision (kept for callers of the old name; see `read_decision`)."""
    return read_decision(decision, call_id)


async def tools(state: State, runtime: Runtime[Context], resources: Resources) -> dict:
    """Execute every tool call of the last executor message; failures go back as error results."""
    ctx = Context.resolve(runtime.context)
    last = state.messages[-1] if state.messages else None
    if not isinstance(last, AIMessage) or not (last.tool_calls or last.invalid_tool_calls):
        return {}
    calls = last.tool_calls
    # The thread's own policy applies whatever settings the resuming client sent (or omitted).
    policy = bind_policy(state.sensitive_tools, ctx.sensitive_tools)
    sensitive = [c for c in calls if is_sensitive(c["name"], policy)]
    configurable = get_config().get("configurable", {})
    verdicts: dict[str | None, tuple[bool, str]] = {}
    decisions: list[dict[str, Any]] = []
    if sensitive:
        # On resume this node re-runs from the top and interrupt() returns the human's answer;
        # no tool ran before the pause, so none runs twice.
        decision = interrupt(
            {
                "type": "tool_approval",
                "question": state.question,
                "tool_calls": [{"id": c["id"], "name": c["name"], "args": c["args"]} for c in sensitive],
                "how_to_answer": 'resume with true/false, "approve"/"reject", {"approved": bool, "by": "<who>"} '
                "or {tool_call_id: bool}",
            }
        )
        by = decided_by(decision, configurable)
        for call in sensitive:
            ok, reason = read_decision(decision, call.get("id") or "")
            verdicts[call.get("id")] = (ok, reason)
            decisions.append(decision_record(call, ok, by, reason, state.cycle))
        # Recorded before any approved call runs, so a crash in a tool cannot lose the decision.
        # (SQLite blocks: off the event loop, which the LangGraph server checks.)
        await asyncio.to_thread(
            _log_decisions, resources, ctx, configurable.get("thread_id"), state.retrieval_id, decisions
        )
    toolbox = resources.toolbox(ctx)
    results: list[ToolMessage] = []
    trace: list[dict[str, Any]] = []
    for call in calls:
        call_id = call.get("id") or f"call-{len(state.tool_calls) + len(trace)}"
        if call in sensitive:
            ok, reason = verdicts[call.get("id")]
            if not ok:
                msg = ToolMessage(
                    content=f"Error: a human rejected this call to {call['name']}{': ' + reason if reason else ''}",
                    tool_call_id=call_id,
                    name=call["name"],
                    status="error",
                )
                results.append(msg)
                trace.append(_trace(state, call, msg, approved=False))
                continue
        if toolbox is None:
            msg = ToolMessage(
                content=f"Error: no tools are configured; {call['name']} is unavailable",
                tool_call_id=call_id,
                name=call["name"],
                status="error",
            )
        else:
            msg = await toolbox.call(call["name"], call.get("args") or {}, call_id)
        if len(str(msg.content)) > _RESULT_LIMIT:
            msg.content = (
                str(msg.content)[:_RESULT_LIMIT] + f"\n… [truncated {len(str(msg.content)) - _RESULT_LIMIT} characters]"
            )
        results.append(msg)
        trace.append(_trace(state, call, msg, approved=True if call in sensitive else None))
    for bad in last.invalid_tool_calls:
        msg = _invalid_call_result(bad, f"call-{len(state.tool_calls) + len(trace)}")
        results.append(msg)
        trace.append(
            _trace(
                state, {"name": msg.name, "args": {"unparsed": str(bad.get("args") or "")[:300]}}, msg, approved=None
            )
        )
    update: dict[str, Any] = {"messages": [*state.messages, *results], "tool_calls": [*state.tool_calls, *trace]}
    if decisions:
        update["approvals"] = [*state.approvals, *decisions]
    if policy != state.sensitive_tools:
        update["sensitive_tools"] = policy
    return update


def _log_decisions(
    resources: Resources,
    ctx: Context,
    thread_id: str | None,
    retrieval_id: str | None,
    decisions: list[dict[str, Any]],
) -> None:
    """Every human decision goes to the experience log too (kept even if the thread is deleted)."""
    log = resources.experience(ctx)  # opened here, off the event loop: SQLite blocks
    for d in decisions:
        log.log_approval(thread_id=thread_id or "", retrieval_id=retrieval_id, **d)


def _invalid_call_result(bad: Mapping[str, Any], fallback_id: str) -> ToolMessage:
    """An error result for a call whose arguments did not parse, so the model can retry it."""
    name = str(bad.get("name") or "(no tool name)")[:100]
    args = str(bad.get("args") or "")
    shown = args if len(args) <= 300 else args[:300] + "…"
    # langchain's error repeats the whole argument string; keep only the decoder's complaint.
    reason = str(bad.get("error") or "unparsable").rsplit("Received", 1)[-1].strip()[:200]
    return ToolMessage(
        content=f"Error: the arguments of this call to {name} are not a valid JSON object ({reason}): "
        f"{shown!r}. Call the tool again with a JSON object of arguments.",
        # The reply carries this id to the endpoint; every call id must get an answer.
        tool_call_id=bad.get("id") or fallback_id,
        name=name,
        status="error",
    )


def _trace(state: State, call: Mapping[str, Any], msg: ToolMessage, approved: bool | None) -> dict[str, Any]:
    return {
        "cycle": state.cycle,
        "subtask": state.plan[state.subtask_index]["id"] if state.subtask_index < len(state.plan) else None,
        "name": call["name"],
        "args": call.get("args") or {},
        "status": msg.status,
        "result": str(msg.content)[:300],
        "approved": approved,
    }
