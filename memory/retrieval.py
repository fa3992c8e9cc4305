"""Case selection for one task: nearest N from the bank, then similarity top-K or a policy rerank.

Learned mode costs one encoder pass for the query (shared with the bank search) plus a small MLP
over the candidates' cached embeddings. Without a usable checkpoint it falls back to similarity,
logs a warning and says so in `Retrieval.note` / `Retrieval.fallback`; that fallback still
searches the nearest N, explores near similarity's top K like the policy would and logs every
candidate's propensity, so the first policy has outcomes beyond the top K to learn from.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memory.bank import CaseBank
from memory.policy.exploration import Exploration, explore_ranking

logger = logging.getLogger(__name__)


@dataclass
class Retrieval:
    """What was shown to the planner and everything it was chosen from (for the experience log)."""

    shown: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    selector: str = "none"
    policy_version: str | None = None
    note: str | None = None
    fallback: bool = False

    @property
    def positive(self) -> list[dict[str, Any]]:
        """Shown cases that succeeded (examples to follow)."""
        return [c for c in self.shown if c["label"] == "positive"]

    @property
    def negative(self) -> list[dict[str, Any]]:
        """Shown cases that failed (examples to avoid)."""
        return [c for c in self.shown if c["label"] == "negative"]


def _case_view(hit, score: float | None) -> dict[str, Any]:
    case = hit.case
    return {
        "id": case.id,
        "question": case.question,
        "plan": case.plan,
        "answer": case.answer,
        "label": case.label,
        "reward": case.reward,
        "reward_source": case.reward_source,
        "similarity": round(float(hit.similarity), 6),
        "score": None if score is None else round(float(score), 6),
    }


def _log_view(hit, view: dict[str, Any]) -> dict[str, Any]:
    # Everything the policy's features need, as it was at selection time, plus the question so a
    # policy can be trained from the log alone when the bank is not at hand.
    case = hit.case
    return {
        "case_id": view["id"],
        "question": case.question,
        "similarity": view["similarity"],
        "score": view["score"],
        "label": view["label"],
        "reward": view["reward"],
        # Where the label came from (human, ground-truth judge, self-judge): a policy feature.
        "reward_source": case.reward_source,
        "times_retrieved": case.times_retrieved,
        "retrieved_successes": case.retrieved_successes,
        "retrieved_failures": case.retrieved_failures,
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
    exploration: Any = "greedy",
    rng_seed: int | None = None,
    min_similarity: float = 0.0,
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
        exploration: ``greedy``, ``epsilon[:rate]``, ``thompson[:draws]`` (or a dict /
            `memory.policy.selection.Exploration`).
        rng_seed: Seed of the exploration draw (reproducible evals).
        min_similarity: Similarity mode: cases less similar than this are never shown (an
            unrelated case misleads the planner more than no case).

    """
    if mode not in ("none", "similarity", "learned"):
        raise ValueError(f"mode must be none, similarity or learned, got {mode!r}")
    if mode == "none" or k <= 0:
        return Retrieval(selector="none")
    # Only cases with a known outcome teach the planner anything.
    labels = ("positive", "negative")
    selector = None
    note = None
    if mode == "learned":
        selector, note = _load_selector(policy_path)
    # Learned mode searches the wider pool even while it falls back to similarity: the fallback
    # explores it (see below), so the log gains outcomes the first policy can learn from.
    pool = n_candidates if mode == "learned" else k
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
    if selector is not None:
        try:
            choices = selector.select(
                query_embedding, hits, k, np.random.default_rng(rng_seed), exploration=exploration, query_text=question
            )
        except ValueError as exc:
            # A bad exploration setting is the caller's mistake; anything else is the checkpoint's.
            if "exploration" in str(exc):
                raise
            note = f"learned policy {selector.version} cannot score these cases ({exc}); falling back to similarity"
            logger.warning(note)
            selector = None
    if selector is None and mode == "similarity" and min_similarity > 0:
        near = [h for h in hits if h.similarity >= min_similarity]
        if hits and not near:
            note = f"no case is similar enough (nearest {hits[0].similarity:.2f} < min_similarity {min_similarity:.2f}): none shown"
        hits = near
    if selector is None:
        if not hits and note is None:
            note = "no judged case in this namespace yet: none shown"
        chosen, propensity = _similarity_choice(hits, k, exploration if mode == "learned" else "greedy", rng_seed)
        candidates, shown = [], []
        for i, hit in enumerate(hits):
            view = _case_view(hit, hit.similarity)
            candidates.append({**_log_view(hit, view), "shown": bool(chosen[i]), "propensity": float(propensity[i])})
            if chosen[i]:
                shown.append(view)
        return Retrieval(shown=shown, candidates=candidates, selector="similarity", note=note, fallback=mode == "learned")

    candidates, shown = [], []
    for choice in choices:
        hit = hits[choice.index]
        view = _case_view(hit, choice.score)
        candidates.append({**_log_view(hit, view), "shown": bool(choice.shown), "propensity": float(choice.propensity)})
        if choice.shown:
            shown.append(view)
    shown.sort(key=lambda v: v["score"] or 0.0, reverse=True)
    if hits and not shown:
        note = "the policy expects no case to help this task: none shown"
    return Retrieval(shown=shown, candidates=candidates, selector="learned", policy_version=selector.version, note=note)


def _similarity_choice(hits: list, k: int, exploration: Any, rng_seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Similarity's top K (hits arrive in similarity order), explored like the policy would be.

    Returns:
        Per hit: shown or not, and the probability of being shown.

    """
    return explore_ranking(np.arange(len(hits)), k, Exploration.parse(exploration), np.random.default_rng(rng_seed))


_warned: set[str] = set()


def _warn_once(note: str) -> None:
    # Every task of a long eval would otherwise repeat the same fallback warning.
    if note not in _warned:
        _warned.add(note)
        logger.warning(note)


def _load_selector(policy_path: str | None):
    """The learned selector, or None with the reason (retrieval then falls back to similarity)."""
    try:
        from memory.policy.checkpoint import PolicyCheckpointError
        from memory.policy.selection import load_selector
    except ImportError as exc:
        note = f"learned policy unavailable in this install ({exc}); using similarity"
        _warn_once(note)
        return None, note
    try:
        selector = load_selector(policy_path)
    except PolicyCheckpointError as exc:
        note = f"policy checkpoint unusable ({exc}); falling back to similarity"
        _warn_once(note)
        return None, note
    if selector is None:
        note = f"no policy checkpoint at {policy_path or '(none configured)'}; falling back to similarity"
        _warn_once(note)
        return None, note
    return selector, None
