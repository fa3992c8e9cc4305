"""`memory` MCP server: the case bank as tools, so other agents can share Memento's experience.

Configuration (environment): ``MEMENTO_BANK_PATH`` (embedded Chroma folder, default
``.memento/cases``) or ``MEMENTO_CHROMA_URL`` (a Chroma server; wins), ``MEMENTO_NAMESPACE``
(default ``default``) and ``MEMENTO_EXPERIENCE_PATH`` (the retrieval/outcome log). Every result is
plain JSON. A search returns a ``retrieval_id``; reporting the task's reward against it records
which cases were shown and how the task ended, exactly like the graph's own loop does.
"""

from __future__ import annotations

import functools
import os
import uuid
from typing import Any

import anyio
from mcp.server.fastmcp import FastMCP

from mcp_servers.serving import run_server
from memory.bank import CaseBank
from memory.cases import LABELS, POSITIVE_THRESHOLD, Case, label_for_reward
from memory.experience import ExperienceLog
from memory.outcomes import record_outcome

mcp = FastMCP(
    "memory",
    instructions=(
        "A bank of past tasks (question, plan, answer, reward). Search it before planning, "
        "report how your task ended, and add the finished task as a new case."
    ),
)
MAX_K = 50
OFFLINE_ENV = {
    "ORT_DISABLE_TELEMETRY": "1",
    "ANONYMIZED_TELEMETRY": "False",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}
# Retrievals made by this process; older ones are looked up in the experience log.
_retrievals: dict[str, dict[str, Any]] = {}


@functools.lru_cache(maxsize=1)
def bank() -> CaseBank:
    """The configured case bank (opened on first use; the embedder loads on first search)."""
    # Offline and quiet whatever environment the client gave us (chromadb is imported below).
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    return CaseBank(
        os.environ.get("MEMENTO_BANK_PATH") or None,
        url=os.environ.get("MEMENTO_CHROMA_URL") or None,
        namespace=os.environ.get("MEMENTO_NAMESPACE") or "default",
    )


@functools.lru_cache(maxsize=1)
def experience() -> ExperienceLog:
    """The retrieval/outcome log (``MEMENTO_EXPERIENCE_PATH``)."""
    return ExperienceLog()


def _case_json(case: Case, similarity: float | None = None) -> dict[str, Any]:
    data = {
        "id": case.id,
        "namespace": case.namespace,
        "question": case.question,
        "plan": case.plan,
        "answer": case.answer,
        "label": case.label,
        "reward": case.reward,
        "reward_source": case.reward_source,
        "task_id": case.task_id,
        "source": case.source,
        "times_retrieved": case.times_retrieved,
    }
    if similarity is not None:
        data["similarity"] = round(float(similarity), 4)
    return data


def _check_reward(reward: float | None) -> float | None:
    if reward is not None and not 0.0 <= float(reward) <= 1.0:
        raise ValueError(f"reward must be between 0 and 1 (or null for unknown), got {reward}")
    return None if reward is None else float(reward)


def _search(query: str, k: int, label: str | None, namespace: str | None) -> dict[str, Any]:
    if not query or not query.strip():
        raise ValueError("query is empty")
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k must be between 1 and {MAX_K}, got {k}")
    if label is not None and label not in LABELS:
        raise ValueError(f"label must be one of {', '.join(LABELS)}, got {label!r}")
    b = bank()
    ns = namespace or b.namespace
    hits = b.search(query, k, namespace=ns, labels=[label] if label else None)
    retrieval_id = "mcp-" + uuid.uuid4().hex
    candidates = [
        {
            "case_id": h.case.id,
            "similarity": float(h.similarity),
            "score": float(h.similarity),
            "shown": True,
            "propensity": 1.0,
            "label": h.case.label,
            "reward": h.case.reward,
        }
        for h in hits
    ]
    experience().log_retrieval(
        retrieval_id, namespace=ns, query=query, candidates=candidates, selector="similarity"
    )
    _retrievals[retrieval_id] = {"namespace": ns, "case_ids": [h.case.id for h in hits]}
    return {
        "retrieval_id": retrieval_id,
        "namespace": ns,
        "cases": [_case_json(h.case, h.similarity) for h in hits],
    }


def _find_retrieval(retrieval_id: str) -> dict[str, Any]:
    if retrieval_id in _retrievals:
        return _retrievals[retrieval_id]
    for rec in experience().records(judged_only=False):
        if rec["retrieval_id"] == retrieval_id:
            shown = [c["case_id"] for c in rec["candidates"] if c.get("shown", True)]
            return {"namespace": rec["namespace"], "case_ids": shown}
    raise ValueError(
        f"no retrieval {retrieval_id!r}: pass the retrieval_id a search_cases call returned"
    )


