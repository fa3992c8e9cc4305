"""Selecting cases with the learned policy: rerank the bank's nearest N, show the top K.

`load_selector(path)` returns a cached `Selector` that reloads itself when the checkpoint file
changes (online training replaces it atomically), or None when there is no checkpoint (retrieval
then falls back to similarity). `Selector.select` scores every candidate from cached embeddings
(one query vector, no transformer pass per case), reranks only within the similarity range its
training data covered, explores (local epsilon-greedy or Thompson sampling over dropout draws),
and logs for every candidate the probability that it is shown.

The graph's learned mode serves the case-value bandit instead (`load_bandit_selector`, same
reload-on-change cache); the MLP `Selector` remains for checkpoints of `memento policy train` and
the scorer benchmarks.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from memory.config import DEFAULT_EXPLORATION
from memory.policy.checkpoint import LoadedPolicy, PolicyCheckpointError, load_checkpoint
from memory.policy.exploration import STRATEGIES, Exploration, explore_ranking
from memory.policy.features import FEATURE_NAMES, features_for_hits
from memory.policy.model import FinetuneScorer

__all__ = [
    "DEFAULT_EXPLORATION", "MIN_NULL_EXAMPLES", "STRATEGIES", "Choice", "Exploration", "Selector",
    "SelectorCache", "load_bandit_selector", "load_selector",
]  # fmt: skip
_GAP = FEATURE_NAMES.index("similarity_gap")

log = logging.getLogger(__name__)

# Fewer retrievals that showed nothing cannot pin down the no-case baseline: a single empty
# retrieval (the very first task, when the bank was empty) would otherwise switch the rule on.
MIN_NULL_EXAMPLES = 20


@dataclass(frozen=True)
class Choice:
    """The policy's verdict on one candidate (one per hit, so every candidate can be logged)."""

    index: int
    score: float
    propensity: float
    shown: bool


