"""Graph state: JSON-plain fields only.

No numpy scalars, tensors or clients, so every checkpointer and the LangGraph server can store it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

from langchain_core.messages import AnyMessage

from memory.records import CaseView, PlanStep, RetrievalSummary


class ModelUsage(TypedDict):
    """Token counts of one model (a role's model; evals price each separately)."""

    prompt_tokens: int
    completion_tokens: int
    llm_calls: int


class Usage(ModelUsage):
    """Token counts of a run: totals, and per model name."""

    by_model: dict[str, ModelUsage]


def new_usage() -> Usage:
    """Counters of a run that has made no model call yet."""
    return {"prompt_tokens": 0, "completion_tokens": 0, "llm_calls": 0, "by_model": {}}


@dataclass(kw_only=True)
class InputState:
    """What a caller sends: the task."""

    question: str = field(default="", metadata={"description": "The task to solve."})
    ground_truth: str | None = field(
        default=None,
        metadata={"description": "Reference answer(s), alternatives joined by <|answer_split|>; enables the judge."},
    )
    task_id: str | None = field(default=None, metadata={"description": "Stable task id (dataset row, ticket)."})
    source: str | None = field(default=None, metadata={"description": "Dataset or origin of the task."})
    feedback: dict[str, Any] | None = field(
        default=None,
        metadata={
            "description": "A person's verdict on this thread's finished run, sent alone on the same "
            'thread: {"good": true|false, "note": "..."}. Relabels its case; nothing is re-run.'
        },
    )


@dataclass(kw_only=True)
class State(InputState):
    """Everything the nodes read and write during one task."""

    # retrieve_cases
    cases: list[CaseView] = field(default_factory=list)
    retrieval: RetrievalSummary = field(default_factory=lambda: RetrievalSummary())
    retrieval_id: str | None = None
    # plan
    plan: list[PlanStep] = field(default_factory=list)
    plans: list[list[PlanStep]] = field(default_factory=list)
    cycle: int = 0
    # execute / tools: the executor conversation of the current subtask only
    subtask_index: int = 0
    messages: list[AnyMessage] = field(default_factory=list)
    executor_steps: int = 0
    subtask_results: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    # approvals: the thread's policy (bound at the start, so every resume applies it) and each
    # human decision (tool, approved, by whom, when)
    sensitive_tools: list[str] = field(default_factory=list)
    approvals: list[dict[str, Any]] = field(default_factory=list)
    # plan / finalize
    answer: str | None = None
    status: str = "running"
    route: str = ""
    errors: list[str] = field(default_factory=list)
    # judge
    reward: float | None = None
    label: str = "unknown"
    reward_source: str = "none"
    judge_model: str | None = None
    judge_rationale: str | None = None
    judge_confidence: float | None = None
    exact_match: float | None = None
    f1: float | None = None
    # write_back
    case_id: str | None = None
    case_written: bool = False
    # bookkeeping
    usage: Usage = field(default_factory=new_usage)
    started_at: float | None = None


@dataclass(kw_only=True)
class OutputState:
    """What a caller gets back."""

    question: str = ""
    answer: str | None = None
    status: str = "running"
    plan: list[PlanStep] = field(default_factory=list)
    subtask_results: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    approvals: list[dict[str, Any]] = field(default_factory=list)
    cases: list[CaseView] = field(default_factory=list)
    retrieval: RetrievalSummary = field(default_factory=lambda: RetrievalSummary())
    retrieval_id: str | None = None
    reward: float | None = None
    label: str = "unknown"
    reward_source: str = "none"
    judge_model: str | None = None
    judge_rationale: str | None = None
    judge_confidence: float | None = None
    exact_match: float | None = None
    f1: float | None = None
    case_id: str | None = None
    case_written: bool = False
    errors: list[str] = field(default_factory=list)
    usage: Usage | dict[str, Any] = field(default_factory=dict)
    cycle: int = 0
