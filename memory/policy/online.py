"""Online learning: retrain the policy in the background every N judged outcomes.

The graph's write-back step calls, after logging a judged outcome::

    OnlineTrainer.get(policy_path, experience_path, bank=bank).notify_outcome()

Every ``every`` calls (``MEMENTO_POLICY_RETRAIN_EVERY``, default 50; 0 turns it off) a thread
rebuilds the training set from the experience log, trains a candidate, and scores it and the
incumbent (the current checkpoint, or plain similarity when there is none) on the same held-out
queries. The candidate replaces the checkpoint (atomically) only if its validation AUC does not
regress; running selectors pick it up on their next call. Every decision is appended to
``<policy>.history.jsonl``.
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

    def _incumbent_auc(self, val) -> tuple[str, float]:
        from memory.policy.checkpoint import PolicyCheckpointError, load_checkpoint
        from memory.policy.metrics import roc_auc
        from memory.policy.train import predict

        if self.policy_path.is_file():
            try:
                current = load_checkpoint(self.policy_path)
                return current.version, roc_auc(val.target > 0.5, predict(current.model, val, current.tokenizer))
            except PolicyCheckpointError as exc:
                log.warning("the current policy cannot be loaded (%s); comparing against similarity", exc)
        # Without a usable policy retrieval ranks by similarity, so that is what must not regress.
        return "similarity", roc_auc(val.target > 0.5, val.features[:, 0])

    def retrain(self) -> Promotion:
        """Train a candidate now (in this thread) and promote it if validation AUC holds up."""
        from memory.policy.checkpoint import save_checkpoint
        from memory.policy.data import PolicyDataError
        from memory.policy.train import TrainConfig, checkpoint_metadata, train_policy

        cfg = self.config or TrainConfig()
        try:
            data = self._data()
        except PolicyDataError as exc:
            return self._record(Promotion(False, f"no data: {exc}"))
        if data.n_queries < self.min_queries:
            return self._record(
                Promotion(False, f"only {data.n_queries} judged queries (< {self.min_queries})", n_rows=len(data), n_queries=data.n_queries)
            )
        train, val = data.split_by_query((cfg.val_fraction,), seed=cfg.seed)
        base = {"n_rows": len(data), "n_queries": data.n_queries}
        if len(set(val.target.tolist())) < 2 or len(set(train.target.tolist())) < 2:
            return self._record(Promotion(False, "training or validation queries hold a single outcome class", **base))
        result = train_policy(train, val, cfg, progress=False)
        cand = result.val_metrics.get("auc", float("nan"))
        incumbent, inc = self._incumbent_auc(val)
        if not math.isfinite(cand) or (math.isfinite(inc) and cand < inc):
            return self._record(
                Promotion(False, "validation AUC would regress", _finite(cand), _finite(inc), incumbent, **base)
            )
        meta = checkpoint_metadata(
            data, train, val, result, cfg,
            online={"incumbent": incumbent, "incumbent_auc": _finite(inc), "candidate_auc": _finite(cand)},
        )  # fmt: skip
        with FileLock(str(self.policy_path) + ".lock", timeout=60):
            version = save_checkpoint(result.model, self.policy_path, metadata=meta)
        log.info("policy %s promoted (val AUC %.4f vs %s %.4f)", version, cand, incumbent, inc)
        return self._record(Promotion(True, "validation AUC did not regress", _finite(cand), _finite(inc), incumbent, version, **base))

    def _record(self, promotion: Promotion) -> Promotion:
        promotion.finished_at = time.time()
        self.last = promotion
        history = self.policy_path.with_name(self.policy_path.name + ".history.jsonl")
        try:
            history.parent.mkdir(parents=True, exist_ok=True)
            with open(history, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(asdict(promotion)) + "\n")
        except OSError as exc:
            log.warning("cannot append to %s: %s", history, exc)
        if not promotion.promoted:
            log.info("policy not promoted: %s", promotion.reason)
        return promotion