class Selector:
    """A loaded policy checkpoint that reranks candidates."""

    name = "learned"

    def __init__(self, loaded: LoadedPolicy, exploration: Exploration | str | dict | None = None):
        """Wrap a loaded checkpoint.

        Args:
            loaded: From `load_checkpoint`.
            exploration: Default exploration of `select` (see `Exploration.parse`).

        """
        self._loaded = loaded
        self.model = loaded.model
        self.version: str = loaded.version
        self.variant: str = loaded.variant
        self.metadata: dict[str, Any] = loaded.metadata
        self.path = loaded.path
        self.exploration = Exploration.parse(exploration)
        # Without retrievals that showed nothing, the no-case baseline was never trained.
        self.can_show_nothing = int(self.metadata.get("null_examples") or 0) >= MIN_NULL_EXAMPLES
        # How far below the best candidate's similarity the training log ever showed a case:
        # beyond that the scorer never saw an outcome, so it does not get to promote such cases.
        support = self.metadata.get("support") or {}
        self.max_gap: float | None = support.get("max_similarity_gap")
        self.needs_query_text = isinstance(self.model, FinetuneScorer)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], exploration: Exploration | str | dict | None = None) -> Selector:
        """Load a checkpoint (raises `PolicyCheckpointError` when it cannot be used)."""
        return cls(load_checkpoint(path), exploration)

    def _inputs(self, query_embedding: np.ndarray, hits: list[Any], query_text: str | None):
        missing = [i for i, h in enumerate(hits) if h.embedding is None]
        if missing:
            raise ValueError(
                f"{len(missing)} hits carry no embedding: search the bank with include_embeddings=True "
                "so the policy scores cached vectors instead of re-encoding cases"
            )
        if self.needs_query_text:
            if not query_text:
                raise ValueError("the fine-tuned policy encodes the query itself: pass query_text")
            tok = self._loaded.tokenizer
            model = self.model
            assert isinstance(model, FinetuneScorer)  # needs_query_text says so
            enc = tok([query_text], padding=True, truncation=True, max_length=model.max_length, return_tensors="pt")
            q = model.encode(enc["input_ids"], enc["attention_mask"])[0]
        else:
            q = torch.as_tensor(np.asarray(query_embedding, dtype=np.float32).reshape(-1))
        dim = self.model.head.dim if self.needs_query_text else self.model.dim
        if q.shape[0] != dim or any(np.asarray(h.embedding).size != dim for h in hits):
            raise ValueError(
                f"the policy was trained on {dim}-d embeddings ({self.metadata.get('embedder')}) but "
                "this query or its cases have another size: retrain the policy for this bank's embedder"
            )
        n = len(hits)
        cases = np.stack([np.asarray(h.embedding, dtype=np.float32) for h in hits] + [np.zeros(q.shape[0], np.float32)])
        hit_feats = features_for_hits(hits)
        feats = np.concatenate([hit_feats, np.zeros((1, hit_feats.shape[1]), np.float32)])
        is_null = torch.zeros(n + 1, dtype=torch.bool)
        is_null[n] = True
        return q.expand(n + 1, -1), torch.from_numpy(cases), torch.from_numpy(feats), is_null

    @torch.no_grad()
    def score(
        self, query_embedding: np.ndarray, hits: list[Any], *, query_text: str | None = None
    ) -> tuple[np.ndarray, float]:
        """Predicted success probability per hit, and with no case shown.

        Returns:
            ``(scores of shape (len(hits),), no-case probability)``.

        """
        if not hits:
            return np.zeros(0, np.float32), float("nan")
        q, c, f, n = self._inputs(query_embedding, hits, query_text)
        probs = torch.sigmoid(self.model(q, c, f, n)).numpy()
        return probs[:-1], float(probs[-1])

    def _ranking(self, scores: np.ndarray, gaps: np.ndarray) -> np.ndarray:
        """Candidates best first: inside the training support by score, then the rest by similarity.

        Hits arrive in similarity order, so a stable sort keeps that order among ties and among
        the cases outside the support.
        """
        outside = np.zeros(scores.size, dtype=bool) if self.max_gap is None else gaps > self.max_gap + 1e-6
        return np.lexsort((np.arange(scores.size), np.where(outside, 0.0, -scores), outside))

    def _greedy(self, order: np.ndarray, scores: np.ndarray, null: float, k: int, cfg: Exploration) -> np.ndarray:
        order = order[:k]
        if (
            self.can_show_nothing
            and cfg.no_case_margin is not None
            and order.size
            and scores[order[0]] - null < cfg.no_case_margin
        ):
            return order[:0]
        return order

    @torch.no_grad()
    def select(
        self,
        query_embedding: np.ndarray,
        hits: list[Any],
        k: int,
        rng: np.random.Generator,
        *,
        exploration: Exploration | str | dict | None = None,
        query_text: str | None = None,
    ) -> list[Choice]:
        """Choose which of ``hits`` to show.

        Args:
            query_embedding: The query's vector (the one used to search the bank).
            hits: `ScoredCase`s with embeddings (``search(..., include_embeddings=True)``).
            k: At most this many are shown (possibly none: see `Exploration.no_case_margin`).
            rng: Randomness of exploration (seed it for reproducible runs).
            exploration: Overrides the selector's default for this call.
            query_text: The question (needed by the fine-tuned variant only).

        Candidates further below the best similarity than the checkpoint's training data ever
        showed a case (its ``support``) are not reranked: they follow the others in similarity
        order. Exploration swaps the K-th slot for one of the next few candidates (see
        `memory.policy.exploration`).

        Returns:
            One `Choice` per hit, in hit order: predicted success, the probability that this
            candidate is shown under the exploration policy, and whether it was shown.

        """
        cfg = self.exploration if exploration is None else Exploration.parse(exploration)
        n = len(hits)
        if n == 0:
            return []
        k = max(0, min(int(k), n))
        scores, null = self.score(query_embedding, hits, query_text=query_text)
        shown = np.zeros(n, dtype=bool)
        if k == 0:
            return [Choice(i, float(scores[i]), 0.0, False) for i in range(n)]
        gaps = features_for_hits(hits)[:, _GAP]
        if cfg.strategy == "thompson":
            q, c, f, is_null = self._inputs(query_embedding, hits, query_text)
            m = cfg.samples + 1
            gen = torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))
            logits = self.model(
                q.repeat(m, 1), c.repeat(m, 1), f.repeat(m, 1), is_null.repeat(m), sample=True, generator=gen
            ).reshape(m, n + 1)
            draws = torch.sigmoid(logits).numpy()
            counts = np.zeros(n)
            for j in range(m):
                sel = self._greedy(self._ranking(draws[j, :n], gaps), draws[j, :n], float(draws[j, n]), k, cfg)
                counts[sel] += 1
                if j == 0:
                    # The first draw is the one acted on; all draws estimate the propensities.
                    shown[sel] = True
            propensity = counts / m
        else:
            order = self._ranking(scores, gaps)
            greedy = self._greedy(order, scores, null, k, cfg)
            if greedy.size:
                shown, propensity = explore_ranking(order, k, cfg, rng)
            else:
                # The policy would show nothing; exploring shows its top K now and then.
                eps = cfg.epsilon if cfg.strategy == "epsilon" else 0.0
                propensity = np.zeros(n)
                propensity[order[:k]] = eps
                if eps > 0 and rng.random() < eps:
                    shown[order[:k]] = True
        return [Choice(i, float(scores[i]), float(propensity[i]), bool(shown[i])) for i in range(n)]


