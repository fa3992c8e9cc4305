"""The `Case` record: one past task, its plan, its outcome and how it has been used since."""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

Label = Literal["positive", "negative", "unknown"]
RewardSource = Literal["ground_truth_judge", "exact_match", "self_judge", "human", "imported", "mcp_client", "none"]

LABELS: tuple[str, ...] = ("positive", "negative", "unknown")
REWARD_SOURCES: tuple[str, ...] = (
    "ground_truth_judge",
    "exact_match",
    "self_judge",
    "human",
    "imported",
    "mcp_client",  # reported by a client of the memory MCP server: its own claim, never verified
    "none",
)
# A reward at or above this counts as success when a label has to be derived from it.
POSITIVE_THRESHOLD = 0.5
# How far each source of a label is trusted: a label is only replaced by one of at least the same
# rank, so a person's verdict survives later self-judged re-asks (see `memory.outcomes`).
SOURCE_RANK: dict[str, int] = {
    "none": 0,
    # A memory-server client's own report: no more trusted than the agent's self-check.
    "mcp_client": 1,
    "self_judge": 1,
    "imported": 2,
    "exact_match": 2,
    "ground_truth_judge": 2,
    "human": 3,
}
# Attempts kept per case (the count itself is never truncated).
MAX_ATTEMPT_LOG = 20


def normalise_question(question: str) -> str:
    """Fold case and whitespace so trivially different spellings share an id."""
    return re.sub(r"\s+", " ", question.strip().lower())


def case_id_for(namespace: str, question: str, task_id: str | None = None) -> str:
    """Deterministic id: the same task written twice (retry, resume) upserts one case.

    Args:
        namespace: The bank namespace the case lives in.
        question: The task's question.
        task_id: A caller-supplied task id (dataset row id, thread id); when given it
            distinguishes repeated attempts at the same question in different tasks.

    """
    key = json.dumps([namespace, normalise_question(question), task_id or ""])
    return "case-" + hashlib.sha256(key.encode()).hexdigest()[:24]


_SURROGATE = re.compile(r"[\ud800-\udfff]")


def clean_text(value: Any) -> Any:
    r"""Replace lone surrogates (from ``"\ud800"`` escapes in model or file JSON) with U+FFFD.

    They cannot be encoded as UTF-8, so Chroma, SQLite and every file writer would fail on them.
    Lists and dicts are cleaned element by element; other values pass through.
    """
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [clean_text(v) for v in value]
    if isinstance(value, dict):
        return {clean_text(k): clean_text(v) for k, v in value.items()}
    return value


def label_for_reward(reward: float | None) -> Label:
    """Map a reward to the planner-facing label."""
    if reward is None:
        return "unknown"
    return "positive" if reward >= POSITIVE_THRESHOLD else "negative"


def parse_plan(plan: Any) -> list[dict[str, Any]]:
    """Coerce a stored plan (list, ``{"plan": [...]}`` dict or JSON string) to a step list."""
    if plan is None or plan == "":
        return []
    if isinstance(plan, str):
        try:
            plan = json.loads(plan)
        except json.JSONDecodeError:
            return [{"id": 1, "description": plan.strip()}]
    if isinstance(plan, dict):
        plan = plan.get("plan", [])
    if not isinstance(plan, list):
        raise ValueError(f"plan must be a list of steps, got {type(plan).__name__}")
    steps = []
    for i, step in enumerate(plan, start=1):
        if isinstance(step, dict):
            steps.append({"id": step.get("id", i), "description": str(step.get("description", ""))})
        else:
            steps.append({"id": i, "description": str(step)})
    return steps


def now() -> float:
    """Wall-clock seconds; one place so tests and records agree on the unit."""
    return time.time()


