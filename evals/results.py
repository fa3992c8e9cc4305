"""Result files that survive a crash: an append-only JSONL of per-task records, atomic summaries.

Each finished task is one JSON line, appended, flushed and fsynced before the next starts, so a
killed run loses at most the line being written. On resume the file is read back, a torn last
line is dropped (and cut from the file), and every ``(mode, iteration, task_id)`` already
present without an error is skipped.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

Key = tuple[str, int, str]


def record_key(record: dict[str, Any]) -> Key:
    """Identify a result by memory mode, pass number and task."""
    return (str(record["mode"]), int(record["iteration"]), str(record["task_id"]))


def write_atomic(path: str | Path, text: str) -> None:
    """Write a file so readers see the old or the new content, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, data: Any) -> None:
    """`write_atomic` for a JSON document."""
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def read_records(path: str | Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """Read a results JSONL, tolerating a torn last line.

    Args:
        path: The file; a missing file reads as empty.
        repair: Truncate the file after its last complete line so new appends start clean.

    Raises:
        ValueError: A line other than the last is not valid JSON (the file was edited or is
            not a results file); nothing is modified.

    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    # Every append ends with a newline; whatever follows the last one is a torn write.
    *complete, tail = data.split(b"\n")
    records: list[dict[str, Any]] = []
    good_end = 0
    for i, raw in enumerate(complete):
        if raw.strip():
            try:
                rec = json.loads(raw)
                if not isinstance(rec, dict):
                    raise ValueError("not an object")
            except ValueError as exc:
                if i == len(complete) - 1 and not tail.strip():
                    break  # a damaged final line: same as a torn one
                raise ValueError(
                    f"{path}: line {i + 1} is not a JSON result record ({exc}); "
                    "move the file aside or pass a new --out folder"
                ) from exc
            records.append(rec)
        good_end += len(raw) + 1
    if repair and good_end < len(data):
        with path.open("r+b") as fh:
            fh.truncate(good_end)
            fh.flush()
            os.fsync(fh.fileno())
    return records


class ResultStore:
    """The results JSONL of one eval output folder."""

    def __init__(self, path: str | Path):
        """Open (and repair) the file; remember which results are already finished."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.records: list[dict[str, Any]] = read_records(self.path, repair=True)

    def finished(self) -> set[Key]:
        """Keys of results that need no rerun (errored tasks are retried)."""
        return {record_key(r) for r in self.records if not r.get("error")}

    def append(self, record: dict[str, Any]) -> None:
        """Append one record durably (flush + fsync) before returning."""
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
            self.records.append(record)

    def latest(self) -> list[dict[str, Any]]:
        """One record per key: the last written (a retried error is replaced by its rerun)."""
        by_key: dict[Key, dict[str, Any]] = {}
        for rec in self.records:
            by_key[record_key(rec)] = rec
        return list(by_key.values())


def latest_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Deduplicate records by key, keeping the last one."""
    by_key: dict[Key, dict[str, Any]] = {}
    for rec in records:
        by_key[record_key(rec)] = rec
    return list(by_key.values())