class SelectorCache:
    """Loaded selectors per checkpoint path, with the file stamp(s) they were loaded from.

    One lives in each graph's `nodes.resources.Resources` (and one per test): a running graph
    picks up promotions without a restart, and nothing is shared per process.
    """

    def __init__(self) -> None:
        """Start empty."""
        # MLP scorers under their path, the bandit under "bandit|<path>".
        self._cache: dict[str, tuple[Any, Any]] = {}
        self._lock = threading.Lock()

    def load_selector(self, policy_path: str | os.PathLike[str] | None) -> Selector | None:
        """The selector of a checkpoint, cached per path and reloaded when the file changes.

        A change is a new mtime, size or inode (``os.replace`` of a retrained checkpoint gives a
        new inode), so a running graph picks up promotions without a restart.

        Returns:
            The selector, or None when ``policy_path`` is empty or no file exists there.

        Raises:
            PolicyCheckpointError: The file exists but cannot be used and no earlier version of it
                was loaded (when one was, it keeps serving and the error is logged).

        """
        if not policy_path:
            return None
        path = Path(policy_path).expanduser()
        key = str(path.resolve())
        stamp = _stamp(path)
        cache = self._cache
        if stamp is None:
            with self._lock:
                cache.pop(key, None)
            return None
        return self._reload(key, path, stamp, Selector.from_path, PolicyCheckpointError)

    def _reload(self, key: str, path: Path, stamp: Any, load: Any, error: type[Exception]) -> Any:
        """The cached object of ``key`` while ``stamp`` holds; else ``load(path)``.

        A file that changed but cannot be loaded keeps the version loaded before it serving (and
        logs why); with no earlier version the error propagates.
        """
        cache = self._cache
        with self._lock:
            cached = cache.get(key)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            try:
                loaded = load(path)
            except error:
                if cached is None:
                    raise
                log.exception(
                    "policy checkpoint %s changed but cannot be loaded; keeping version %s", path, cached[1].version
                )
                cache[key] = (stamp, cached[1])
                return cached[1]
            if cached is not None and cached[1].version != loaded.version:
                log.info("policy checkpoint %s reloaded: version %s -> %s", path, cached[1].version, loaded.version)
            cache[key] = (stamp, loaded)
            return loaded

    def load_bandit_selector(self, policy_path: str | os.PathLike[str] | None) -> Any:
        """The case-value bandit serving learned mode: the checkpoint and its share, cached per path.

        Reloaded when the checkpoint changes (mtime, size or inode: a refit written by the online
        trainer), so a running graph serves it from its next retrieval.

        Returns:
            A `memory.policy.bandit_serving.BanditSelector`; before any retraining it serves the
            bandit's prior (version ``prior``) at its starting share.

        Raises:
            BanditCheckpointError: The checkpoint exists but cannot be used and no earlier version
                of it was loaded (when one was, it keeps serving and the error is logged).

        """
        from memory.policy.bandit_serving import BanditCheckpointError, BanditSelector

        path = Path(policy_path).expanduser() if policy_path else None
        if path is None:
            return BanditSelector.load(None)
        # No file is not an error: `BanditSelector.load` serves the prior then.
        return self._reload(
            "bandit|" + str(path.resolve()), path, _stamp(path), BanditSelector.load, BanditCheckpointError
        )

    def clear(self) -> None:
        """Forget loaded selectors (to free memory)."""
        with self._lock:
            self._cache.clear()


def load_selector(policy_path: str | os.PathLike[str] | None) -> Selector | None:
    """The selector of a checkpoint, loaded now (a `SelectorCache` keeps one across calls)."""
    return SelectorCache().load_selector(policy_path)


def load_bandit_selector(policy_path: str | os.PathLike[str] | None) -> Any:
    """The bandit selector of a checkpoint, loaded now (a `SelectorCache` keeps one across calls)."""
    return SelectorCache().load_bandit_selector(policy_path)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)
