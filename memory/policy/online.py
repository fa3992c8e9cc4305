"""Online learning: retrain the policy in the background every N judged outcomes.

The graph's write-back step calls, after logging a judged outcome::

    OnlineTrainer.get(policy_path, experience_path, bank=bank).notify_outcome()

Every ``every`` calls (``MEMENTO_POLICY_RETRAIN_EVERY``, default 50; 0 turns it off) a thread
rebuilds the training set from the experience log and runs `train_and_promote`: a candidate is
trained on some queries and judged on others it never saw, against plain similarity and the
incumbent checkpoint. It replaces the checkpoint (atomically) only if it selects at least as well
as both; an incumbent that has fallen behind similarity is retired. Running selectors pick up the
change on their next call. Every decision is appended to ``<policy>.history.jsonl``.
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
from typing import Any, ClassVar

import numpy as np
from filelock import FileLock

log = logging.getLogger(__name__)

DEFAULT_EVERY = 50


@dataclass
class Promotion:
    """The outcome of one retraining round."""

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
    """Counts judged outcomes and retrains the policy in a background thread."""

    _instances: ClassVar[dict[tuple[str, str], OnlineTrainer]] = {}
    _instances_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        policy_path: str | os.PathLike[str],
        experience_path: str | os.PathLike[str] | None = None,
        *,
        every: int | None = None,
        bank: Any = None,
        embedder: Any = None,
        training_data: str | os.PathLike[str] | None = None,
        namespace: str | None = None,
        config: Any = None,
        min_queries: int = 10,
    ):
        """Configure a trainer (prefer `OnlineTrainer.get`, which shares one per paths).

        Args:
            policy_path: Checkpoint to create or replace.
            experience_path: Experience log to learn from (default: ``MEMENTO_EXPERIENCE_PATH``
                or ``.memento/experience.sqlite``).
            every: Retrain after this many outcomes (default ``MEMENTO_POLICY_RETRAIN_EVERY``
                or 50; 0 disables).
            bank: A `CaseBank` whose stored embeddings the training rows use.
            embedder: Embeds queries (default: the bank's, else the shared ``MEMENTO_EMBEDDER`` one).
            training_data: An original-format ``training_data.jsonl`` to train on as well.
            namespace: Only learn from retrievals of this namespace.
            config: A `TrainConfig` (defaults otherwise; progress bars are off).
            min_queries: Skip retraining below this many distinct judged queries.

        """
        from memory.experience import DEFAULT_LOG_PATH

        self.policy_path = Path(policy_path)
        self.experience_path = Path(experience_path or os.environ.get("MEMENTO_EXPERIENCE_PATH") or DEFAULT_LOG_PATH)
        if every is None:
            every = int(os.environ.get("MEMENTO_POLICY_RETRAIN_EVERY", DEFAULT_EVERY))
        if every < 0:
            raise ValueError(f"every must be >= 0, got {every}")
        self.every = every
        self.bank = bank
        self._embedder = embedder
        self.training_data = training_data
        self.namespace = namespace
        self.config = config
        self.min_queries = min_queries
        self.pending = 0
        self.last: Promotion | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @classmethod
    def get(
        cls, policy_path: str | os.PathLike[str], experience_path: str | os.PathLike[str] | None = None, **kwargs: Any
    ) -> OnlineTrainer:
        """The process-wide trainer of these paths (created with ``kwargs`` on first use)."""
        key = (str(Path(policy_path).resolve()), str(Path(experience_path).resolve()) if experience_path else "")
        with cls._instances_lock:
            trainer = cls._instances.get(key)
            if trainer is None:
                trainer = cls(policy_path, experience_path, **kwargs)
                cls._instances[key] = trainer
            elif kwargs.get("bank") is not None and trainer.bank is None:
                trainer.bank = kwargs["bank"]
            return trainer

    @property
    def running(self) -> bool:
        """Whether a retraining thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def notify_outcome(self, n: int = 1) -> bool:
        """Count ``n`` new judged outcomes; start a background retrain when due.

        Cheap and non-blocking: safe to call from a graph node after every task.

        Returns:
            True when this call started a retraining thread.

        """
        if self.every == 0:
            return False
        with self._lock:
            self.pending += n
            if self.pending < self.every or self.running:
                return False
            self.pending = 0
            self._thread = threading.Thread(target=self._run, name="memento-policy-retrain", daemon=True)
            self._thread.start()
            return True

    def wait(self, timeout: float | None = None) -> Promotion | None:
        """Block until the current retrain (if any) ends; returns the latest decision."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.last

    def _run(self) -> None:
        try:
            self.retrain()
        except Exception as exc:  # a background failure must never take the graph down
            log.exception("background policy retraining failed")
            self.last = Promotion(False, f"failed: {type(exc).__name__}: {exc}", finished_at=time.time())

    def _data(self):
        from memory.embeddings import get_embedder
        from memory.experience import ExperienceLog
        from memory.policy.data import concat, from_experience, load_training_data

        # The bank's own embedder: query vectors must live in the space its cases were stored in.
        embedder = self._embedder or (
            self.bank.embedder if self.bank is not None else get_embedder(os.environ.get("MEMENTO_EMBEDDER", "minilm"))
        )
        parts = []
        if self.experience_path.is_file():
            records = list(ExperienceLog(self.experience_path).records(judged_only=True, namespace=self.namespace))
            parts.append(from_experience(records, embedder, bank=self.bank, source=f"experience:{self.experience_path.name}"))
        if self.training_data:
            parts.append(load_training_data(self.training_data, embedder))
        return concat(parts)

    def retrain(self) -> Promotion:
        """Train a candidate now (in this thread) and promote it if it beats similarity and the incumbent."""
        from memory.policy.data import PolicyDataError

        try:
            data = self._data()
        except PolicyDataError as exc:
            return self._record(Promotion(False, f"no data: {exc}"))
        return self._record(train_and_promote(data, self.policy_path, self.config, min_queries=self.min_queries))

    def _record(self, promotion: Promotion) -> Promotion:
        self.last = record_promotion(self.policy_path, promotion)
        return self.last


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
        return Promotion(False, f"only {data.n_queries} judged queries (< {min_queries})", n_rows=len(data), n_queries=data.n_queries)
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
    log.info("policy %s promoted (held-out selection AUC %.4f vs %s %.4f, similarity %.4f)", version, cand, incumbent, inc, sim)
    return Promotion(True, "selects at least as well as similarity and the incumbent on held-out queries", _finite(cand),
                     _finite(inc), incumbent, version, similarity_auc=_finite(sim), **base)  # fmt: skip
