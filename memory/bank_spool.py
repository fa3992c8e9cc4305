"""The write spool of an embedded bank: group commit for writers in several processes.

An embedded bank serialises its writes under the folder's file lock, and every write turn pays a
fixed price whatever its size (the lock hand-over, the check for other writers, Chroma replaying
its log tail into the index, the generation stamp). Single-case upserts from many processes would
each pay it. So an embedded `CaseBank.upsert` first appends its batch (cases as metadata, float32
vectors, its options) to this spool, a small SQLite table in its own file in the bank folder, and
then waits for the lock or for its entry to be applied, whichever comes first. Whoever gets the
lock applies *every* pending entry, in arrival order, as few batches as possible, and records each
entry's outcome: done (with the fields the merge changed, so the owner's cases are updated as an
in-process upsert would update them) or failed (with its error, raised to that entry's owner alone).

Crash safety: an entry is marked done only after it is applied; an entry left pending by a dead
process (or by a flusher that died mid-batch) is applied by the next flusher, and upserts are
idempotent (created time and usage counters are kept, the last write wins). Every write under the
bank lock drains the spool first, so a pending entry can never be applied after a later delete or
rewrite of the same case. An owner deletes its entry once it has read the outcome; entries whose
owner died before reading are deleted by a flusher after `_KEEP_S`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memory.bank_folder import BankError

SPOOL_FILE = "memento-spool.sqlite3"

PENDING, DONE, FAILED = 0, 1, 2
# Outcomes nobody came back for (their owner died) are dropped after this many seconds.
_KEEP_S = 600.0
# Fields an upsert's merge may change on the caller's cases.
MERGED = (
    "created_at",
    "updated_at",
    "times_retrieved",
    "retrieved_successes",
    "retrieved_failures",
    "last_retrieved_at",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    state INTEGER NOT NULL DEFAULT 0,
    keep_created INTEGER NOT NULL,
    embedder TEXT,
    cases TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vectors BLOB NOT NULL,
    outcome TEXT,
    done_at REAL
)
"""


@dataclass
class Entry:
    """A pending spool entry: one upsert call's batch."""

    id: int
    keep_created: bool
    embedder: str | None
    metadatas: list[dict[str, Any]]
    vectors: np.ndarray


