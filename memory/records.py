"""Typed records that cross module boundaries: plan steps, case views, logged candidates, attempts.

They are `TypedDict`s, so what travels stays plain JSON (graph state, checkpoints, the experience
log, MCP replies) while readers get names a type checker knows. Each is built in one function here.
"""

from __future__ import annotations

from typing import Any, TypedDict


class PlanStep(TypedDict):
    """One subtask of a plan, numbered from 1."""

    id: int
    description: str


class CaseView(TypedDict):
    """A past case as shown to the planner (and returned in the run's output)."""

    id: str
    question: str
    plan: list[Any]
    answer: str
    label: str
    reward: float | None
    reward_source: str
    similarity: float
    score: float | None


class LoggedCandidate(TypedDict, total=False):
    """One case a selection chose from, as the experience log keeps it for policy training."""

    case_id: str
    question: str
    similarity: float
    score: float | None
    label: str
    reward: float | None
    reward_source: str
    times_retrieved: int
    retrieved_successes: int
    retrieved_failures: int
    shown: bool
    propensity: float
    # Learned mode: this question's earlier outcomes with this case (a bandit feature).
    pair_successes: float
    pair_failures: float


class RetrievalSummary(TypedDict, total=False):
    """How the run's cases were chosen (graph state ``retrieval``)."""

    selector: str
    policy_version: str | None
    note: str | None
    candidates: int


class Attempt(TypedDict):
    """The outcome of one attempt at a case's task (a case keeps a short log of them)."""

    id: str
    retrieval_id: str | None
    reward: float | None
    label: str
    reward_source: str
    answer: str
    at: float


def case_view(case: Any, similarity: float, score: float | None) -> CaseView:
    """The planner's view of a `memory.cases.Case` found at ``similarity``."""
    return {
        "id": case.id,
        "question": case.question,
        "plan": case.plan,
        "answer": case.answer,
        "label": case.label,
        "reward": case.reward,
        "reward_source": case.reward_source,
        "similarity": round(float(similarity), 6),
        "score": None if score is None else round(float(score), 6),
    }


def logged_candidate(
    case: Any, similarity: float, score: float | None, *, shown: bool, propensity: float
) -> LoggedCandidate:
    """Everything a policy's features need about one candidate, as it was at selection time.

    The question is kept so a policy can be trained from the log alone when the bank is not at hand;
    ``propensity`` is the exact probability that the case was shown (off-policy evaluation).
    """
    return {
        "case_id": case.id,
        "question": case.question,
        "similarity": similarity,
        "score": score,
        "label": case.label,
        "reward": case.reward,
        # Where the label came from (human, ground-truth judge, self-judge): a policy feature.
        "reward_source": case.reward_source,
        "times_retrieved": case.times_retrieved,
        "retrieved_successes": case.retrieved_successes,
        "retrieved_failures": case.retrieved_failures,
        "shown": shown,
        "propensity": propensity,
    }


def shown_summary(cases: list[Any]) -> list[dict[str, Any]]:
    """The shown cases as an eval record keeps them: id, label and similarity."""
    return [{"id": c.get("id"), "label": c.get("label"), "similarity": c.get("similarity")} for c in cases]
