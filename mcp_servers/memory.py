"""`memory` MCP server: the case bank as tools, so other agents can share Memento's experience.

Configuration (environment): ``MEMENTO_BANK_PATH`` (embedded Chroma folder, default
``.memento/cases``) or ``MEMENTO_CHROMA_URL`` (a Chroma server; wins), ``MEMENTO_NAMESPACES`` (a
comma list) or ``MEMENTO_NAMESPACE`` (default ``default``): the only namespaces served, and
``MEMENTO_EXPERIENCE_PATH`` (the retrieval/outcome log). Every result is plain JSON. A search
returns a ``retrieval_id``; reporting the task's reward against it records which cases were shown
and how the task ended, exactly like the graph's own loop does, once per retrieval.

Clients are not trusted: cases they add live in their own id space and never replace the agent's,
an import's or another client's; their rewards are recorded as ``mcp_client``, never as a human's
or a judge's; stored fields are capped (`memory.limits`). Over HTTP a bearer token is required
(`mcp_servers.auth`).
"""

from __future__ import annotations

import os
import threading
import uuid
from typing import Any

import anyio
from mcp.server.fastmcp import Context, FastMCP

from mcp_servers.auth import current_client
from mcp_servers.memory_access import (
    check_can_replace,
    client_case_id,
    owner_tag,
    resolve_namespace,
    served_namespaces,
)
from mcp_servers.serving import run_server
from memory.bank import CaseBank
from memory.cases import LABELS, POSITIVE_THRESHOLD, Case, label_for_reward, parse_plan
from memory.config import MemoryConfig
from memory.experience import ExperienceLog
from memory.limits import CaseLimits
from memory.records import logged_candidate

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
RETRIEVAL_PREFIX = "mcp-"


class MemoryServerResources:
    """What this server process opens once: the case bank and the experience log.

    The server's composition root (the graph's is `nodes.resources.Resources`): settings come from
    `memory.config.MemoryConfig` and `served_namespaces`, each read from the environment in one
    place, and each handle is opened on first use.
    """

    def __init__(self) -> None:
        """Open nothing yet."""
        self._lock = threading.Lock()
        self._bank: CaseBank | None = None
        self._log: ExperienceLog | None = None

    def bank(self) -> CaseBank:
        """The configured case bank (opened on first use; the embedder loads on first search)."""
        with self._lock:
            if self._bank is None:
                # Offline and quiet whatever environment the client gave us (chromadb is imported below).
                for key, value in OFFLINE_ENV.items():
                    os.environ.setdefault(key, value)
                config = MemoryConfig.from_env()
                self._bank = CaseBank(
                    config.bank_path or None, url=config.chroma_url or None, namespace=served_namespaces()[0]
                )
            return self._bank

    def experience(self) -> ExperienceLog:
        """The retrieval/outcome log (``MEMENTO_EXPERIENCE_PATH``)."""
        with self._lock:
            if self._log is None:
                self._log = ExperienceLog(MemoryConfig.from_env().experience_path)
            return self._log


# This module is the server process's entry point; its tools share this one owner.
resources = MemoryServerResources()


def bank() -> CaseBank:
    """The server's case bank."""
    return resources.bank()


def experience() -> ExperienceLog:
    """The server's experience log."""
    return resources.experience()


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
    ns = resolve_namespace(namespace)
    hits = bank().search(query, k, namespace=ns, labels=[label] if label else None)
    retrieval_id = RETRIEVAL_PREFIX + uuid.uuid4().hex
    # Logged like the graph's own retrievals (every case shown, for certain), so a policy can learn from them.
    candidates = [
        logged_candidate(h.case, float(h.similarity), float(h.similarity), shown=True, propensity=1.0) for h in hits
    ]
    experience().log_retrieval(retrieval_id, namespace=ns, query=query, candidates=candidates, selector="similarity")
    return {
        "retrieval_id": retrieval_id,
        "namespace": ns,
        "cases": [_case_json(h.case, h.similarity) for h in hits],
    }


def _find_retrieval(retrieval_id: str) -> dict[str, Any]:
    """A retrieval this server logged (a search of a namespace it serves), with the cases shown."""
    rec = experience().get(retrieval_id) if retrieval_id.startswith(RETRIEVAL_PREFIX) else None
    if rec is None or rec["namespace"] not in served_namespaces():
        raise ValueError(
            f"no retrieval {retrieval_id!r} logged by this server: pass the retrieval_id a search_cases call returned"
        )
    shown = [c["case_id"] for c in rec["candidates"] if c.get("shown", True)]
    return {"namespace": rec["namespace"], "case_ids": shown}


