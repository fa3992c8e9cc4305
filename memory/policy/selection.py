"""Selecting cases with the learned policy: rerank the bank's nearest N, show the top K.

`load_selector(path)` returns a cached `Selector` that reloads itself when the checkpoint file
changes (online training replaces it atomically), or None when there is no checkpoint (retrieval
then falls back to similarity). `Selector.select` scores every candidate from cached embeddings
(one query vector, no transformer pass per case), explores (epsilon-greedy or Thompson sampling
over dropout draws), and logs for every candidate the probability that it is shown.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from memory.policy.checkpoint import LoadedPolicy, PolicyCheckpointError, load_checkpoint
from memory.policy.features import features_for_hits
from memory.policy.model import FinetuneScorer

log = logging.getLogger(__name__)

STRATEGIES = ("greedy", "epsilon", "thompson")
DEFAULT_EXPLORATION = "epsilon:0.1"


@dataclass(frozen=True)
class Choice:
    """The policy's verdict on one candidate (one per hit, so every candidate can be logged)."""

    index: int
    score: float
    propensity: float
    shown: bool


@dataclass(frozen=True)
class Exploration:
    """How selections deviate from greedy so the policy keeps learning.

    Attributes:
        strategy: ``greedy`` (top K), ``epsilon`` (top K, but with probability ``epsilon`` K cases
            drawn uniformly) or ``thompson`` (top K of one dropout draw of the scores).
        epsilon: Exploration rate of ``epsilon``.
        samples: Extra draws that estimate Thompson-sampling propensities.
        no_case_margin: Show nothing when the best case's predicted success does not beat the
            predicted success with no case by this margin (probability units). Only active for
            checkpoints that learned a no-case baseline (trained on retrievals that showed
            nothing); None disables it.

    """

    strategy: str = "epsilon"
    epsilon: float = 0.1
    samples: int = 64
    no_case_margin: float | None = 0.0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"exploration strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")
        if self.samples < 1:
            raise ValueError("samples must be at least 1")

    @classmethod
    def parse(cls, spec: Exploration | str | dict[str, Any] | None) -> Exploration:
        """Accept an `Exploration`, a dict of its fields, or a string.

        Strings: ``greedy`` (or ``none``), ``epsilon``, ``epsilon:0.2``, ``thompson``, ``thompson:128``
        (draws). None reads ``MEMENTO_POLICY_EXPLORATION`` (default ``epsilon:0.1``).
        """
        if isinstance(spec, Exploration):
            return spec
        if spec is None or spec == "":
            spec = os.environ.get("MEMENTO_POLICY_EXPLORATION") or DEFAULT_EXPLORATION
        if isinstance(spec, dict):
            known = {f.name for f in fields(cls)}
            unknown = set(spec) - known
            if unknown:
                raise ValueError(f"unknown exploration setting(s) {sorted(unknown)}; known: {sorted(known)}")
            return cls(**spec)
        if not isinstance(spec, str):
            raise ValueError(f"exploration must be a string, dict or Exploration, got {type(spec).__name__}")
        name, _, arg = spec.strip().lower().partition(":")
        try:
            if name in ("greedy", "none"):
                return cls(strategy="greedy", epsilon=0.0)
            if name == "epsilon":
                return cls(strategy="epsilon", epsilon=float(arg) if arg else 0.1)
            if name == "thompson":
                return cls(strategy="thompson", epsilon=0.0, samples=int(arg) if arg else 64)
        except ValueError as exc:
            raise ValueError(f"bad exploration {spec!r}: {exc}") from exc
        raise ValueError(f"bad exploration {spec!r}: use greedy, epsilon[:rate] or thompson[:draws]")


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
        self.can_show_nothing = int(self.metadata.get("null_examples") or 0) > 0
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
            enc = tok([query_text], padding=True, truncation=True, max_length=self.model.max_length, return_tensors="pt")
            q = self.model.encode(enc["input_ids"], enc["attention_mask"])[0]
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
    def score(self, query_embedding: np.ndarray, hits: list[Any], *, query_text: str | None = None) -> tuple[np.ndarray, float]:
        """Predicted success probability per hit, and with no case shown.

        Returns:
            ``(scores of shape (len(hits),), no-case probability)``.

        """
        if not hits:
            return np.zeros(0, np.float32), float("nan")
        q, c, f, n = self._inputs(query_embedding, hits, query_text)
        probs = torch.sigmoid(self.model(q, c, f, n)).numpy()
        return probs[:-1], float(probs[-1])

    def _greedy(self, scores: np.ndarray, null: float, k: int, cfg: Exploration) -> np.ndarray:
        order = np.argsort(-scores, kind="stable")[:k]
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
                sel = self._greedy(draws[j, :n], float(draws[j, n]), k, cfg)
                counts[sel] += 1
                if j == 0:
                    # The first draw is the one acted on; all draws estimate the propensities.
                    shown[sel] = True
            propensity = counts / m
        else:
            greedy = self._greedy(scores, null, k, cfg)
            eps = cfg.epsilon if cfg.strategy == "epsilon" else 0.0
            if eps > 0 and rng.random() < eps:
                shown[rng.choice(n, size=k, replace=False)] = True
            else:
                shown[greedy] = True
            in_greedy = np.zeros(n)
            in_greedy[greedy] = 1.0
            propensity = (1.0 - eps) * in_greedy + eps * k / n
        return [Choice(i, float(scores[i]), float(propensity[i]), bool(shown[i])) for i in range(n)]


_cache: dict[str, tuple[tuple[int, int, int], Selector]] = {}
_cache_lock = threading.Lock()


def load_selector(policy_path: str | os.PathLike[str] | None) -> Selector | None:
    """The selector of a checkpoint, cached per path and reloaded when the file changes.

    A change is a new mtime, size or inode (``os.replace`` of a retrained checkpoint gives a new
    inode), so a running graph picks up promotions without a restart.

    Returns:
        The selector, or None when ``policy_path`` is empty or no file exists there.

    Raises:
        PolicyCheckpointError: The file exists but cannot be used and no earlier version of it was
            loaded (when one was, it keeps serving and the error is logged).

    """
    if not policy_path:
        return None
    path = Path(policy_path).expanduser()
    key = str(path.resolve())
    try:
        st = path.stat()
    except FileNotFoundError:
        with _cache_lock:
            _cache.pop(key, None)
        return None
    stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            selector = Selector.from_path(path)
        except PolicyCheckpointError:
            if cached is None:
                raise
            log.exception("policy checkpoint %s changed but cannot be loaded; keeping version %s", path, cached[1].version)
            _cache[key] = (stamp, cached[1])
            return cached[1]
        if cached is not None:
            log.info("policy checkpoint %s reloaded: version %s -> %s", path, cached[1].version, selector.version)
        _cache[key] = (stamp, selector)
        return selector


def clear_selector_cache() -> None:
    """Forget loaded selectors (tests, or to free memory)."""
    with _cache_lock:
        _cache.clear()
