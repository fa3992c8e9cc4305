"""The case-value bandit in the graph: its checkpoint, its selector, and retraining from the log.

Files (beside each other): ``<policy>`` the newest fit of the bandit, with its ``share`` of
selections in the metadata (the rest go to similarity; `memory.policy.learner` explains the A/B
rollout), and ``<policy>.history.jsonl`` every decision with its estimate. Checkpoints are plain
tensors and lists, loaded with ``torch.load(weights_only=True)``.

`BanditSelector` is what `memory.retrieval` calls in learned mode; `retrain_from_log` is what the
online trainer runs every few dozen judged outcomes.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from memory.policy.bandit import (
    BanditConfig,
    CandidateCase,
    CaseValueModel,
    LoggedRetrieval,
    SimilarityPolicy,
    query_key,
    select_mixture,
)
from memory.policy.learner import START_SHARE, arm_gate

log = logging.getLogger(__name__)

KIND = "memento-case-value-bandit"
FORMAT = 1
DEFAULT_CONFIDENCE = 0.95


class BanditCheckpointError(ValueError):
    """A bandit checkpoint cannot be used; the message names the file and why."""


def canary_path(path: str | os.PathLike[str]) -> Path:
    """Where earlier versions kept an unpromoted candidate (read by nothing now; removed on retraining)."""
    return Path(str(path) + ".canary")


def history_path(path: str | os.PathLike[str]) -> Path:
    """Where every retraining decision is appended."""
    return Path(str(path) + ".history.jsonl")


def is_bandit_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether the file is a bandit checkpoint (cheap: reads it, without building the model)."""
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception:
        return False
    return isinstance(payload, dict) and payload.get("kind") == KIND


def save_bandit(model: CaseValueModel, path: str | os.PathLike[str], metadata: dict[str, Any] | None = None) -> str:
    """Write atomically (temp file + rename); returns the version string stored in it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    version = f"bandit-{time.strftime('%Y%m%d-%H%M%S')}-{model.n_rows}"
    payload = {"kind": KIND, "format": FORMAT, "version": version, "state": model.state(), "metadata": metadata or {}}
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return version


def load_bandit(path: str | os.PathLike[str]) -> tuple[CaseValueModel, str, dict[str, Any]]:
    """The model, its version and metadata.

    Raises:
        BanditCheckpointError: Unreadable, not a bandit checkpoint, or inconsistent.

    """
    p = Path(path)
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BanditCheckpointError(f"{p} cannot be read as a policy checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("kind") != KIND:
        raise BanditCheckpointError(f"{p} is not a case-value bandit checkpoint")
    if payload.get("format") != FORMAT:
        raise BanditCheckpointError(f"{p} has format {payload.get('format')}, this version reads {FORMAT}: retrain it")
    try:
        model = CaseValueModel.from_state(payload["state"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BanditCheckpointError(f"{p} is damaged ({exc}): delete it and let the policy retrain") from exc
    return model, str(payload.get("version")), dict(payload.get("metadata") or {})


@dataclass
class BanditChoice:
    """What retrieval needs from a selection: per hit shown or not, its score and propensity."""

    shown: np.ndarray
    scores: np.ndarray
    propensity: np.ndarray
    slate_propensity: float
    slates: list[tuple[tuple[int, ...], float]]
    order: np.ndarray
    arm: str = "bandit"
    arm_propensity: float = 1.0


def hit_candidates(hits: Sequence[Any]) -> list[CandidateCase]:
    """Bank search hits as bandit candidates (the stored embedding, never a re-encoding)."""
    missing = [i for i, h in enumerate(hits) if getattr(h, "embedding", None) is None]
    if missing:
        raise ValueError(f"{len(missing)} hits carry no embedding: search with include_embeddings=True")
    out = []
    for h in hits:
        source = getattr(h.case, "reward_source", None)
        out.append(
            CandidateCase(
                h.case.id,
                np.asarray(h.embedding, np.float32),
                float(h.similarity),
                h.case.label,
                source,
                question=h.case.question,
            )
        )
    return out


class BanditSelector:
    """Learned-mode retrieval: the bandit serving its share of selections, similarity the rest."""

    name = "learned"

    def __init__(self, model: CaseValueModel, version: str, share: float = START_SHARE):
        """Wrap a loaded (or prior) bandit and its share."""
        self.model = model
        self.version = version
        self.share = share
        self.similarity = SimilarityPolicy()

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None) -> BanditSelector:
        """The checkpoint at ``path`` and its share; the bandit's prior at an even split when there is none.

        Raises:
            BanditCheckpointError: A checkpoint exists but cannot be used.

        """
        if path and Path(path).is_file():
            model, version, meta = load_bandit(path)
            return cls(model, version, float(meta.get("share", START_SHARE)))
        return cls(CaseValueModel(), "prior", START_SHARE)

    def with_history(self, query: str, candidates: Sequence[CandidateCase]) -> list[CandidateCase]:
        """The candidates with this question's earlier outcomes per case, as of the last fit."""
        return self.model.with_history(query, candidates)

    def select(
        self, query_embedding: np.ndarray, hits: Sequence[Any], k: int, rng: np.random.Generator, query: str = ""
    ) -> BanditChoice:
        """Choose among the hits; propensities are exact for the mixture of the two arms."""
        return self.select_candidates(query_embedding, hit_candidates(hits), k, rng, query)

    def select_candidates(
        self,
        query_embedding: np.ndarray,
        cands: Sequence[CandidateCase],
        k: int,
        rng: np.random.Generator,
        query: str = "",
    ) -> BanditChoice:
        """`select` on candidates already built (e.g. with their pair history filled in)."""
        cands = list(cands)
        q = np.asarray(query_embedding, np.float32)
        sel = select_mixture(self.similarity, self.model, self.share, q, cands, k, rng, query)
        return BanditChoice(sel.shown, sel.effects, sel.propensity, sel.slate_propensity, sel.slates, sel.order,
                            sel.arm, sel.arm_propensity)  # fmt: skip


