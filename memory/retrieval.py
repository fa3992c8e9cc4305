"""Case selection for one task: nearest N from the bank, then similarity top-K or the learned policy.

Learned mode serves the case-value bandit (`memory.policy.bandit`): one encoder pass for the query
(shared with the bank search), then the bandit chooses 0 to K of the nearest N judged cases from
their stored embeddings, exploring by Thompson sampling. Before any checkpoint exists the bandit's
prior serves (cautious: on its mean belief it shows only a positive case of the same question).
Every candidate is logged with the exact probability that it was shown, and the retrieval with the
policy's whole distribution over shown sets, so off-policy evaluation can judge a retrained policy
from the log. A checkpoint that cannot be used makes learned mode fall back to similarity, with a
warning and a note in `Retrieval.note` / `Retrieval.fallback`; that fallback explores near
similarity's top K and logs its propensities too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from memory.bank import ScoredCase
from memory.embeddings import Embedder
from memory.policy.exploration import Exploration, explore_ranking
from memory.records import CaseView, LoggedCandidate, case_view, logged_candidate

logger = logging.getLogger(__name__)


class CaseSearch(Protocol):
    """What case selection needs of a bank: a `memory.bank.CaseBank`, or a stand-in for one search.

    `memory.bank_worker.WorkerSearch` is the stand-in: another process answers the search.
    """

    @property
    def embedder(self) -> Embedder:
        """Embeds the question (the vector the bank's cases were embedded with)."""
        ...

    def search(self, *args: Any, **kwargs: Any) -> list[ScoredCase]:
        """Nearest cases, as `memory.bank.CaseBank.search`."""
        ...


@dataclass
class Retrieval:
    """What was shown to the planner and everything it was chosen from (for the experience log)."""

    shown: list[CaseView] = field(default_factory=list)
    candidates: list[LoggedCandidate] = field(default_factory=list)
    selector: str = "none"
    policy_version: str | None = None
    note: str | None = None
    fallback: bool = False
    # The selector's whole distribution over shown sets: ``[[candidate indices], probability]``
    # (None when not known exactly).
    slates: list[list[Any]] | None = None
    # Learned mode: which arm (bandit or similarity) chose, and the probability it was drawn.
    arm: dict[str, Any] | None = None

    @property
    def positive(self) -> list[CaseView]:
        """Shown cases that succeeded (examples to follow)."""
        return [c for c in self.shown if c["label"] == "positive"]

    @property
    def negative(self) -> list[CaseView]:
        """Shown cases that failed (examples to avoid)."""
        return [c for c in self.shown if c["label"] == "negative"]


def _case_view(hit, score: float | None) -> CaseView:
    return case_view(hit.case, hit.similarity, score)


def _logged(hit, view: CaseView, shown: bool, propensity: float) -> LoggedCandidate:
    return logged_candidate(hit.case, view["similarity"], view["score"], shown=shown, propensity=propensity)


def retrieve_cases(
    bank: CaseSearch,
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
    selectors: Any = None,
    warned: set[str] | None = None,
) -> Retrieval:
    """Select up to ``k`` cases to show for ``question``.

    Args:
        bank: The case bank (or a stand-in answering its search, see `CaseSearch`).
        question: The new task.
        mode: ``none``, ``similarity`` or ``learned``.
        k: Cases to show.
        n_candidates: Nearest cases considered by the learned policy.
        namespace: Bank namespace.
        exclude_task_ids: Leakage guard: tasks whose cases must not be shown.
        exclude_similarity_above: Leakage guard: near-identical questions are dropped.
        policy_path: Checkpoint of the learned policy (the case-value bandit; its prior serves
            while there is none).
        exploration: Exploration of learned mode's similarity fallback: ``greedy``,
            ``epsilon[:rate]`` (or a dict / `memory.policy.exploration.Exploration`). The bandit
            itself always explores by Thompson sampling over its posterior draws.
        rng_seed: Seed of the exploration draw (reproducible evals).
        min_similarity: Similarity mode: cases less similar than this are never shown (an
            unrelated case misleads the planner more than no case).
        selectors: A `memory.policy.selection.SelectorCache` that keeps loaded checkpoints across
            calls (the graph's resources own one); None loads the checkpoint for this call.
        warned: Fallback warnings already given (each is logged once per set); None logs each.

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
        selector, note = _load_bandit(policy_path, selectors, warned)
    # Learned mode searches the wider pool even while it falls back to similarity: the fallback
    # explores it (see below), so the log gains outcomes the policy can learn from.
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
            return _bandit_retrieval(selector, question, query_embedding, hits, k, rng_seed)
        except ValueError as exc:
            # E.g. a checkpoint fitted on another embedder's vectors: similarity serves instead.
            note = f"learned policy {selector.version} cannot score these cases ({exc}); falling back to similarity"
            logger.warning(note)
            selector = None
    if mode == "similarity" and min_similarity > 0:
        near = [h for h in hits if h.similarity >= min_similarity]
        if hits and not near:
            note = f"no case is similar enough (nearest {hits[0].similarity:.2f} < min_similarity {min_similarity:.2f}): none shown"
        hits = near
    if not hits and note is None:
        note = "no judged case in this namespace yet: none shown"
    explore = Exploration.parse(exploration if mode == "learned" else "greedy")
    chosen, propensity = _similarity_choice(hits, k, explore, rng_seed)
    candidates, shown = [], []
    for i, hit in enumerate(hits):
        view = _case_view(hit, hit.similarity)
        candidates.append(_logged(hit, view, bool(chosen[i]), float(propensity[i])))
        if chosen[i]:
            shown.append(view)
    return Retrieval(shown=shown, candidates=candidates, selector="similarity", note=note, fallback=mode == "learned",
                     slates=ranking_slates(len(hits), k, explore))  # fmt: skip


def _bandit_retrieval(
    selector: Any, question: str, query_embedding: np.ndarray, hits: list, k: int, rng_seed: int | None
) -> Retrieval:
    """The bandit's choice among the hits, logged with exact propensities and its set distribution.

    Raises:
        ValueError: The checkpoint cannot score these cases (e.g. another embedding size).

    """
    from memory.policy.bandit_serving import hit_candidates

    cands = selector.with_history(question, hit_candidates(hits))
    choice = selector.select_candidates(query_embedding, cands, k, np.random.default_rng(rng_seed), question)
    candidates, views = [], []
    for i, hit in enumerate(hits):
        view = _case_view(hit, float(choice.scores[i]))
        views.append(view)
        logged = _logged(hit, view, bool(choice.shown[i]), float(choice.propensity[i]))
        # This question's earlier outcomes with this case: a feature the bandit selected with.
        logged["pair_successes"] = float(cands[i].pair_successes)
        logged["pair_failures"] = float(cands[i].pair_failures)
        candidates.append(logged)
    # Best predicted first: the planner reads the most useful case first.
    shown = [views[int(i)] for i in choice.order]
    note = None
    if not hits:
        note = "no judged case in this namespace yet: none shown"
    elif not shown:
        note = "the policy expects no case to help this task: none shown"
    slates = [[list(map(int, st)), float(p)] for st, p in choice.slates]
    return Retrieval(
        shown=shown,
        candidates=candidates,
        selector="learned",
        policy_version=selector.version,
        note=note,
        slates=slates,
        arm={"arm": choice.arm, "p": float(choice.arm_propensity)},
    )


def ranking_slates(n: int, k: int, cfg: Exploration) -> list[list[Any]]:
    """The exact distribution over shown sets of `explore_ranking` on hits already in ranked order."""
    k = max(0, min(k, n))
    if k == 0:
        return [[[], 1.0]]
    eps = cfg.epsilon if cfg.strategy == "epsilon" else 0.0
    window = list(range(k, min(n, k + (cfg.window or k))))
    if eps <= 0.0 or not window:
        return [[list(range(k)), 1.0]]
    head = list(range(k - 1))
    out = [[[*head, k - 1], 1.0 - eps]] if eps < 1.0 else []
    return out + [[[*head, j], eps / len(window)] for j in window]


def _similarity_choice(
    hits: list, k: int, exploration: Exploration, rng_seed: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Similarity's top K (hits arrive in similarity order), explored like the policy would be.

    Returns:
        Per hit: shown or not, and the probability of being shown.

    """
    return explore_ranking(np.arange(len(hits)), k, exploration, np.random.default_rng(rng_seed))


def _warn_once(note: str, warned: set[str] | None) -> None:
    # Every task of a long eval would otherwise repeat the same fallback warning: the caller's
    # set (its graph resources') remembers which were given.
    if warned is None or note not in warned:
        if warned is not None:
            warned.add(note)
        logger.warning(note)


def _load_bandit(policy_path: str | None, selectors: Any, warned: set[str] | None):
    """The bandit selector (its prior when no checkpoint exists yet), or None with the reason."""
    try:
        from memory.policy.bandit_serving import BanditCheckpointError
        from memory.policy.selection import SelectorCache
    except ImportError as exc:
        note = f"learned policy unavailable in this install ({exc}); using similarity"
        _warn_once(note, warned)
        return None, note
    try:
        return (selectors or SelectorCache()).load_bandit_selector(policy_path), None
    except BanditCheckpointError as exc:
        note = f"policy checkpoint unusable ({exc}); falling back to similarity"
        _warn_once(note, warned)
        return None, note
