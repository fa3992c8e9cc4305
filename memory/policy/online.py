"""Online learning: retrain the case-value bandit in the background every N judged outcomes.

The graph's write-back step calls, after logging a judged outcome in learned mode::

    resources.trainer(ctx, bank).notify_outcome()

(`nodes.resources.Resources` keeps one trainer per paths and namespace.)

Every ``every`` calls (``MEMENTO_POLICY_RETRAIN_EVERY``, default 10; 0 turns it off) a thread
reads the namespace's judged retrievals from the experience log, turns them into bandit training
rows (`memory.policy.bandit_serving.logs_from_records`: case vectors from the bank, exact logged
propensities, set distributions and arms) and runs `retrain_from_log`: the bandit is refit on the
whole log, and its share of selections moves only when the off-policy A/B comparison of the
bandit and similarity arms says one is better at the stated confidence (`memory.policy.learner`).
Running graphs pick the change up on their next retrieval (`memory.policy.selection.SelectorCache`
reloads changed files).
Every decision is appended to ``<policy>.history.jsonl``.

The MLP scorer's promotion gate (`train_and_promote`, held-out selection AUC) stays below for
`memento policy train` checkpoints and the scorer benchmarks; learned retrieval no longer uses it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from memory.config import DEFAULT_RETRAIN_EVERY, MemoryConfig

log = logging.getLogger(__name__)

DEFAULT_EVERY = DEFAULT_RETRAIN_EVERY


@dataclass
class Promotion:
    """The outcome of one retraining round of the MLP scorer (`train_and_promote`)."""

    promoted: bool
    reason: str
    candidate_auc: float | None = None
    incumbent_auc: float | None = None
    incumbent: str | None = None
    version: str | None = None
    similarity_auc: float | None = None
    n_rows: int = 0
    n_queries: int = 0
    finished_at: float = 0.0


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


class OnlineTrainer:
    """Counts judged outcomes and retrains the bandit from the experience log in a background thread."""

    def __init__(
        self,
        policy_path: str | os.PathLike[str],
        experience_path: str | os.PathLike[str] | None = None,
        *,
        every: int | None = None,
        bank: Any = None,
        embedder: Any = None,
        namespace: str | None = None,
        k: int = 4,
        config: Any = None,
        confidence: float | None = None,
        synchronous: bool | None = None,
    ):
        """Configure a trainer (a graph's `nodes.resources.Resources` keeps one per paths and namespace).

        Args:
            policy_path: Checkpoint to create or replace (its history lives beside it).
            experience_path: Experience log to learn from (default: ``MEMENTO_EXPERIENCE_PATH``
                or ``.memento/experience.sqlite``).
            every: Retrain after this many outcomes (default ``MEMENTO_POLICY_RETRAIN_EVERY``
                or 20; 0 disables).
            bank: The `CaseBank` whose stored case embeddings the training rows use.
            embedder: Embeds questions (default: the bank's, else the shared ``MEMENTO_EMBEDDER`` one).
            namespace: Only learn from retrievals of this namespace (None: all of them).
            k: Cases shown at most (off-policy evaluation replays selections with this K).
            config: A `BanditConfig` (defaults otherwise).
            confidence: One-sided confidence of the promotion gate (default: the serving default).
            synchronous: Retrain inside `notify_outcome` instead of a thread (default
                ``MEMENTO_POLICY_RETRAIN_SYNC=1``): the outcome that makes a retrain due waits for
                it (milliseconds to a second), so which task first sees the new policy no longer
                depends on timing — reproducible evals.

        """
        settings = MemoryConfig.from_env()
        self.policy_path = Path(policy_path)
        self.experience_path = Path(experience_path or settings.experience_path)
        if every is None:
            every = settings.policy_retrain_every
        if every < 0:
            raise ValueError(f"every must be >= 0, got {every}")
        self.every = every
        self.bank = bank
        self._embedder = embedder
        self.namespace = namespace
        self.k = k
        self.config = config
        self.confidence = confidence
        if synchronous is None:
            synchronous = settings.policy_retrain_sync
        self.synchronous = synchronous
        self.pending = 0
        self.last: Any = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # Each retrain re-reads the whole log: questions embedded once are not encoded again.
        self._query_cache: _MemoEmbedder | None = None
        # One lock object per trainer: retraining from another thread or process waits for it.
        self._file_lock = FileLock(str(self.policy_path) + ".lock", timeout=300)

    @property
    def running(self) -> bool:
        """Whether a retraining thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def notify_outcome(self, n: int = 1) -> bool:
        """Count ``n`` new judged outcomes; start a background retrain when due.

        Cheap and non-blocking (unless ``synchronous``): safe to call from a graph node after every task.

        Returns:
            True when this call started (or, synchronous, ran) a retrain.

        """
        if self.every == 0:
            return False
        with self._lock:
            self.pending += n
            if self.pending < self.every or self.running:
                return False
            self.pending = 0
            if not self.synchronous:
                self._thread = threading.Thread(target=self._run, name="memento-policy-retrain", daemon=True)
                self._thread.start()
                return True
        self._run()
        return True

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the current retrain (if any) ends; returns the latest decision."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.last

    def _run(self) -> None:
        from memory.policy.bandit_serving import RetrainDecision

        try:
            self.retrain()
        except Exception as exc:  # a background failure must never take the graph down
            log.exception("background policy retraining failed")
            self.last = RetrainDecision(False, f"failed: {type(exc).__name__}: {exc}", 0, None, finished_at=time.time())

    def _embedder_now(self) -> Any:
        from memory.embeddings import load_embedder

        # The bank's own embedder: query vectors must live in the space its cases were stored in.
        if self._embedder is not None:
            inner = self._embedder
        elif self.bank is not None:
            inner = self.bank.embedder
        else:
            # Loaded once and kept by this trainer (no bank to borrow one from).
            inner = self._embedder = load_embedder(MemoryConfig.from_env().embedder)
        if self._query_cache is None or self._query_cache.inner is not inner:
            self._query_cache = _MemoEmbedder(inner)
        return self._query_cache

    def retrain(self) -> Any:
        """Refit now (in this thread); the A/B comparison of arms sets its share.

        Returns:
            The `memory.policy.bandit_serving.RetrainDecision` (also appended to the history).

        """
        from memory.experience import ExperienceLog
        from memory.policy.bandit_serving import (
            DEFAULT_CONFIDENCE,
            BanditCheckpointError,
            RetrainDecision,
            load_bandit,
            logs_from_records,
            retrain_from_log,
        )

        with self._file_lock:
            records = []
            if self.experience_path.is_file():
                records = list(ExperienceLog(self.experience_path).records(judged_only=True, namespace=self.namespace))
            if not records:
                decision = RetrainDecision(
                    False, "no judged retrieval in the experience log yet", 0, None, finished_at=time.time()
                )
                _append_history(self.policy_path, asdict(decision))
                self.last = decision
                return decision
            if self.policy_path.is_file():
                try:
                    load_bandit(self.policy_path)
                except BanditCheckpointError as exc:
                    # Not a bandit (an MLP scorer of `memento policy train`) or damaged: keep the
                    # file aside and let the candidate compete with the prior instead.
                    aside = self.policy_path.with_name(self.policy_path.name + ".unusable")
                    os.replace(self.policy_path, aside)
                    reason = f"the checkpoint could not be used and was moved to {aside.name} ({exc}); the refit starts from the prior's share"
                    _append_history(
                        self.policy_path, asdict(RetrainDecision(False, reason, 0, None, finished_at=time.time()))
                    )
                    log.warning("policy checkpoint unusable, moved to %s: %s", aside, exc)
            logs = logs_from_records(records, self._embedder_now(), self.bank)
            decision = retrain_from_log(logs, self.policy_path, k=self.k, config=self.config,
                                        confidence=self.confidence or DEFAULT_CONFIDENCE)  # fmt: skip
        level = logging.INFO if decision.promoted else logging.DEBUG
        log.log(level, "policy retrained on %d retrievals: %s", decision.rows, decision.reason)
        self.last = decision
        return decision


class _MemoEmbedder:
    """An embedder that remembers the vectors of texts it already embedded (one trainer's questions)."""

    def __init__(self, inner: Any, limit: int = 200_000):
        self.inner = inner
        self.limit = limit
        self.vectors: dict[str, np.ndarray] = {}

    def embed(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.vectors]
        if missing:
            if len(self.vectors) + len(missing) > self.limit:
                self.vectors.clear()
            for text, vec in zip(missing, np.asarray(self.inner.embed(missing), np.float32), strict=True):
                self.vectors[text] = vec
        return np.stack([self.vectors[t] for t in texts]) if texts else np.zeros((0, 0), np.float32)


def _append_history(policy_path: Path, entry: dict[str, Any]) -> None:
    history = policy_path.with_name(policy_path.name + ".history.jsonl")
    try:
        history.parent.mkdir(parents=True, exist_ok=True)
        with open(history, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
    except OSError as exc:
        log.warning("cannot append to %s: %s", history, exc)


def record_promotion(policy_path: str | os.PathLike[str], promotion: Promotion) -> Promotion:
    """Stamp a decision and append it to ``<policy>.history.jsonl``."""
    promotion.finished_at = time.time()
    history = Path(policy_path).with_name(Path(policy_path).name + ".history.jsonl")
    try:
        history.parent.mkdir(parents=True, exist_ok=True)
        with open(history, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(asdict(promotion)) + "\n")
    except OSError as exc:
        log.warning("cannot append to %s: %s", history, exc)
    if not promotion.promoted:
        log.info("policy not promoted: %s", promotion.reason)
    return promotion


def selection_auc(model: Any, data: Any, tokenizer: Any = None) -> float:
    """How well a scorer's view of the shown cases explains held-out task outcomes.

    Per retrieval, the sum of the shown cases' contributions ``h`` (the part of the score that
    ranks candidates; the query baseline ``g`` is left out because it cannot change which cases
    are shown), scored by ROC AUC against the task's outcome. Retrievals that showed nothing are
    left out.
    """
    from memory.policy.metrics import roc_auc
    from memory.policy.train import case_contributions

    return _set_auc(data, case_contributions(model, data, tokenizer), roc_auc)


def similarity_selection_auc(data: Any) -> float:
    """`selection_auc` of plain similarity (the sum of the shown cases' similarities)."""
    from memory.policy.metrics import roc_auc

    return _set_auc(data, data.features[:, 0].astype(np.float64), roc_auc)


def _set_auc(data: Any, per_row: np.ndarray, roc_auc: Any) -> float:
    keep = ~data.is_null
    if not keep.any():
        return float("nan")
    _, first, inverse = np.unique(data.group[keep], return_index=True, return_inverse=True)
    sums = np.bincount(inverse, weights=per_row[keep], minlength=first.size)
    return roc_auc(data.target[keep][first] > 0.5, sums)


def train_and_promote(
    data: Any,
    policy_path: str | os.PathLike[str],
    config: Any = None,
    *,
    min_queries: int = 10,
    gate_fraction: float = 0.2,
    **metadata: Any,
) -> Promotion:
    """Train a candidate and install it only if it selects at least as well as what would serve instead.

    Queries are split three ways (seeded): training, validation (early stopping) and a gate set
    that neither saw. On the gate set the candidate's `selection_auc` must match plain
    similarity's and the incumbent checkpoint's. An incumbent that now loses to similarity is
    retired (moved to ``<policy>.retired``), so retrieval falls back to similarity instead of
    serving a policy that the newest outcomes say is worse.

    Args:
        data: `PolicyData` to learn from.
        policy_path: Checkpoint to create or replace.
        config: A `TrainConfig` (defaults otherwise).
        min_queries: Do nothing below this many distinct judged queries.
        gate_fraction: Share of queries held out for the promotion decision.
        **metadata: Extra checkpoint metadata.

    Returns:
        The decision (not yet recorded in the history; see `record_promotion`).

    """
    from memory.policy.checkpoint import PolicyCheckpointError, load_checkpoint, save_checkpoint
    from memory.policy.train import TrainConfig, checkpoint_metadata, train_policy

    cfg = config or TrainConfig()
    path = Path(policy_path)
    if data.n_queries < min_queries:
        return Promotion(
            False, f"only {data.n_queries} judged queries (< {min_queries})", n_rows=len(data), n_queries=data.n_queries
        )
    train, val, gate = data.split_by_query((cfg.val_fraction, gate_fraction), seed=cfg.seed)
    base = {"n_rows": len(data), "n_queries": data.n_queries}
    if any(len(set(part.target.tolist())) < 2 for part in (train, val, gate)):
        return Promotion(False, "training, validation or gate queries hold a single outcome class", **base)
    result = train_policy(train, val, cfg, progress=False)
    cand = selection_auc(result.model, gate, result.tokenizer)
    sim = similarity_selection_auc(gate)
    incumbent, inc = "similarity", sim
    if path.is_file():
        try:
            current = load_checkpoint(path)
            incumbent, inc = current.version, selection_auc(current.model, gate, current.tokenizer)
        except PolicyCheckpointError as exc:
            log.warning("the current policy cannot be loaded (%s); comparing against similarity", exc)
    if not math.isfinite(cand) or (math.isfinite(sim) and cand < sim):
        reason = "selects worse than similarity on held-out queries"
        if incumbent != "similarity" and math.isfinite(inc) and math.isfinite(sim) and inc < sim:
            with FileLock(str(path) + ".lock", timeout=60):
                os.replace(path, path.with_name(path.name + ".retired"))
            reason += f"; incumbent {incumbent} does too and was retired (similarity serves)"
        return Promotion(False, reason, _finite(cand), _finite(inc), incumbent, similarity_auc=_finite(sim), **base)
    if math.isfinite(inc) and cand < inc:
        return Promotion(False, "selects worse than the incumbent on held-out queries", _finite(cand), _finite(inc), incumbent,
                         similarity_auc=_finite(sim), **base)  # fmt: skip
    meta = checkpoint_metadata(
        data, train, val, result, cfg,
        promotion={"incumbent": incumbent, "incumbent_auc": _finite(inc), "candidate_auc": _finite(cand),
                   "similarity_auc": _finite(sim), "gate_queries": gate.n_queries},
        **metadata,
    )  # fmt: skip
    with FileLock(str(path) + ".lock", timeout=60):
        version = save_checkpoint(result.model, path, metadata=meta)
    log.info(
        "policy %s promoted (held-out selection AUC %.4f vs %s %.4f, similarity %.4f)",
        version,
        cand,
        incumbent,
        inc,
        sim,
    )
    return Promotion(True, "selects at least as well as similarity and the incumbent on held-out queries", _finite(cand),
                     _finite(inc), incumbent, version, similarity_auc=_finite(sim), **base)  # fmt: skip
