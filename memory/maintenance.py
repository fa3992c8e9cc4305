"""Keeping a bank useful as it grows: merging near-duplicate cases and pruning to a capacity.

Both read the bank in pages (metadata and stored vectors, never re-encoding), decide, and then
delete in one write; both have a dry run that only reports.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memory.cases import Case, now

DAY = 86400.0


@dataclass
class DedupReport:
    """Groups of near-duplicates found and what was (or would be) removed."""

    groups: list[list[str]] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    dry_run: bool = True


def _quality(meta: dict[str, Any]) -> tuple[float, float, float]:
    # Judged beats unjudged, higher reward beats lower, then the most recent attempt.
    return (1.0 if meta.get("has_reward") else 0.0, float(meta.get("reward", -1.0)), float(meta.get("updated_at", 0.0)))


def find_near_duplicates(
    bank: Any, *, namespace: str | None = None, threshold: float = 0.95, neighbours: int = 8, batch: int = 256
) -> tuple[list[list[str]], dict[str, dict[str, Any]]]:
    """Groups of cases whose questions are at least ``threshold`` cosine-similar.

    Each case queries its nearest ``neighbours`` through the index (batched), and similar pairs
    are joined with union-find, so a chain of near-duplicates forms one group.

    Returns:
        ``(groups, metadata_by_id)``; groups have two or more ids, best case first.

    """
    ids: list[str] = []
    metas: dict[str, dict[str, Any]] = {}
    vectors: list[np.ndarray] = []
    for page_ids, page_metas, page_embs in bank.iter_pages(namespace, embeddings=True):
        ids.extend(page_ids)
        metas.update(zip(page_ids, page_metas, strict=True))
        vectors.extend(page_embs or [])
    parent = {i: i for i in ids}

    def root(i: str) -> str:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for start in range(0, len(ids), batch):
        hits = bank.nearest_ids(vectors[start : start + batch], neighbours + 1, namespace=namespace)
        for k, row in enumerate(hits):
            me = ids[start + k]
            for other, sim in row:
                if other != me and other in parent and sim >= threshold:
                    parent[root(other)] = root(me)
    groups: dict[str, list[str]] = {}
    for i in ids:
        groups.setdefault(root(i), []).append(i)
    out = [sorted(g, key=lambda i: _quality(metas[i]), reverse=True) for g in groups.values() if len(g) > 1]
    return out, metas


def dedup(bank: Any, *, namespace: str | None = None, threshold: float = 0.95, dry_run: bool = True) -> DedupReport:
    """Keep the best case of each near-duplicate group and delete the rest.

    The survivor is the judged case with the highest reward, most recent first among equals; it
    inherits the usage counters of the cases it replaces, so the policy's evidence is kept.
    """
    groups, metas = find_near_duplicates(bank, namespace=namespace, threshold=threshold)
    report = DedupReport(groups=groups, dry_run=dry_run)
    survivors: list[Case] = []
    for group in groups:
        keep, *drop = group
        report.kept.append(keep)
        report.removed.extend(drop)
        case = Case.from_metadata(metas[keep])
        for other in drop:
            m = metas[other]
            case.times_retrieved += int(m.get("times_retrieved", 0))
            case.retrieved_successes += int(m.get("retrieved_successes", 0))
            case.retrieved_failures += int(m.get("retrieved_failures", 0))
        survivors.append(case)
    if not dry_run and groups:
        vectors = bank.get_embeddings([c.id for c in survivors], namespace=namespace)
        bank.upsert(survivors, embeddings=[vectors[c.id] for c in survivors], keep_created=False)
        bank.delete(report.removed, namespace=namespace)
    return report


@dataclass(kw_only=True)
class PrunePolicy:
    """What pruning removes, most expendable first.

    Attributes:
        max_cases: Capacity; above it the lowest-ranked cases go (None: no capacity limit).
        unknown_max_age_days: Unjudged cases older than this go regardless of capacity.
        negative_max_age_days: Negative cases not retrieved (or, if never, not updated) for this
            long are stale and go regardless of capacity.
        keep_positive: Never remove positive cases, even to reach the capacity.

    """

    max_cases: int | None = None
    unknown_max_age_days: float | None = None
    negative_max_age_days: float | None = None
    keep_positive: bool = False


@dataclass
class PruneReport:
    """Cases removed (or that would be) and why."""

    before: int = 0
    removed: dict[str, str] = field(default_factory=dict)
    dry_run: bool = True

    @property
    def after(self) -> int:
        """Cases left."""
        return self.before - len(self.removed)


def prune_rank(meta: dict[str, Any], at: float) -> tuple[float, ...]:
    """Sort key: lower means removed earlier.

    Unjudged cases go first, then negatives, then positives; within a tier, lower reward, then
    cases that were shown in failed tasks more than successful ones, then the longest unused.
    """
    tier = {"unknown": 0, "negative": 1, "positive": 2}.get(meta.get("label", "unknown"), 0)
    used = float(meta.get("last_retrieved_at") or 0.0) or float(meta.get("updated_at", 0.0))
    net = int(meta.get("retrieved_successes", 0)) - int(meta.get("retrieved_failures", 0))
    return (tier, float(meta.get("reward", -1.0)), net, -(at - used))


def prune(
    bank: Any,
    policy: PrunePolicy,
    *,
    namespace: str | None = None,
    dry_run: bool = True,
    at: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> PruneReport:
    """Apply a `PrunePolicy` to a namespace.

    Args:
        bank: The `CaseBank`.
        policy: What to remove.
        namespace: Namespace (default: the bank's).
        dry_run: Only report.
        at: "Now" for age rules (tests pin it).
        progress: Called with cases scanned after each page.

    """
    at = now() if at is None else at
    rows: list[tuple[str, dict[str, Any]]] = []
    for ids, metas, _ in bank.iter_pages(namespace, 5000):
        rows.extend(zip(ids, metas, strict=True))
        if progress:
            progress(len(rows))
    report = PruneReport(before=len(rows), dry_run=dry_run)
    for cid, meta in rows:
        label = meta.get("label")
        age = (at - float(meta.get("updated_at", at))) / DAY
        used = float(meta.get("last_retrieved_at") or 0.0) or float(meta.get("updated_at", at))
        if label == "unknown" and policy.unknown_max_age_days is not None and age > policy.unknown_max_age_days:
            report.removed[cid] = f"unjudged for {age:.0f} days"
        elif (
            label == "negative"
            and policy.negative_max_age_days is not None
            and (at - used) / DAY > policy.negative_max_age_days
        ):
            report.removed[cid] = f"stale negative (unused for {(at - used) / DAY:.0f} days)"
    if policy.max_cases is not None:
        excess = len(rows) - len(report.removed) - policy.max_cases
        if excess > 0:
            left = [(cid, m) for cid, m in rows if cid not in report.removed]
            if policy.keep_positive:
                left = [(cid, m) for cid, m in left if m.get("label") != "positive"]
            left.sort(key=lambda r: prune_rank(r[1], at))
            for cid, meta in left[:excess]:
                report.removed[cid] = f"over capacity {policy.max_cases} ({meta.get('label')})"
    if not dry_run and report.removed:
        ids = list(report.removed)
        for start in range(0, len(ids), 5000):
            bank.delete(ids[start : start + 5000], namespace=namespace)
    return report


def parse_age(text: str | None) -> float | None:
    """``"30d"``, ``"12h"`` or a plain number of days; None passes through."""
    if text is None or text == "":
        return None
    text = text.strip().lower()
    scale = 1.0
    if text.endswith("d"):
        text = text[:-1]
    elif text.endswith("h"):
        text, scale = text[:-1], 1 / 24
    value = float(text) * scale
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"age must be a non-negative number of days, got {text!r}")
    return value