class Spool:
    """The spool table of one bank folder (one connection per store, safe across threads)."""

    def __init__(self, folder: Path):
        self.path = folder / SPOOL_FILE
        self._conn: sqlite3.Connection | None = None
        self._mutex = threading.Lock()

    def _fail(self, exc: BaseException) -> BankError:
        return BankError(
            f"the write spool {self.path} of the case bank is unreadable ({type(exc).__name__}: {exc}); "
            "the bank itself is not affected. Stop every process using the bank, then delete that file "
            "(and its -wal and -shm files): only writes that were never acknowledged are lost."
        )

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
                try:
                    conn.execute("PRAGMA busy_timeout = 60000")
                    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                        conn.execute("PRAGMA journal_mode = WAL")
                    # A process crash loses nothing in WAL mode with NORMAL; an OS crash may lose a
                    # pending entry, whose owner had not been answered yet.
                    conn.execute("PRAGMA synchronous = NORMAL")
                    conn.execute(_SCHEMA)
                except BaseException:
                    conn.close()
                    raise
            except sqlite3.Error as exc:
                raise self._fail(exc) from exc
            self._conn = conn
        return self._conn

    def _run(self, fn: Any) -> Any:
        with self._mutex:
            try:
                return fn(self._db())
            except sqlite3.Error as exc:
                raise self._fail(exc) from exc

    def exists(self) -> bool:
        """Whether the spool file was ever created (no file: nothing can be pending)."""
        return self._conn is not None or self.path.exists()

    def add(
        self, metadatas: list[dict[str, Any]], vectors: np.ndarray, keep_created: bool, embedder: str | None
    ) -> int:
        """Append a batch; returns its entry id."""
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        payload = (int(keep_created), embedder, json.dumps(metadatas), int(vecs.shape[1]), vecs.tobytes())

        def add(db: sqlite3.Connection) -> int:
            cur = db.execute(
                "INSERT INTO entries (keep_created, embedder, cases, dim, vectors) VALUES (?, ?, ?, ?, ?)", payload
            )
            return int(cur.lastrowid or 0)

        return int(self._run(add))

    def pending(self) -> list[Entry]:
        """Every pending entry, in arrival order."""
        if not self.exists():
            return []
        rows = self._run(
            lambda db: db.execute(
                "SELECT id, keep_created, embedder, cases, dim, vectors FROM entries WHERE state = ? ORDER BY id",
                (PENDING,),
            ).fetchall()
        )
        entries = []
        for eid, keep, embedder, cases, dim, blob in rows:
            try:
                metas = json.loads(cases)
                vecs = np.frombuffer(blob, dtype=np.float32).reshape(len(metas), dim)
            except (ValueError, TypeError) as exc:
                raise self._fail(exc) from exc
            entries.append(Entry(int(eid), bool(keep), embedder, metas, vecs))
        return entries

    def finish(self, outcomes: dict[int, tuple[int, Any]], forget: int | None = None) -> None:
        """Record the outcome of applied entries (``id: (DONE, merged fields) or (FAILED, error)``).

        ``forget``: an entry whose owner is the caller, deleted instead (it has its outcome).
        """
        if not outcomes:
            return
        stamp = time.time()

        def finish(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "UPDATE entries SET state = ?, outcome = ?, done_at = ? WHERE id = ?",
                    [
                        (state, json.dumps(value), stamp, eid)
                        for eid, (state, value) in outcomes.items()
                        if eid != forget
                    ],
                )
                if forget is not None:
                    db.execute("DELETE FROM entries WHERE id = ?", (forget,))
                db.execute("DELETE FROM entries WHERE state != ? AND done_at < ?", (PENDING, stamp - _KEEP_S))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        self._run(finish)

    def outcome(self, eid: int) -> tuple[int, Any] | None:
        """An entry's state and outcome, or None while it is pending."""
        row = self._run(lambda db: db.execute("SELECT state, outcome FROM entries WHERE id = ?", (eid,)).fetchone())
        if row is None:
            raise BankError(f"the write spool {self.path} lost entry {eid} before it was answered")
        if row[0] == PENDING:
            return None
        try:
            return int(row[0]), json.loads(row[1])
        except (ValueError, TypeError) as exc:
            raise self._fail(exc) from exc

    def withdraw(self, eid: int) -> bool:
        """Delete an entry still pending (its owner gave up); False when it was answered already."""
        cur = self._run(lambda db: db.execute("DELETE FROM entries WHERE id = ? AND state = ?", (eid, PENDING)))
        return bool(cur.rowcount)

    def forget(self, eid: int) -> None:
        """Delete an answered entry (its owner has read the outcome)."""
        self._run(lambda db: db.execute("DELETE FROM entries WHERE id = ? AND state != ?", (eid, PENDING)))

    def close(self) -> None:
        """Close the connection; idempotent."""
        with self._mutex:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


# Errors an owner gets back as their own type; any other type comes back as a BankError naming it.
_KNOWN: dict[str, type[Exception]] = {
    "BankError": BankError,
    "ValueError": ValueError,
    "TypeError": TypeError,
    "KeyError": KeyError,
    "RuntimeError": RuntimeError,
}


def describe_error(exc: BaseException) -> dict[str, str]:
    """An exception as a spool outcome."""
    return {"type": type(exc).__name__, "message": str(exc)}


def rebuild_error(err: dict[str, str], location: str) -> Exception:
    """The exception an owner raises for a failed entry that another process applied."""
    kind = _KNOWN.get(err.get("type", ""))
    if kind is not None:
        return kind(err.get("message", ""))
    return BankError(f"writing to the case bank at {location} failed ({err.get('type')}: {err.get('message')})")
