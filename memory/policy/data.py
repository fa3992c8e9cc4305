"""Training data for the policy: the experience log and the original project's pair format.

Both become one `PolicyData`: per row a query (by index), a case embedding, scalar features, a
binary target (did the task succeed) and a weight. Rows are grouped by query so that every split is
by query: the original data repeats each query in 8 rows, so a row-level split would leak.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memory.cases import POSITIVE_THRESHOLD, normalise_question
from memory.embeddings import Embedder
from memory.policy.features import N_FEATURES, feature_row, features_for_candidates

log = logging.getLogger(__name__)


class PolicyDataError(ValueError):
    """Training data is missing, malformed or unusable; the message says which and where."""


@dataclass
class PolicyData:
    """Rows of (query, case, features) -> success, grouped by query."""

    queries: list[str]
    query_emb: np.ndarray
    q_index: np.ndarray
    case_emb: np.ndarray
    features: np.ndarray
    is_null: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    case_ids: list[str]
    sources: list[str] = field(default_factory=list)
    # Retrieval of each row: the cases shown together to one task share a group and its outcome.
    # None means every row is its own retrieval (the original pair format).
    group: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.group is None:
            self.group = np.arange(len(self.target), dtype=np.int64)

    def __len__(self) -> int:
        return int(self.target.shape[0])

    @property
    def row_groups(self) -> np.ndarray:
        """``group`` as construction leaves it: never None."""
        assert self.group is not None
        return self.group

    @property
    def dim(self) -> int:
        """Embedding size."""
        return int(self.query_emb.shape[1])

    @property
    def n_queries(self) -> int:
        """Distinct queries that have at least one row."""
        return int(np.unique(self.q_index).size)

    def subset(self, rows: np.ndarray) -> PolicyData:
        """The given rows (the query table is shared)."""
        rows = np.asarray(rows, dtype=np.int64)
        return PolicyData(
            queries=self.queries,
            query_emb=self.query_emb,
            q_index=self.q_index[rows],
            case_emb=self.case_emb[rows],
            features=self.features[rows],
            is_null=self.is_null[rows],
            target=self.target[rows],
            weight=self.weight[rows],
            case_ids=[self.case_ids[i] for i in rows],
            sources=list(self.sources),
            group=self.row_groups[rows],
        )

    def split_by_query(self, fractions: Sequence[float], seed: int = 0) -> list[PolicyData]:
        """Partition queries (not rows) at random into parts of the given fractions.

        Args:
            fractions: Fractions of the held-out parts, e.g. ``(0.2,)`` for train/val or
                ``(0.1, 0.2)`` for train/val/test; the training part gets the rest.
            seed: Seed of the shuffle, so a split is reproducible.

        Returns:
            ``[train, part1, part2, ...]``.

        """
        if sum(fractions) >= 1.0 or any(f < 0 for f in fractions):
            raise ValueError(f"held-out fractions {fractions} must be >= 0 and sum below 1")
        groups = np.unique(self.q_index)
        order = np.random.default_rng(seed).permutation(groups)
        sizes = [round(f * groups.size) for f in fractions]
        if groups.size >= len(fractions) + 1:
            # Every held-out part gets at least one query when there are enough.
            sizes = [max(1, s) for s in sizes]
        parts, start = [], sum(sizes)
        assigned = [order[start:]]
        pos = 0
        for s in sizes:
            assigned.append(order[pos : pos + s])
            pos += s
        for qs in assigned:
            parts.append(self.subset(np.flatnonzero(np.isin(self.q_index, qs))))
        return parts

    def data_hash(self) -> str:
        """Content hash of the rows (queries, cases, targets, weights): recorded in checkpoints."""
        h = hashlib.sha256()
        for i in range(len(self)):
            h.update(
                json.dumps(
                    [
                        self.queries[self.q_index[i]],
                        self.case_ids[i],
                        float(self.target[i]),
                        round(float(self.weight[i]), 6),
                    ]
                ).encode()
            )
        return h.hexdigest()

    def query_texts(self) -> list[str]:
        """Per-row query text (the fine-tuned variant re-encodes queries)."""
        return [self.queries[i] for i in self.q_index]


def concat(parts: Sequence[PolicyData]) -> PolicyData:
    """Join datasets, merging queries that appear in several (so splits stay by query)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        raise PolicyDataError("no training rows: give --experience and/or --training-data with judged examples")
    if len(parts) == 1:
        return parts[0]
    queries: list[str] = []
    q_emb: list[np.ndarray] = []
    key_to_idx: dict[str, int] = {}
    q_index = []
    groups, offset = [], 0
    for p in parts:
        groups.append(p.row_groups + offset)
        offset += int(p.row_groups.max()) + 1 if len(p) else 0
        remap = np.empty(len(p.queries), dtype=np.int64)
        for i, q in enumerate(p.queries):
            key = normalise_question(q)
            if key not in key_to_idx:
                key_to_idx[key] = len(queries)
                queries.append(q)
                q_emb.append(p.query_emb[i])
            remap[i] = key_to_idx[key]
        q_index.append(remap[p.q_index])
    return PolicyData(
        queries=queries,
        query_emb=np.stack(q_emb),
        q_index=np.concatenate(q_index),
        case_emb=np.concatenate([p.case_emb for p in parts]),
        features=np.concatenate([p.features for p in parts]),
        is_null=np.concatenate([p.is_null for p in parts]),
        target=np.concatenate([p.target for p in parts]),
        weight=np.concatenate([p.weight for p in parts]),
        case_ids=[c for p in parts for c in p.case_ids],
        sources=[s for p in parts for s in p.sources],
        group=np.concatenate(groups),
    )


