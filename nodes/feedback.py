"""`feedback` node: a person's verdict on a thread's finished run, sent as the thread's next input.

A served graph (LangGraph server, Studio, SDK) takes feedback as a new run on the same thread
whose input is only ``{"feedback": {"good": false, "note": "..."}}``: the graph starts here instead
of at `retrieve_cases`, relabels the run's case as a human label (which outranks every judge),
logs it to the experience log as the outcome of the run's retrieval, and ends. `memento feedback
THREAD` sends the same input.
"""

from __future__ import annotations

from typing import Any

from langgraph.config import get_config
from langgraph.runtime import Runtime

from graph.context import Context
from graph.state import State
from memory.outcomes import apply_feedback
from nodes.resources import Resources

_GOOD = {"good": True, "positive": True, "correct": True, "bad": False, "negative": False, "wrong": False}


def parse_feedback(value: Any) -> tuple[bool, str | None]:
    """``(good, note)`` from a feedback input.

    Accepts ``{"good": bool, "note": str}``, ``{"label": "good"|"bad", ...}`` or the plain strings
    ``"good"``/``"bad"``.

    Raises:
        ValueError: No verdict can be read from it.

    """
    note = None
    if isinstance(value, str):
        verdict: Any = value
    elif isinstance(value, dict):
        verdict = value.get("good", value.get("label"))
        note = value.get("note") or None
    else:
        verdict = None
    if isinstance(verdict, str):
        verdict = _GOOD.get(verdict.strip().lower())
    if not isinstance(verdict, bool):
        raise ValueError(
            'feedback must be {"good": true|false, "note": "..."} (or "good"/"bad"), got ' + repr(value)[:200]
        )
    return verdict, None if note is None else str(note)


def feedback(state: State, runtime: Runtime[Context], resources: Resources) -> dict:
    """Apply a person's feedback to this thread's case and outcome; nothing is re-run."""
    ctx = Context.resolve(runtime.context)
    good, note = parse_feedback(state.feedback)
    if not state.case_id:
        raise ValueError(
            "this thread has no stored case to give feedback on: send feedback on the thread of a "
            "finished run (with write_back on)"
        )
    thread = get_config().get("configurable", {}).get("thread_id")
    try:
        case = apply_feedback(
            resources.bank(ctx),
            resources.experience(ctx),
            state.case_id,
            good=good,
            note=note,
            namespace=ctx.namespace,
            attempt_id=thread,
            retrieval_id=state.retrieval_id,
            plan=state.plan,
            answer=state.answer or "",
        )
    except KeyError as exc:
        raise ValueError(
            f"{exc.args[0]}: send the feedback with the same context (namespace, bank) as the run"
        ) from None
    return {
        "feedback": None,
        "reward": case.reward,
        "label": case.label,
        "reward_source": case.reward_source,
        "judge_model": None,
        "judge_rationale": case.judge_rationale,
        "judge_confidence": None,
    }
