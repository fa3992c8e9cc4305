"""The experience log: every retrieval and the outcome of the task that used it.

Each retrieval records the query, all candidates with their scores, which were shown and with what
selection propensity; the task's later reward is joined on ``retrieval_id``. This is the training
data of the learned case-selection policy. SQLite in WAL mode: durable, append-only, safe for
several processes, exportable as JSONL.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from memory.cases import now
from memory.config import MemoryConfig


class ExperienceLogError(RuntimeError):
    """The log file cannot be opened or read; the message names it and says how to recover."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS retrievals (
    retrieval_id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    task_id TEXT,
    query TEXT NOT NULL,
    selector TEXT NOT NULL,
    policy_version TEXT,
    candidates TEXT NOT NULL,
    created_at REAL NOT NULL,
    slates TEXT,
    arm TEXT
);
CREATE TABLE IF NOT EXISTS outcomes (
    retrieval_id TEXT PRIMARY KEY,
    reward REAL,
    label TEXT NOT NULL,
    reward_source TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS approvals (
    thread_id TEXT NOT NULL,
    tool_call_id TEXT NOT NULL,
    retrieval_id TEXT,
    tool TEXT NOT NULL,
    args TEXT NOT NULL,
    approved INTEGER NOT NULL,
    decided_by TEXT NOT NULL,
    reason TEXT,
    decided_at REAL NOT NULL,
    PRIMARY KEY (thread_id, tool_call_id)
);
"""


class ExperienceLog:
    """Append-only log of retrievals and outcomes in one SQLite file."""

    def __init__(self, path: str | os.PathLike[str] | None = None):
        """Open or create the log file.

        Raises:
            ExperienceLogError: The file exists but is not a readable SQLite database.

        """
        self.path = Path(path or MemoryConfig.from_env().experience_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        try:
            with self._conn() as conn:
                conn.executescript(_SCHEMA)
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from exc

    def _migrate(self) -> None:
        """Bring a log written by an older version up to this schema (adds columns, loses nothing)."""
        conn = self._conn()
        columns = {row[1] for row in conn.execute("PRAGMA table_info(retrievals)")}
        for column in ("slates", "arm"):
            if column in columns:
                continue
            try:
                with conn:
                    conn.execute(f"ALTER TABLE retrievals ADD COLUMN {column} TEXT")
            except sqlite3.OperationalError as exc:
                # Another process migrated it between the check and the change.
                if "duplicate column" not in str(exc):
                    raise

    def _error(self, exc: Exception) -> ExperienceLogError:
        return ExperienceLogError(
            f"the experience log at {self.path} cannot be used ({exc}); if it is corrupt, move it "
            "aside to start a new one (the case bank is unaffected)"
        )

    def _conn(self) -> sqlite3.Connection:
        # One connection per thread and process: sqlite connections must not cross a fork.
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            try:
                conn = sqlite3.connect(self.path, timeout=30.0)
                conn.execute("PRAGMA journal_mode=WAL")
                # Every committed record survives a crash of the machine, not only of the process.
                conn.execute("PRAGMA synchronous=FULL")
            except sqlite3.DatabaseError as exc:
                raise self._error(exc) from exc
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    def log_retrieval(
        self,
        retrieval_id: str,
        *,
        namespace: str,
        query: str,
        candidates: Sequence[Mapping[str, Any]],
        selector: str,
        policy_version: str | None = None,
        task_id: str | None = None,
        slates: list[Any] | None = None,
        arm: dict[str, Any] | None = None,
    ) -> None:
        """Record one retrieval; a repeat of the same id (a resumed run) is ignored.

        Args:
            retrieval_id: Unique per task attempt.
            namespace: Bank namespace.
            query: The question.
            candidates: ``{case_id, similarity, score, shown, propensity, label, reward}`` each.
            selector: ``similarity`` or ``learned`` (or ``none``).
            policy_version: Checkpoint version that scored the candidates.
            task_id: The task's id, if any.
            slates: The selector's distribution over shown sets, ``[[candidate indices],
                probability]`` each (off-policy evaluation of slates needs it); None if unknown.
            arm: Which serving arm chose (``{"arm": "bandit" | "similarity", "p": probability it
                was drawn}``), for the A/B comparison of arms; None outside learned mode.

        """
        with self._conn() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO retrievals (retrieval_id, namespace, task_id, query, selector, "
                "policy_version, candidates, created_at, slates, arm) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    retrieval_id,
                    namespace,
                    task_id,
                    query,
                    selector,
                    policy_version,
                    json.dumps(candidates),
                    now(),
                    None if slates is None else json.dumps([[list(map(int, st)), float(p)] for st, p in slates]),
                    None if arm is None else json.dumps(arm),
                ),
            )

    def log_outcome(
        self, retrieval_id: str, *, reward: float | None, label: str, reward_source: str | None = None
    ) -> None:
        """Join a task's outcome to its retrieval (re-judging replaces it)."""
        with self._conn() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO outcomes VALUES (?,?,?,?,?)",
                (retrieval_id, reward, label, reward_source, now()),
            )

    def claim_outcome(
        self, retrieval_id: str, *, reward: float | None, label: str, reward_source: str | None = None
    ) -> bool:
        """Log the first outcome of a retrieval; False (and nothing written) if it already has one.

        Atomic across processes, so an outcome reported by several clients at once counts once.
        """
        with self._conn() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO outcomes VALUES (?,?,?,?,?)",
                (retrieval_id, reward, label, reward_source, now()),
            )
        return cur.rowcount == 1

    def has_outcome(self, retrieval_id: str) -> bool:
        """Whether an outcome was already logged for this retrieval."""
        row = self._conn().execute("SELECT 1 FROM outcomes WHERE retrieval_id = ?", (retrieval_id,)).fetchone()
        return row is not None

    def log_approval(
        self,
        *,
        thread_id: str,
        tool_call_id: str | None,
        tool: str,
        args: dict[str, Any],
        approved: bool,
        by: str,
        at: float,
        reason: str = "",
        retrieval_id: str | None = None,
        **_: Any,
    ) -> None:
        """Record a person's decision on a sensitive tool call; a re-run of the same call keeps the first."""
        with self._conn() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO approvals VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    thread_id,
                    tool_call_id or "",
                    retrieval_id,
                    tool,
                    json.dumps(args, default=str),
                    int(approved),
                    by,
                    reason,
                    at,
                ),
            )

    def approvals(self, thread_id: str | None = None) -> list[dict[str, Any]]:
        """Recorded approval decisions (of one thread, or all), oldest first."""
        sql = "SELECT thread_id, tool_call_id, retrieval_id, tool, args, approved, decided_by, reason, decided_at FROM approvals"
        args: tuple[Any, ...] = ()
        if thread_id is not None:
            sql += " WHERE thread_id = ?"
            args = (thread_id,)
        rows = self._conn().execute(sql + " ORDER BY decided_at, rowid", args).fetchall()
        keys = ("thread_id", "tool_call_id", "retrieval_id", "tool", "args", "approved", "by", "reason", "at")
        return [dict(zip(keys, (*r[:4], json.loads(r[4]), bool(r[5]), *r[6:]), strict=True)) for r in rows]

    def records(
        self, *, judged_only: bool = True, namespace: str | None = None, retrieval_id: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Retrievals joined with outcomes, oldest first."""
        sql = (
            "SELECT r.retrieval_id, r.namespace, r.task_id, r.query, r.selector, r.policy_version, "
            "r.candidates, r.created_at, o.reward, o.label, o.reward_source, r.slates, r.arm FROM retrievals r "
            "LEFT JOIN outcomes o USING (retrieval_id)"
        )
        where, args = [], []
        if judged_only:
            where.append("o.reward IS NOT NULL")
        if namespace:
            where.append("r.namespace = ?")
            args.append(namespace)
        if retrieval_id:
            where.append("r.retrieval_id = ?")
            args.append(retrieval_id)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY r.created_at, r.rowid"
        for row in self._conn().execute(sql, args):
            yield {
                "retrieval_id": row[0],
                "namespace": row[1],
                "task_id": row[2],
                "query": row[3],
                "selector": row[4],
                "policy_version": row[5],
                "candidates": json.loads(row[6]),
                "created_at": row[7],
                "reward": row[8],
                "label": row[9],
                "reward_source": row[10],
                "slates": None if row[11] is None else json.loads(row[11]),
                "arm": None if row[12] is None else json.loads(row[12]),
            }

    def get(self, retrieval_id: str) -> dict[str, Any] | None:
        """One retrieval with its outcome (None fields until judged), or None."""
        return next(self.records(judged_only=False, retrieval_id=retrieval_id), None)

    def count(self, judged_only: bool = True) -> int:
        """Number of (judged) retrievals."""
        return sum(1 for _ in self.records(judged_only=judged_only))

    def export_jsonl(self, path: str | os.PathLike[str], judged_only: bool = False) -> int:
        """Write the joined log as JSONL; returns rows written."""
        n = 0
        tmp = Path(str(path) + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for rec in self.records(judged_only=judged_only):
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                n += 1
        os.replace(tmp, path)
        return n
