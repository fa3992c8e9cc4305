"""Human approval of sensitive tool calls: the thread's policy and the record of each decision.

The policy (which tools need approval) is bound to the thread when the run starts and kept in its
state, so a resume from any client (CLI, SDK, Studio) applies it even when that client sends no
settings. A resume may add tools to the policy, never remove them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

APPROVE_WORDS = ("approve", "approved", "yes", "y", "true")


def is_sensitive(tool_name: str, sensitive: list[str]) -> bool:
    """A tool is sensitive if named exactly, or if its server prefix (``code_``) is listed."""
    return any(
        tool_name == s or (s.endswith("_") and tool_name.startswith(s)) or tool_name.startswith(f"{s}_")
        for s in sensitive
    )


def bind_policy(bound: list[str] | None, requested: list[str] | None) -> list[str]:
    """The thread's sensitive tools: what it was started with plus anything a later run adds."""
    merged = list(bound or [])
    for name in requested or []:
        if name and name not in merged:
            merged.append(name)
    return merged


def read_decision(decision: Any, call_id: str) -> tuple[bool, str]:
    """Read a human decision: a bool, "approve"/"reject", {"approved": bool} or {call_id: bool}.

    Anything that does not say "approve" for this call is a rejection: a malformed answer must
    never run a tool a person was asked about.
    """
    reason = ""
    if isinstance(decision, dict):
        reason = str(decision.get("reason") or "")
        if call_id in decision:
            decision = decision[call_id]
        elif "approved" in decision:
            decision = decision["approved"]
        else:
            return False, reason or "the answer did not name this call"
    if isinstance(decision, bool):
        return decision, reason
    if isinstance(decision, str):
        return decision.strip().lower() in APPROVE_WORDS, reason
    return False, reason or f"unreadable answer {decision!r}"


def decided_by(decision: Any, configurable: dict[str, Any]) -> str:
    """Who answered: the ``by`` field of the answer, else the caller's user id, else unknown."""
    if isinstance(decision, dict) and decision.get("by"):
        return str(decision["by"])[:200]
    for key in ("user_id", "langgraph_auth_user_id"):
        if configurable.get(key):
            return str(configurable[key])[:200]
    return "unknown"


def decision_record(call: Mapping[str, Any], approved: bool, by: str, reason: str, cycle: int) -> dict[str, Any]:
    """One decision as kept in the state and the experience log."""
    return {
        "tool_call_id": call.get("id"),
        "tool": call["name"],
        "args": call.get("args") or {},
        "approved": approved,
        "by": by,
        "at": time.time(),
        "reason": reason,
        "cycle": cycle,
    }