def logs_from_records(records: Iterable[dict[str, Any]], embedder: Any, bank: Any = None) -> list[LoggedRetrieval]:
    """Judged experience-log records as bandit training rows.

    Case vectors come from the bank (by id; cases no longer there are dropped from their
    retrieval's candidate list, which only costs that retrieval's OPE term); query vectors are
    embedded once per distinct question.
    """
    rows = [r for r in records if r.get("reward") is not None or r.get("label") in ("positive", "negative")]
    need: dict[str, set[str]] = {}
    for r in rows:
        for c in r.get("candidates") or []:
            need.setdefault(r.get("namespace") or "default", set()).add(str(c["case_id"]))
    stored: dict[tuple[str, str], np.ndarray] = {}
    if bank is not None:
        for ns, ids in need.items():
            for cid, emb in bank.get_embeddings(sorted(ids), namespace=ns).items():
                stored[(ns, cid)] = np.asarray(emb, np.float32)
    questions = sorted({r["query"] for r in rows})
    qvec = dict(zip(questions, np.asarray(embedder.embed(questions), np.float32), strict=True)) if questions else {}
    out = []
    for r in rows:
        ns = r.get("namespace") or "default"
        cands, shown, keep = [], [], []
        for i, c in enumerate(r.get("candidates") or []):
            emb = stored.get((ns, str(c["case_id"])))
            if emb is None:
                continue
            keep.append(i)
            # The pair history as it was at selection time (what the features were then).
            cands.append(CandidateCase(str(c["case_id"]), emb, float(c.get("similarity") or 0.0), str(c.get("label") or "unknown"),
                                       c.get("reward_source"), float(c.get("pair_successes") or 0.0),
                                       float(c.get("pair_failures") or 0.0), str(c.get("question") or "")))  # fmt: skip
            shown.append(bool(c.get("shown")))
        reward = r.get("reward")
        y = float(reward) if reward is not None else (1.0 if r.get("label") == "positive" else 0.0)
        slates = r.get("slates")
        if slates is not None and len(keep) != len(r.get("candidates") or []):
            slates = None  # candidate indices no longer line up with what was logged
        # The probability with which the logging policy showed exactly this set (IPS needs it).
        dist = {tuple(sorted(int(i) for i in st)): float(p) for st, p in slates} if slates else {}
        logged_p = dist.get(tuple(i for i, s in enumerate(shown) if s)) if slates else None
        arm = r.get("arm") or {}
        out.append(LoggedRetrieval(query_key(r["query"]), qvec[r["query"]], cands, np.array(shown, bool), min(1.0, max(0.0, y)),
                                   logged_p, arm.get("arm"), arm.get("p")))  # fmt: skip
    return out


@dataclass
class RetrainDecision:
    """One retraining round of the served bandit (appended to the history file)."""

    promoted: bool
    reason: str
    rows: int
    version: str | None
    candidate: float | None = None
    incumbent: float | None = None
    low: float | None = None
    confidence: float = DEFAULT_CONFIDENCE
    fit_seconds: float = 0.0
    finished_at: float = 0.0
    share: float = START_SHARE
    demoted: bool = False


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def retrain_from_log(
    logs: list[LoggedRetrieval],
    path: str | os.PathLike[str],
    *,
    k: int,
    config: BanditConfig | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    gate: bool = True,
) -> RetrainDecision:
    """Refit the bandit on the log, let the A/B comparison of arms set its share, and save both.

    ``k`` is kept for callers; the arm comparison does not replay selections.
    """
    started = time.perf_counter()
    share = START_SHARE
    if Path(path).is_file():
        try:
            share = float(load_bandit(path)[2].get("share", START_SHARE))
        except BanditCheckpointError as exc:
            log.warning("retraining over an unusable policy file: %s", exc)
    candidate = CaseValueModel(config or BanditConfig(seed=len(logs))).fit(logs)
    fit_s = time.perf_counter() - started
    promoted = demoted = False
    numbers: dict[str, float | None] = {}
    if gate:
        verdict = arm_gate(logs, share, confidence=confidence)
        est = verdict.estimate
        share, promoted, demoted, reason = verdict.share, verdict.promoted, verdict.demoted, verdict.reason
        numbers = {"candidate": _finite(est.candidate), "incumbent": _finite(est.incumbent), "low": _finite(est.low)}
    else:
        share, reason = 1.0, "no gate: the bandit serves every selection"
    meta = {"rows": len(logs), "decided_at": time.time(), "reason": reason, "share": share}
    version = save_bandit(candidate, path, meta)
    canary_path(path).unlink(missing_ok=True)
    decision = RetrainDecision(promoted, reason, len(logs), version, confidence=confidence, fit_seconds=fit_s,
                               finished_at=time.time(), share=share, demoted=demoted, **numbers)  # fmt: skip
    try:
        with open(history_path(path), "a", encoding="utf-8") as fh:
            fh.write(json.dumps(asdict(decision)) + "\n")
    except OSError as exc:
        log.warning("cannot append to %s: %s", history_path(path), exc)
    return decision