def _report(
    reward: float | None,
    case_ids: list[str] | None,
    retrieval_id: str | None,
    namespace: str | None,
) -> dict[str, Any]:
    reward = _check_reward(reward)
    if not retrieval_id:
        raise ValueError(
            "give the retrieval_id of a search_cases call: an outcome must name a retrieval this server logged"
        )
    found = _find_retrieval(retrieval_id)
    ns = found["namespace"]
    if namespace and namespace != ns:
        raise ValueError(f"retrieval {retrieval_id!r} searched namespace {ns!r}, not {namespace!r}")
    ids = found["case_ids"]
    if case_ids:
        # Narrowing to the cases actually used is fine; crediting cases never shown is not.
        foreign = [cid for cid in case_ids if cid not in ids]
        if foreign:
            raise ValueError(f"retrieval {retrieval_id!r} did not show: {', '.join(foreign)}")
        ids = [cid for cid in ids if cid in case_ids]
    label = label_for_reward(reward)
    if not experience().claim_outcome(retrieval_id, reward=reward, label=label, reward_source="mcp_client"):
        raise ValueError(f"retrieval {retrieval_id!r} already has an outcome; an outcome counts once")
    b = bank()
    known = [cid for cid in ids if b.get(cid, namespace=ns) is not None]
    missing = [cid for cid in ids if cid not in known]
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
    client: str,
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
    limits = CaseLimits.from_env()
    if limits.question_chars > 0 and len(question or "") > limits.question_chars:
        raise ValueError(
            f"the question has {len(question):,} characters; this server stores questions of at most "
            f"{limits.question_chars:,}"
        )
    ns = resolve_namespace(namespace)
    b = bank()
    case = Case(
        id=client_case_id(client, ns, question or "", task_id) if (question or "").strip() else "",
        question=question,
        namespace=ns,
        plan=parse_plan(plan),
        answer=answer,
        reward=reward,
        label=label_for_reward(reward),
        # A client's word on its own task: recorded as such, never as a person's or a judge's.
        reward_source="none" if reward is None else "mcp_client",
        task_id=task_id,
        source=source or "mcp",
        trajectory_summary=trajectory_summary,
        created_by=owner_tag(client),
    )
    before = (len(case.answer), len(case.plan_text()), len(case.trajectory_summary))
    limits.apply(case)
    after = (len(case.answer), len(case.plan_text()), len(case.trajectory_summary))
    check_can_replace(b.get(case.id, namespace=ns), client)
    b.upsert(case)
    cut = [name for name, x, y in zip(("answer", "plan", "trajectory_summary"), before, after, strict=True) if x != y]
    return {"case_id": case.id, "namespace": case.namespace, "label": case.label, "cut": cut}


@mcp.tool()
async def search_cases(
    query: str, k: int = 4, label: str | None = None, namespace: str | None = None
) -> dict[str, Any]:
    """Find the past cases most similar to a question, best first.

    Args:
        query: The new task's question.
        k: How many cases to return (1-50).
        label: Only ``positive`` (succeeded), ``negative`` (failed) or ``unknown`` cases.
        namespace: One of the namespaces this server serves; default: its first.

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
        namespace: One of the namespaces this server serves; default: its first.

    """

    def get() -> dict[str, Any]:
        ns = resolve_namespace(namespace)
        case = bank().get(case_id, namespace=ns)
        if case is None:
            raise ValueError(f"no case {case_id!r} in namespace {ns!r}")
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

    One outcome per retrieval: a second report of the same retrieval is refused.

    Args:
        reward: 1.0 success, 0.0 failure, in between for partial credit; null when unknown.
        retrieval_id: The id a search_cases call of this server returned (required).
        case_ids: Only these of the retrieval's cases were used (default: all it returned).
        namespace: Must be the retrieval's namespace if given.

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
    ctx: Context | None = None,
) -> dict[str, Any]:
    """Store a finished task as a new case (your same question and task_id again replaces yours).

    Your cases never replace cases you did not add. Long answers, plans and summaries are cut
    (the ``cut`` field of the result names what was); overlong questions are refused.

    Args:
        question: The task's question.
        answer: The final answer given.
        plan: The plan's steps, in order.
        reward: 1.0 success, 0.0 failure, null when unknown (sets the label).
        task_id: Your id for the task (distinguishes repeated attempts).
        source: Where the task came from (default ``mcp``).
        trajectory_summary: A short account of what was done.
        namespace: One of the namespaces this server serves; default: its first.
        ctx: Filled in by the server (who is calling).

    """
    client = current_client(ctx.request_context.request if ctx is not None else None)
    return await anyio.to_thread.run_sync(
        _add, client, question, answer, plan, reward, task_id, source, trajectory_summary, namespace
    )


@mcp.tool()
async def bank_stats(namespace: str | None = None) -> dict[str, Any]:
    """Counts by label and reward source, mean reward and usage of a namespace.

    Args:
        namespace: One of the namespaces this server serves; default: its first.

    """
    return await anyio.to_thread.run_sync(lambda: bank().stats(resolve_namespace(namespace)))


if __name__ == "__main__":
    run_server(mcp, auth=True)