def _embed_unique(embedder: Embedder, texts: Iterable[str]) -> dict[str, np.ndarray]:
    uniq = list(dict.fromkeys(texts))
    if not uniq:
        return {}
    vecs = embedder.embed(uniq)
    return {t: np.asarray(v, dtype=np.float32) for t, v in zip(uniq, vecs, strict=True)}


def _as_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise PolicyDataError(f"{where}: truth_label must be true/false, got {value!r}")


def read_training_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of the original ``training_data.jsonl`` (``query, case, case_label, plan, truth_label``).

    Raises:
        PolicyDataError: The file is missing or a row is malformed (with its line number).

    """
    p = Path(path)
    if not p.is_file():
        raise PolicyDataError(f"no training data at {p}")
    rows = []
    with open(p, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{p}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PolicyDataError(f"{where}: not JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise PolicyDataError(f"{where}: expected an object, got {type(row).__name__}")
            missing = [k for k in ("query", "case", "truth_label") if k not in row]
            if missing:
                raise PolicyDataError(
                    f"{where}: missing field(s) {missing} (expected query, case, case_label, plan, truth_label)"
                )
            if not str(row["query"]).strip() or not str(row["case"]).strip():
                raise PolicyDataError(f"{where}: empty query or case")
            row["truth_label"] = _as_bool(row["truth_label"], where)
            label = row.get("case_label") or "unknown"
            if label not in ("positive", "negative", "unknown"):
                raise PolicyDataError(f"{where}: case_label must be positive/negative, got {label!r}")
            row["case_label"] = label
            rows.append(row)
    if not rows:
        raise PolicyDataError(f"{p} holds no rows")
    return rows


def from_training_rows(rows: Sequence[dict[str, Any]], embedder: Embedder, source: str = "training_data") -> PolicyData:
    """Build `PolicyData` from original-format rows; case texts are embedded like bank cases.

    The format has no usage statistics and no reward beyond the label, so those features are
    derived from ``case_label`` (reward 1/0) and zero usage.
    """
    key_to_idx: dict[str, int] = {}
    queries: list[str] = []
    q_index = np.empty(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        key = normalise_question(str(row["query"]))
        if key not in key_to_idx:
            key_to_idx[key] = len(queries)
            queries.append(str(row["query"]))
        q_index[i] = key_to_idx[key]
    vec = _embed_unique(embedder, queries + [str(r["case"]) for r in rows])
    query_emb = np.stack([vec[q] for q in queries])
    case_emb = np.stack([vec[str(r["case"])] for r in rows])
    sims = np.einsum("ij,ij->i", query_emb[q_index], case_emb)
    best = np.full(len(queries), -np.inf)
    np.maximum.at(best, q_index, sims)
    feats = np.stack(
        [
            feature_row(
                similarity=float(sims[i]),
                best_similarity=float(best[q_index[i]]),
                reward={"positive": 1.0, "negative": 0.0}.get(r["case_label"]),
                label=r["case_label"],
            )
            for i, r in enumerate(rows)
        ]
    )
    from memory.cases import case_id_for

    return PolicyData(
        queries=queries,
        query_emb=query_emb,
        q_index=q_index,
        case_emb=case_emb.astype(np.float32),
        features=feats,
        is_null=np.zeros(len(rows), dtype=bool),
        target=np.array([float(r["truth_label"]) for r in rows], dtype=np.float32),
        weight=np.ones(len(rows), dtype=np.float32),
        case_ids=[case_id_for("imported", str(r["case"])) for r in rows],
        sources=[source],
    )


def load_training_data(path: str | os.PathLike[str], embedder: Embedder) -> PolicyData:
    """Read and embed an original-format ``training_data.jsonl``."""
    return from_training_rows(read_training_rows(path), embedder, source=f"training_data:{Path(path).name}")


def _success(record: dict[str, Any]) -> bool:
    if record.get("label") in ("positive", "negative"):
        return record["label"] == "positive"
    return float(record["reward"]) >= POSITIVE_THRESHOLD


def from_experience(
    records: Iterable[dict[str, Any]],
    embedder: Embedder,
    *,
    bank: Any = None,
    ips_clip: float = 10.0,
    source: str = "experience",
) -> PolicyData:
    """Build `PolicyData` from judged experience-log records.

    Every *shown* candidate becomes a row labelled with the task's outcome, weighted by inverse
    propensity (clipped) so cases the policy favoured do not dominate; candidates that were not
    shown cannot have influenced the outcome and are skipped. The rows of one retrieval share a
    ``group``, so set-level training (`TrainConfig.credit`) explains each outcome once, by all
    of its cases together. A retrieval that showed nothing becomes one "no case" row, which
    teaches the no-case baseline.

    Args:
        records: ``ExperienceLog.records()`` (judged).
        embedder: Embeds queries (and candidate questions when no bank is given).
        bank: A `CaseBank` to read stored case embeddings from (preferred: no re-encoding).
        ips_clip: Upper bound of the inverse-propensity weight.
        source: Name recorded in checkpoint metadata.

    """
    records = [r for r in records if r.get("reward") is not None or r.get("label") in ("positive", "negative")]
    planned: list[tuple[dict[str, Any], list[dict[str, Any]], np.ndarray]] = []
    need_ids: dict[str, set[str]] = {}
    for rec in records:
        cands = list(rec.get("candidates") or [])
        feats = features_for_candidates(cands)
        shown_pairs = [(c, feats[i]) for i, c in enumerate(cands) if c.get("shown")]
        planned.append(
            (
                rec,
                [c for c, _ in shown_pairs],
                np.stack([f for _, f in shown_pairs]) if shown_pairs else np.zeros((0, N_FEATURES), np.float32),
            )
        )
        for c, _ in shown_pairs:
            need_ids.setdefault(rec.get("namespace") or "default", set()).add(str(c["case_id"]))
    stored: dict[tuple[str, str], np.ndarray] = {}
    if bank is not None:
        for ns, wanted in need_ids.items():
            for cid, emb in bank.get_embeddings(sorted(wanted), namespace=ns).items():
                stored[(ns, cid)] = emb
    texts = [rec["query"] for rec, _, _ in planned]
    for rec, shown, _ in planned:
        ns = rec.get("namespace") or "default"
        texts += [c["question"] for c in shown if (ns, str(c["case_id"])) not in stored and c.get("question")]
    vec = _embed_unique(embedder, texts)

    key_to_idx: dict[str, int] = {}
    queries: list[str] = []
    q_rows, c_rows, f_rows, nulls, targets, weights, ids, groups = [], [], [], [], [], [], [], []
    skipped = 0
    dim = next(iter(vec.values())).shape[0] if vec else 384
    for g, (rec, shown, feats) in enumerate(planned):
        key = normalise_question(rec["query"])
        if key not in key_to_idx:
            key_to_idx[key] = len(queries)
            queries.append(rec["query"])
        qi = key_to_idx[key]
        y = float(_success(rec))
        ns = rec.get("namespace") or "default"
        if not shown:
            q_rows.append(qi)
            c_rows.append(np.zeros(dim, np.float32))
            f_rows.append(np.zeros(N_FEATURES, np.float32))
            nulls.append(True)
            targets.append(y)
            weights.append(1.0)
            ids.append("")
            groups.append(g)
            continue
        for c, f in zip(shown, feats, strict=True):
            emb = stored.get((ns, str(c["case_id"])))
            if emb is None and c.get("question"):
                emb = vec[c["question"]]
            if emb is None:
                skipped += 1
                continue
            prop = c.get("propensity")
            w = 1.0 if not prop or prop <= 0 else min(1.0 / float(prop), ips_clip)
            q_rows.append(qi)
            c_rows.append(np.asarray(emb, np.float32))
            f_rows.append(f)
            nulls.append(False)
            targets.append(y)
            weights.append(w)
            ids.append(str(c["case_id"]))
            groups.append(g)
    if skipped:
        log.warning(
            "skipped %d shown candidates whose case is neither in the bank nor logged with its question", skipped
        )
    if not targets:
        return PolicyData(
            queries=[], query_emb=np.zeros((0, dim), np.float32), q_index=np.zeros(0, np.int64),
            case_emb=np.zeros((0, dim), np.float32), features=np.zeros((0, N_FEATURES), np.float32),
            is_null=np.zeros(0, bool), target=np.zeros(0, np.float32), weight=np.zeros(0, np.float32),
            case_ids=[], sources=[source],
        )  # fmt: skip
    return PolicyData(
        queries=queries,
        query_emb=np.stack([vec[q] for q in queries]),
        q_index=np.array(q_rows, dtype=np.int64),
        case_emb=np.stack(c_rows),
        features=np.stack(f_rows).astype(np.float32),
        is_null=np.array(nulls, dtype=bool),
        target=np.array(targets, dtype=np.float32),
        weight=np.array(weights, dtype=np.float32),
        case_ids=ids,
        sources=[source],
        group=np.array(groups, dtype=np.int64),
    )


def load_experience(
    path: str | os.PathLike[str],
    embedder: Embedder,
    *,
    bank: Any = None,
    namespace: str | None = None,
    ips_clip: float = 10.0,
) -> PolicyData:
    """Read judged retrievals from an experience log file and build `PolicyData`."""
    from memory.experience import ExperienceLog

    p = Path(path)
    if not p.is_file():
        raise PolicyDataError(f"no experience log at {p}")
    records = list(ExperienceLog(p).records(judged_only=True, namespace=namespace))
    return from_experience(records, embedder, bank=bank, ips_clip=ips_clip, source=f"experience:{p.name}")
