"""How a case's label and a retrieval's outcome change over time: re-asks, judges and people.

One case per question and namespace. Each attempt at it (a thread) is merged into that case:

* the attempt is counted once, however often its run is resumed (attempts are keyed by thread);
* the plan and answer the planner is shown, and their label, come from the attempt whose label is
  the most trusted (`memory.cases.SOURCE_RANK`: human > ground-truth judge > self-judge), the
  latest one among equals, so a person's verdict is never overwritten by a later self-judge;
* feedback from a person (`apply_feedback`) relabels the case and the attempt it names, replaces
  the outcome logged for that attempt's retrieval, and moves that outcome in the usage counters of
  the cases the retrieval showed.

The CLI (`memento feedback`), the graph's ``feedback`` input and the memory MCP server's
``report_outcome`` all go through these functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memory.cases import MAX_ATTEMPT_LOG, SOURCE_RANK, Case, clean_text, label_for_reward, now
from memory.experience import ExperienceLog
from memory.records import Attempt

# Fields that describe the attempt the planner is shown (its plan, its answer and their verdict).
_EXEMPLAR_FIELDS = (
    "plan",
    "answer",
    "reward",
    "label",
    "reward_source",
    "judge_model",
    "judge_rationale",
    "judge_confidence",
    "trajectory_summary",
    "models",
    "source",
)
# Outcomes reported through the memory MCP server are the caller's own verdict on its task.
_OUTCOME_RANK = {**SOURCE_RANK, "mcp": SOURCE_RANK["human"]}


def source_rank(source: str | None) -> int:
    """Trust of a reward source (unknown sources rank with ``none``)."""
    return _OUTCOME_RANK.get(source or "none", 0)


def attempt_record(
    attempt_id: str,
    *,
    retrieval_id: str | None,
    reward: float | None,
    label: str,
    reward_source: str,
    answer: str,
    limit: int = 300,
) -> Attempt:
    """One entry of a case's attempt log (the answer is truncated: the log is for bookkeeping).

    Its text is cleaned like the case's own fields (`memory.cases.clean_text`): the log is stored in
    the case's Chroma metadata, which rejects lone surrogates (from escapes in a model's JSON).
    """
    attempt: Attempt = clean_text(
        {
            "id": attempt_id,
            "retrieval_id": retrieval_id,
            "reward": reward,
            "label": label,
            "reward_source": reward_source,
            "answer": answer if len(answer) <= limit else answer[: limit - 1] + "…",
            "at": now(),
        }
    )
    return attempt


def merge_attempt(existing: Case | None, new: Case, attempt: Mapping[str, Any]) -> Case:
    """The case to store after ``attempt`` (whose plan and verdict ``new`` holds).

    Args:
        existing: The stored case of this question, if any.
        new: The case as this attempt alone would write it.
        attempt: Its `attempt_record`; ``attempt["id"]`` identifies it across resumes.

    Returns:
        ``new`` updated in place: the attempt counted once, the exemplar the most trusted one.

    """
    attempt = dict(attempt)
    if existing is None:
        new.attempts = max(new.attempts, 1)
        new.attempt_log = [attempt]
        new.attempt_id = attempt["id"]
        return new
    log = [dict(a) for a in existing.attempt_log]
    index = next((i for i, a in enumerate(log) if a.get("id") == attempt["id"]), None)
    if index is None:
        log.append(attempt)
        # A case stored before attempts were counted (or imported) stands for one attempt.
        attempts = max(existing.attempts, 1) + 1
    else:
        # A resumed run writes again: same attempt, so no new count; a person's label on it stays.
        old = log[index]
        if source_rank(old.get("reward_source")) > source_rank(attempt["reward_source"]):
            attempt = {**attempt, **{k: old[k] for k in ("reward", "label", "reward_source") if k in old}}
        log[index] = attempt
        attempts = max(existing.attempts, 1)
    if source_rank(existing.reward_source) > source_rank(new.reward_source):
        for name in _EXEMPLAR_FIELDS:
            setattr(new, name, getattr(existing, name))
        new.attempt_id = existing.attempt_id
    else:
        new.attempt_id = attempt["id"]
    new.attempts = attempts
    new.attempt_log = log[-MAX_ATTEMPT_LOG:]
    return new


def record_outcome(
    log: ExperienceLog, retrieval_id: str, *, reward: float | None, reward_source: str, label: str | None = None
) -> bool:
    """Log a task's outcome unless a more trusted one is already logged for its retrieval.

    Returns:
        Whether the outcome was written.

    """
    previous = log.get(retrieval_id)
    if previous is not None and source_rank(previous.get("reward_source")) > source_rank(reward_source):
        return False
    log.log_outcome(retrieval_id, reward=reward, label=label or label_for_reward(reward), reward_source=reward_source)
    return True


def apply_feedback(
    bank: Any,
    log: ExperienceLog | None,
    case_id: str,
    *,
    good: bool,
    note: str | None = None,
    namespace: str | None = None,
    attempt_id: str | None = None,
    retrieval_id: str | None = None,
    plan: list[Any] | None = None,
    answer: str | None = None,
) -> Case:
    """A person's verdict: label the case (and the attempt) good or bad, and log it as an outcome.

    Args:
        bank: The `memory.bank.CaseBank` holding the case.
        log: The experience log (None: the label only).
        case_id: The case to label.
        good: The verdict.
        note: Why, in the person's words (stored as the rationale).
        namespace: The case's namespace (default: the bank's).
        attempt_id: The attempt (thread) judged; default: the one the case shows.
        retrieval_id: That attempt's retrieval; default: looked up in the attempt log.
        plan: The attempt's plan, when the verdict is on an attempt the case does not show.
        answer: That attempt's answer.

    Returns:
        The updated case.

    Raises:
        KeyError: No such case in the namespace.

    """
    reward = 1.0 if good else 0.0
    found: dict[str, Any] = {"retrieval_id": retrieval_id}
    missing = f"no case {case_id!r} in namespace {namespace or bank.namespace!r}"

    def relabel(case: Case | None) -> Case:
        if case is None:  # deleted between the read below and the lock
            raise KeyError(missing)
        attempt = attempt_id or case.attempt_id
        if attempt and attempt != case.attempt_id and answer is not None:
            # The verdict is on another attempt than the one shown: show that one, with its verdict.
            case.plan = plan or []
            case.answer = answer
            case.attempt_id = attempt
            case.trajectory_summary = f"(the trajectory of attempt {attempt} is in its thread)"
        case.reward = reward
        case.label = label_for_reward(reward)
        case.reward_source = "human"
        case.judge_model = None
        case.judge_confidence = None
        case.judge_rationale = note or f"marked {'good' if good else 'bad'} by a person"
        for entry in case.attempt_log:
            if attempt and entry.get("id") == attempt:
                entry.update(reward=reward, label=case.label, reward_source="human", at=now())
                found["retrieval_id"] = found["retrieval_id"] or entry.get("retrieval_id")
        case.__post_init__()  # re-validate (the plan may have come from a thread's state)
        return case

    stored = bank.get(case_id, namespace=namespace)
    if stored is None:
        raise KeyError(missing)
    # Read, relabelled and written under the bank's lock: a run finishing meanwhile keeps its attempt.
    case = bank.upsert_merged(stored, relabel)
    retrieval_id = found["retrieval_id"]
    if log is not None and retrieval_id:
        before = log.get(retrieval_id)
        if record_outcome(log, retrieval_id, reward=reward, reward_source="human") and before is not None:
            # The cases shown in that run were counted with the judge's verdict: count the person's.
            was = None if before.get("reward") is None else float(before["reward"]) >= 0.5
            shown = [c["case_id"] for c in before.get("candidates") or [] if c.get("shown") and c.get("case_id")]
            bank.correct_usage(shown, was, good, retrieval_id, namespace=namespace)
    return case