@dataclass(kw_only=True)
class Case:
    """A past task as the planner will see it, plus the bookkeeping the policy learns from."""

    question: str
    namespace: str = "default"
    plan: list[Any] = field(default_factory=list)
    answer: str = ""
    reward: float | None = None
    label: Label = "unknown"
    reward_source: RewardSource = "none"
    judge_model: str | None = None
    judge_rationale: str | None = None
    judge_confidence: float | None = None
    trajectory_summary: str = ""
    task_id: str | None = None
    source: str | None = None
    models: dict[str, str] = field(default_factory=dict)
    created_at: float = field(default_factory=now)
    updated_at: float = field(default_factory=now)
    times_retrieved: int = 0
    retrieved_successes: int = 0
    retrieved_failures: int = 0
    last_retrieved_at: float | None = None
    # Who wrote the case when it was not the agent itself: "mcp:<client>" for the memory MCP
    # server's clients, which may only replace cases carrying their own name.
    created_by: str = ""
    # Re-asking the same question updates this case: how often it was attempted, the latest
    # attempts (thread, retrieval, reward, source, answer) and which attempt the plan shown is from.
    attempts: int = 0
    attempt_log: list[dict[str, Any]] = field(default_factory=list)
    attempt_id: str | None = None
    id: str = ""

    def __post_init__(self) -> None:
        for name in (
            "question",
            "answer",
            "judge_model",
            "judge_rationale",
            "trajectory_summary",
            "task_id",
            "source",
            "plan",
            "models",
            "created_by",
            "attempt_log",
            "attempt_id",
        ):
            setattr(self, name, clean_text(getattr(self, name)))
        if not self.question or not self.question.strip():
            raise ValueError("a case needs a non-empty question")
        if self.label not in LABELS:
            raise ValueError(f"label must be one of {LABELS}, got {self.label!r}")
        if self.reward_source not in REWARD_SOURCES:
            raise ValueError(f"reward_source must be one of {REWARD_SOURCES}, got {self.reward_source!r}")
        if self.reward is not None:
            self.reward = float(self.reward)
            if not math.isfinite(self.reward):
                raise ValueError(f"reward must be a finite number, got {self.reward!r}")
            # A judged case without an explicit label gets the label its reward implies.
            if self.label == "unknown":
                self.label = label_for_reward(self.reward)
        self.plan = parse_plan(self.plan)
        if not self.id:
            self.id = case_id_for(self.namespace, self.question, self.task_id)

    def to_dict(self) -> dict[str, Any]:
        """JSON-plain dict (our export format)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Case:
        """Build from our export format, ignoring unknown keys from newer versions."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def embedding_text(self) -> str:
        """What gets embedded: the question alone, so retrieval matches tasks to tasks."""
        return self.question

    def plan_text(self) -> str:
        """The plan as the compact JSON the planner itself writes."""
        return json.dumps({"plan": self.plan}, ensure_ascii=False)

    def to_metadata(self) -> dict[str, Any]:
        """Flatten for Chroma metadata (scalars only, no None)."""
        meta: dict[str, Any] = {
            "namespace": self.namespace,
            "label": self.label,
            "reward": -1.0 if self.reward is None else float(self.reward),
            "has_reward": self.reward is not None,
            "reward_source": self.reward_source,
            "created_at": float(self.created_at),
            "updated_at": float(self.updated_at),
            "times_retrieved": int(self.times_retrieved),
            "retrieved_successes": int(self.retrieved_successes),
            "retrieved_failures": int(self.retrieved_failures),
            # Chroma metadata cannot hold None: 0.0 means "never retrieved".
            "last_retrieved_at": float(self.last_retrieved_at or 0.0),
            # The full record rides along as JSON so a get never needs a second store.
            "record": json.dumps(self.to_dict(), ensure_ascii=False),
        }
        if self.task_id:
            meta["task_id"] = self.task_id
        if self.source:
            meta["source"] = self.source
        return meta

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> Case:
        """Inverse of `to_metadata`; usage counters in metadata win (they are updated in place)."""
        case = cls.from_dict(json.loads(meta["record"]))
        case.times_retrieved = int(meta.get("times_retrieved", case.times_retrieved))
        case.retrieved_successes = int(meta.get("retrieved_successes", case.retrieved_successes))
        case.retrieved_failures = int(meta.get("retrieved_failures", case.retrieved_failures))
        case.last_retrieved_at = float(meta.get("last_retrieved_at") or 0.0) or case.last_retrieved_at
        return case

    @property
    def success_rate(self) -> float | None:
        """Share of judged tasks that succeeded after being shown this case (None if never)."""
        judged = self.retrieved_successes + self.retrieved_failures
        return self.retrieved_successes / judged if judged else None


# The fields that hold text, read off the record itself so a new one is never left out (an import
# checks their types before writing: `memory.io`).
STRING_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Case) if f.type in ("str", "str | None"))
