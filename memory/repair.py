"""Rebuild a case bank whose vector index is missing or damaged, from the records it stores.

Chroma keeps each case's metadata (our full record rides in it) in ``chroma.sqlite3`` and the
vectors in per-collection HNSW folders. When an HNSW folder is lost or overwritten, counts and
listings still work while searches return nothing, or every read fails. The records are read
straight from SQLite (Chroma itself would try to load the broken index), re-embedded, and written
into a fresh bank at the same path; the damaged folder is kept beside it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import Timeout

from memory.bank import COLLECTION_PREFIX, SQLITE_FILE, BankError, CaseBank
from memory.bank_store import bank_lock
from memory.cases import Case
from memory.embeddings import Embedder


@dataclass
class RepairReport:
    """What a repair did."""

    path: str
    kept_at: str
    cases: dict[str, int] = field(default_factory=dict)
    skipped: int = 0


def read_records(sqlite_path: Path) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
    """Every case's metadata by namespace, and each namespace's embedder, read without Chroma.

    Raises:
        BankError: The SQLite file itself is unreadable.

    """
    try:
        conn = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
        # Damaged text decodes with U+FFFD; its record then fails to parse and is skipped.
        conn.text_factory = lambda raw: raw.decode("utf-8", errors="replace")
        try:
            rows = conn.execute(
                """
                SELECT c.name, m.id, m.key, m.string_value, m.int_value, m.float_value, m.bool_value
                FROM embedding_metadata m
                JOIN embeddings e ON e.id = m.id
                JOIN segments s ON s.id = e.segment_id
                JOIN collections c ON c.id = s.collection
                WHERE c.name LIKE ? ORDER BY m.id
                """,
                (COLLECTION_PREFIX + "%",),
            ).fetchall()
            embedders = dict(
                conn.execute(
                    "SELECT c.name, cm.str_value FROM collection_metadata cm JOIN collections c ON c.id = cm.collection_id WHERE cm.key = 'embedder'"
                ).fetchall()
            )
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise BankError(
            f"the case bank data file {sqlite_path} is damaged ({str(exc)[:200]}) and cannot be repaired in place. "
            f"Move the folder aside and re-import your last export (`memento memory import <file> --bank {sqlite_path.parent}`)."
        ) from exc
    metas: dict[tuple[str, int], dict[str, Any]] = {}
    for name, row_id, key, s, i, f, b in rows:
        value = (
            s if s is not None else i if i is not None else f if f is not None else (bool(b) if b is not None else None)
        )
        metas.setdefault((name, row_id), {})[key] = value
    by_ns: dict[str, list[dict[str, Any]]] = {}
    for (name, _), meta in metas.items():
        by_ns.setdefault(name[len(COLLECTION_PREFIX) :], []).append(meta)
    return by_ns, {n[len(COLLECTION_PREFIX) :]: e for n, e in embedders.items()}


def repair_bank(path: str | Path, embedder: Embedder, *, progress: Callable[[int], None] | None = None) -> RepairReport:
    """Rebuild the bank at ``path`` from its stored records (re-embedding every question).

    Raises:
        BankError: No bank there, its data file is unreadable, another process holds its lock,
            or it was embedded with another embedder.

    """
    path = Path(path).resolve()
    sqlite_path = path / SQLITE_FILE
    if not sqlite_path.is_file():
        raise BankError(f"no case bank data file at {sqlite_path}; nothing to repair")
    # The banks' own lock object: filelock makes a second object on a file this process holds wait for itself.
    lock = bank_lock(path)
    try:
        lock.acquire(timeout=10)
    except Timeout:
        raise BankError(f"the case bank at {path} is in use by another process; stop it, then repair") from None
    try:
        by_ns, embedders = read_records(sqlite_path)
        for ns, name in embedders.items():
            if name and name != embedder.name:
                raise BankError(
                    f"namespace {ns!r} of {path} was embedded with {name!r}, not {embedder.name!r}; "
                    "set MEMENTO_EMBEDDER (or --embedder) to match and repair again"
                )
        kept = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        path.rename(kept)
    finally:
        lock.release()
    report = RepairReport(path=str(path), kept_at=str(kept))
    bank = CaseBank(path, embedder=embedder)
    done = 0
    for ns, metas in sorted(by_ns.items()):
        cases = []
        for meta in metas:
            try:
                cases.append(Case.from_metadata(meta))
            except (KeyError, ValueError, TypeError, json.JSONDecodeError):
                report.skipped += 1
        for start in range(0, len(cases), 256):
            batch = cases[start : start + 256]
            bank.upsert(batch, keep_created=False)
            done += len(batch)
            if progress:
                progress(done)
        report.cases[ns] = len(cases)
    return report
