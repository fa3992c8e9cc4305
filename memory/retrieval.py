"""Case selection for one task: nearest N from the bank, then similarity top-K or a policy rerank."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memory.bank import CaseBank

logger = logging.getLogger(__name__)


@dataclass
class Retrieval:
    """What was shown to the planner and everything it was chosen from (for the experience log)."""

    shown: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    selector: str = "none"
    policy_version: str | None = None
    note: str | None = None


def _case_view(hit, score: float | None) -> dict[str, Any]:
    case = hit.case
    return {
        "id": case.id,
        "question": case.question,
        "plan": case.plan,
        "answer": case.answer,
        "label": case.label,
        "reward": case.reward,
        "similarity": round(float(hit.similarity), 6),
        "score": None if score is None else round(float(score), 6),
    }


def retrieve_cases(
    bank: CaseBank,
    question: str,
    *,
    mode: str = "similarity",
    k: int = 4,
    n_candidates: int = 32,
    namespace: str | None = None,
    exclude_task_ids: tuple[str, ...] = (),
    exclude_similarity_above: float | None = None,
    policy_path: str | None = None,
    exploration: str = "none",
    rng_seed: int | None = None,
) -> Retrieval:
    """Select up to ``k`` cases to show for ``question``.

    Args:
        bank: The case bank.
        question: The new task.
        mode: ``none``, ``similarity`` or ``learned``.
        k: Cases to show.
        n_candidates: Nearest cases considered by the learned policy.
        namespace: Bank namespace.
        exclude_task_ids: Leakage guard: tasks whose cases must not be shown.
        exclude_similarity_above: Leakage guard: near-identical questions are dropped.
        policy_path: Checkpoint of the learned policy.
        exploration: Exploration scheme handed to the policy.
        rng_seed: Seed of the exploration draw (reproducible evals).

    """
    if mode == "none" or k <= 0:
        return Retrieval(selector="none")
    # Only cases with a known outcome teach the planner anything.
    labels = ("positive", "negative")
    selector = None
    note = None
    if mode == "learned":
        selector, note = _load_selector(policy_path, exploration)
    pool = n_candidates if selector is not None else k
    query_embedding = bank.embedder.embed([question])[0]
    hits = bank.search(
        n=max(pool, k),
        namespace=namespace,
        labels=labels,
        query_embedding=query_embedding,
        exclude_task_ids=exclude_task_ids,
        exclude_similarity_above=exclude_similarity_above,
        include_embeddings=selector is not None,
    )
    if selector is None:
        candidates = []
        shown = []
        for i, hit in enumerate(hits):
            view = _case_view(hit, hit.similarity)
            chosen = i < k
            candidates.append({**_log_view(view), "shown": chosen, "propensity": 1.0 if chosen else 0.0})
            if chosen:
                shown.append(view)
        return Retrieval(shown=shown, candidates=candidates, selector="similarity", note=note)

    rng = np.random.default_rng(rng_seed)
    choices = selector.select(query_embedding, hits, k, rng)
    candidates, shown = [], []
    for choice in choices:
        view = _case_view(hits[choice.index], choice.score)
        candidates.append(
            {**_log_view(view), "shown": bool(choice.shown), "propensity": float(choice.propensity)}
        )
        if choice.shown:
            shown.append(view)
    shown.sort(key=lambda v: v["score"] or 0.0, reverse=True)
    return Retrieval(
        shown=shown[:k], candidates=candidates, selector="learned", policy_version=selector.version
    )


def _log_view(view: dict[str, Any]) -> dict[str, Any]:
    return {
        "case_id": view["id"],
        "similarity": view["similarity"],
        "score": view["score"],
        "label": view["label"],
        "reward": view["reward"],
    }


def _load_selector(policy_path: str | None, exploration: str):
    """The learned selector, or None with the reason (retrieval then falls back to similarity)."""
    try:
        from memory.policy.selection import load_selector
    except ImportError:
        note = "learned policy unavailable in this install; using similarity"
        logger.warning(note)
        return None, note
    selector = load_selector(policy_path, exploration=exploration) if policy_path else None
    if selector is None:
        note = f"no policy checkpoint at {policy_path}; falling back to similarity"
        logger.warning(note)
        return None, note
    return selector, None