def _report(
    reward: float | None,
    case_ids: list[str] | None,
    retrieval_id: str | None,
    namespace: str | None,
) -> dict[str, Any]:
    reward = _check_reward(reward)
    if not case_ids and not retrieval_id:
        raise ValueError(
            "give the retrieval_id of a search_cases call, or the case_ids that were used"
        )
    b = bank()
    ns = namespace or b.namespace
    ids = list(case_ids or [])
    if retrieval_id:
        found = _find_retrieval(retrieval_id)
        ns = namespace or found["namespace"]
        ids = ids or found["case_ids"]
        # The same path as a person's feedback: a more trusted outcome already logged stays.
        record_outcome(experience(), retrieval_id, reward=reward, reward_source="mcp")
    known = [cid for cid in ids if b.get(cid, namespace=ns) is not None]
    missing = [cid for cid in ids if cid not in known]
    if case_ids and missing and not known:
        raise ValueError(f"no such case(s) in namespace {ns!r}: {', '.join(missing)}")
    success = None if reward is None else reward >= POSITIVE_THRESHOLD
    b.record_usage(known, success, namespace=ns)
    return {
        "retrieval_id": retrieval_id,
        "namespace": ns,
        "recorded": known,
        "unknown_case_ids": missing,
        "success": success,
    }


def _add(
    question: str,
    answer: str,
    plan: list[str] | str | None,
    reward: float | None,
    task_id: str | None,
    source: str | None,
    trajectory_summary: str,
    namespace: str | None,
) -> dict[str, Any]:
    reward = _check_reward(reward)
    b = bank()
    case = Case(
        question=question,
        namespace=namespace or b.namespace,
        plan=plan or [],
        answer=answer,
        reward=reward,
        label=label_for_reward(reward),
        reward_source="none" if reward is None else "human",
        task_id=task_id,
        source=source or "mcp",
        trajectory_summary=trajectory_summary,
    )
    b.upsert(case)
    return {"case_id": case.id, "namespace": case.namespace, "label": case.label}


@mcp.tool()
async def search_cases(
    query: str, k: int = 4, label: str | None = None, namespace: str | None = None
) -> dict[str, Any]:
    """Find the past cases most similar to a question, best first.

    Args:
        query: The new task's question.
        k: How many cases to return (1-50).
        label: Only ``positive`` (succeeded), ``negative`` (failed) or ``unknown`` cases.
        namespace: Bank namespace; default: the server's (``MEMENTO_NAMESPACE``).

    Returns:
        ``retrieval_id`` (pass it to report_outcome), ``namespace`` and ``cases`` with id,
        question, plan, answer, label, reward and similarity.

    """
    return await anyio.to_thread.run_sync(_search, query, k, label, namespace)


@mcp.tool()
async def get_case(case_id: str, namespace: str | None = None) -> dict[str, Any]:
    """One case by id, with its plan, answer, reward and usage.

    Args:
        case_id: The case's id (``case-…``).
        namespace: Bank namespace; default: the server's.

    """

    def get() -> dict[str, Any]:
        case = bank().get(case_id, namespace=namespace)
        if case is None:
            raise ValueError(f"no case {case_id!r} in namespace {namespace or bank().namespace!r}")
        return _case_json(case)

    return await anyio.to_thread.run_sync(get)


@mcp.tool()
async def report_outcome(
    reward: float | None,
    retrieval_id: str | None = None,
    case_ids: list[str] | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """Report how a task that used retrieved cases ended (counts toward each case's usefulness).

    Args:
        reward: 1.0 success, 0.0 failure, in between for partial credit; null when unknown.
        retrieval_id: The id a search_cases call returned (preferred: it names the shown cases).
        case_ids: The cases used, when there is no retrieval_id.
        namespace: Bank namespace; default: the retrieval's or the server's.

    """
    return await anyio.to_thread.run_sync(_report, reward, case_ids, retrieval_id, namespace)


@mcp.tool()
async def add_case(
    question: str,
    answer: str,
    plan: list[str] | None = None,
    reward: float | None = None,
    task_id: str | None = None,
    source: str | None = None,
    trajectory_summary: str = "",
    namespace: str | None = None,
) -> dict[str, Any]:
    """Store a finished task as a case (same question and task_id again replaces it).

    Args:
        question: The task's question.
        answer: The final answer given.
        plan: The plan's steps, in order.
        reward: 1.0 success, 0.0 failure, null when unknown (sets the label).
        task_id: Your id for the task (distinguishes repeated attempts).
        source: Where the task came from (default ``mcp``).
        trajectory_summary: A short account of what was done.
        namespace: Bank namespace; default: the server's.

    """
    return await anyio.to_thread.run_sync(
        _add, question, answer, plan, reward, task_id, source, trajectory_summary, namespace
    )


@mcp.tool()
async def bank_stats(namespace: str | None = None) -> dict[str, Any]:
    """Counts by label and reward source, mean reward and usage of a namespace.

    Args:
        namespace: Bank namespace; default: the server's.

    """
    return await anyio.to_thread.run_sync(lambda: bank().stats(namespace))


if __name__ == "__main__":
    run_server(mcp)
