"""Import and export of cases as JSONL, in our format and in the original Memento project's.

Formats (detected per file from its first valid row):

* ``memento``: our `Case` records (`Case.to_dict`), optionally with ``embedding`` and ``embedder``
  so a restore into a bank with the same embedder skips re-encoding.
* ``memory``: the original ``memory.jsonl`` rows ``{case, plan, case_label}``, where ``plan`` is a
  JSON string ``{"plan": [{"id", "description"}]}``.
* ``training``: the original ``training_data.jsonl`` rows ``{query, case, case_label, plan,
  truth_label}``; the distinct cases are imported (the queries are policy training data).
* ``qpr``: plain ``{question, plan, reward}`` rows.

Imported rows in the original formats get ``reward_source="imported"`` and reward 1.0/0.0 from
their label. A malformed row is reported with its line number and skipped; every valid row is
still written. Rows are bounded: a line over `MAX_LINE_BYTES` or a question over
`MAX_QUESTION_CHARS` is refused (reported, not read into memory whole), and rewards must lie in
[0, 1].
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memory.cases import LABELS, STRING_FIELDS, Case, case_id_for
from memory.limits import CaseLimits

FORMATS = ("memento", "memory", "training", "qpr")
EXPORT_FORMATS = ("memento", "memory", "qpr")
if TYPE_CHECKING:
    import numpy as np

_LABEL_REWARD = {"positive": 1.0, "negative": 0.0}
# One row of any format is a few KB (an exported row with its embedding ~10 KB); a line far past
# that is a damaged or foreign file, and reading it whole would only exhaust memory.
MAX_LINE_BYTES = 1 << 20
MAX_QUESTION_CHARS = 20_000


class ImportFormatError(ValueError):
    """A file whose format cannot be recognised."""


@dataclass
class RowError:
    """A row that could not be imported."""

    line: int
    message: str


@dataclass
class ImportReport:
    """What an import did."""

    path: str
    format: str
    rows: int = 0
    written: int = 0
    duplicates: int = 0
    errors: list[RowError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no row was rejected."""
        return not self.errors


def detect_format(row: dict[str, Any]) -> str:
    """Name the format a row belongs to.

    Raises:
        ImportFormatError: The row matches no known format.

    """
    keys = set(row)
    if {"query", "case", "case_label"} <= keys:
        return "training"
    if {"case", "case_label"} <= keys:
        return "memory"
    if "question" in keys and keys & {"id", "namespace", "label", "reward_source", "created_at"}:
        return "memento"
    if "question" in keys:
        return "qpr"
    raise ImportFormatError(
        f"unrecognised row with keys {sorted(keys)}; expected one of the formats {FORMATS} "
        "(see `memento memory import --help`)"
    )


def _label(value: Any) -> str:
    label = str(value).strip().lower()
    if label not in _LABEL_REWARD:
        raise ValueError(f"case_label must be 'positive' or 'negative', got {value!r}")
    return label


def _text(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key!r} must be a non-empty string")
    if len(value) > MAX_QUESTION_CHARS:
        raise ValueError(f"{key!r} is {len(value):,} characters, over the {MAX_QUESTION_CHARS:,} limit of a question")
    return value


def _reward(value: Any) -> float | None:
    """A reward in [0, 1] or None (the range the judge and the policy use)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"reward must be a number or null, got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"reward must be between 0 and 1 (or null), got {value!r}")
    return float(value)


def _check_storable(case: Case, embedding: Any) -> None:
    """Reject a row whose fields have the wrong types here, not halfway through a batch write.

    Raises:
        ValueError: A field the bank cannot store; the message names it.

    """
    for name in STRING_FIELDS:
        value = getattr(case, name)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name!r} must be a string, got {type(value).__name__}")
    if not isinstance(case.models, dict) or not all(isinstance(v, str) for v in case.models.values()):
        raise ValueError("'models' must be an object of model names")
    from memory.bank import validate_namespace

    validate_namespace(case.namespace)
    case.to_metadata()  # the numeric fields are converted here
    if embedding is not None:
        import numpy as np  # here, not at import: `memento --help` must not pay for numpy

        try:
            vector = np.asarray(embedding, dtype=np.float32)
        except (ValueError, TypeError):
            raise ValueError("embedding must be a list of numbers") from None
        if vector.ndim != 1 or not np.isfinite(vector).all():
            raise ValueError("embedding must be a flat list of finite numbers")


def row_to_case(
    row: dict[str, Any], fmt: str, *, namespace: str | None, source: str
) -> tuple[Case, list[float] | None, str | None]:
    """Turn one row into a case (plus a stored embedding and its embedder, if the row has one).

    Args:
        row: The parsed JSON object.
        fmt: Its format (see `FORMATS`).
        namespace: Target namespace; None keeps a ``memento`` row's own namespace (others go to
            ``default``).
        source: Dataset source recorded on original-format rows without one.

    Raises:
        ValueError: The row is malformed.

    """
    case, embedding, embedder = _row_to_case(row, fmt, namespace=namespace, source=source)
    _check_storable(case, embedding)
    return case, embedding, embedder


def _row_to_case(
    row: dict[str, Any], fmt: str, *, namespace: str | None, source: str
) -> tuple[Case, list[float] | None, str | None]:
    if fmt in ("memory", "training"):
        label = _label(row.get("case_label"))
        case = Case(
            question=_text(row, "case"),
            namespace=namespace or "default",
            plan=row.get("plan") or [],
            reward=_LABEL_REWARD[label],
            label=label,  # type: ignore[arg-type]
            reward_source="imported",
            source=source,
        )
        return case, None, None
    if fmt == "qpr":
        reward = _reward(row.get("reward"))
        case = Case(
            question=_text(row, "question"),
            namespace=namespace or "default",
            plan=row.get("plan") or [],
            answer=str(row.get("answer") or ""),
            reward=reward,
            reward_source="imported" if reward is not None else "none",
            task_id=None if row.get("task_id") is None else str(row["task_id"]),
            source=row.get("source") or source,
        )
        return case, None, None
    if fmt == "memento":
        _text(row, "question")
        _reward(row.get("reward"))
        data = {k: v for k, v in row.items() if k not in ("embedding", "embedder")}
        case = Case.from_dict(data)
        if namespace and namespace != case.namespace:
            case.namespace = namespace
            case.id = case_id_for(namespace, case.question, case.task_id)
        elif row.get("id") and row["id"] != case.id:
            # Our ids are derived, so a mismatch means the row was edited by hand: trust the fields.
            case.id = case_id_for(case.namespace, case.question, case.task_id)
        embedding = row.get("embedding")
        if embedding is not None and not (isinstance(embedding, list) and embedding):
            raise ValueError("embedding must be a non-empty list of numbers")
        return case, embedding, row.get("embedder")
    raise ImportFormatError(f"unknown format {fmt!r}; expected one of {FORMATS}")


def _count_lines(path: Path) -> int:
    # In chunks: a file that is one huge line must not be read into memory whole.
    count, last = 0, b"\n"
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def _lines(path: Path, limit: int) -> Iterator[tuple[int, str | None, int]]:
    """``(line_number, text, size)``; text is None for a line over ``limit`` bytes (skipped unread)."""
    with open(path, "rb") as fh:
        lineno = 0
        while raw := fh.readline(limit + 1):
            lineno += 1
            if len(raw) <= limit or raw.endswith(b"\n"):
                yield lineno, raw.decode("utf-8", errors="replace"), len(raw)
                continue
            size = len(raw)
            while (chunk := fh.readline(1 << 20)) and not chunk.endswith(b"\n"):
                size += len(chunk)
            size += len(chunk)
            yield lineno, None, size


def iter_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """``(line_number, row, error)`` for every non-blank line."""
    for lineno, line, size in _lines(path, MAX_LINE_BYTES):
        if line is None:
            yield (
                lineno,
                None,
                f"the line is {size:,} bytes, over the {MAX_LINE_BYTES:,}-byte limit of one row; skipped unread",
            )
            continue
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield lineno, None, f"invalid JSON: {exc.msg} (column {exc.colno})"
            continue
        except RecursionError:
            yield lineno, None, "invalid row: the JSON is nested too deeply to read"
            continue
        if not isinstance(row, dict):
            yield lineno, None, f"expected a JSON object, got {type(row).__name__}"
            continue
        yield lineno, row, None


class _PipelinedWriter:
    """Writes embedded batches on one background thread, in order, while the caller embeds more.

    Batches that queue up while a write is in flight are merged into one larger write (a Chroma
    server pays per request). A failed write is raised to the caller at its next submit or close.
    """

    def __init__(
        self, bank: Any, keep_created: Callable[[], bool], progress: Callable[[int], None] | None, max_rows: int = 4096
    ):
        import queue
        import threading

        self._bank, self._keep_created, self._progress, self._max_rows = bank, keep_created, progress, max_rows
        self._queue: queue.Queue = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        # Rows a write refused (read by the caller after `close`).
        self.row_errors: list[RowError] = []
        self.failed: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="memento-import-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import queue

        import numpy as np

        done = False
        while not done:
            items = [self._queue.get()]
            rows = len(items[0][0]) if items[0] is not None else 0
            while items[-1] is not None and rows < self._max_rows:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
                rows += len(items[-1][0]) if items[-1] is not None else 0
            if items[-1] is None:
                done = True
                items.pop()
            if not items or self._error is not None:
                continue
            cases = [c for batch, _, _, _ in items for c in batch]
            lines = [n for _, _, _, batch_lines in items for n in batch_lines]
            vectors = np.concatenate([np.asarray(v, dtype=np.float32) for _, v, _, _ in items])
            keep = self._keep_created()
            try:
                try:
                    self._bank.upsert(cases, embeddings=vectors, keep_created=keep)
                except (ValueError, TypeError):
                    # One row the checks missed must not cost the batch: write row by row and
                    # report the rows that still fail.
                    for case, vector, line in zip(cases, vectors, lines, strict=True):
                        try:
                            self._bank.upsert([case], embeddings=[vector], keep_created=keep)
                        except (ValueError, TypeError) as exc:
                            self.row_errors.append(RowError(line, f"not stored: {type(exc).__name__}: {exc}"))
                            self.failed.add(case.id)
            except BaseException as exc:  # handed to the caller's thread
                self._error = exc
                continue
            if self._progress:
                self._progress(items[-1][2])

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, cases: list[Case], vectors: Any, last_line: int, lines: list[int] | None = None) -> None:
        """Queue a batch (blocks while four batches wait); ``lines`` are the rows' line numbers."""
        self._raise()
        self._queue.put((cases, vectors, last_line, lines if lines is not None else [last_line] * len(cases)))

    def close(self) -> None:
        """Wait for every queued write; raise the first write error."""
        self._queue.put(None)
        self._thread.join()
        self._raise()


def import_jsonl(
    bank: Any,
    path: str | os.PathLike[str],
    *,
    namespace: str | None = None,
    fmt: str | None = None,
    batch_size: int = 256,
    source: str | None = None,
    progress: Callable[[int], None] | None = None,
    limits: CaseLimits | None = None,
) -> ImportReport:
    """Import a JSONL file into a bank (upserts: re-importing a file changes nothing).

    Args:
        bank: The `CaseBank`.
        path: The file.
        namespace: Target namespace (None: a ``memento`` row keeps its own, others go to
            ``default``).
        fmt: Force a format instead of detecting it.
        batch_size: Cases embedded and written per batch.
        source: Dataset source for original-format rows (default ``memento:<file name>``).
        progress: Called with the number of lines consumed after each batch.
        limits: Caps on each case's answer, plan and trajectory summary, as `write_back` applies
            them to a run's case (an imported case is shown to the planner just the same).

    Raises:
        FileNotFoundError: No such file.
        ImportFormatError: The format cannot be recognised (no valid row to detect it from).

    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no import file at {path}")
    if fmt is not None and fmt not in FORMATS:
        raise ImportFormatError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    source = source or f"memento:{path.name}"
    report = ImportReport(path=str(path), format=fmt or "")
    pending: list[Case] = []
    pending_emb: list[list[float] | None] = []
    pending_lines: list[int] = []
    pending_index: dict[str, int] = {}
    seen: set[str] = set()
    last_line = 0

    writer = _PipelinedWriter(bank, keep_created=lambda: report.format != "memento", progress=progress)

    def flush() -> None:
        if not pending:
            return
        import numpy as np

        embedder = bank.embedder
        stored_ok = all(e is not None and len(e) == embedder.dim for e in pending_emb)
        vectors = np.asarray(pending_emb, dtype=np.float32) if stored_ok else None
        if vectors is None or vectors.ndim != 2 or vectors.shape[1] != embedder.dim:
            vectors = embedder.embed([c.embedding_text() for c in pending])
        # The write runs while the next batch is read and embedded.
        writer.submit(list(pending), vectors, last_line, list(pending_lines))
        pending.clear()
        pending_emb.clear()
        pending_lines.clear()
        pending_index.clear()

    for lineno, row, error in iter_rows(path):
        last_line = lineno
        report.rows += 1
        if error is not None:
            report.errors.append(RowError(lineno, error))
            continue
        assert row is not None
        if not report.format:
            try:
                report.format = detect_format(row)
            except ImportFormatError as exc:
                report.errors.append(RowError(lineno, str(exc)))
                continue
        try:
            case, embedding, embedder_name = row_to_case(row, report.format, namespace=namespace, source=source)
        except (ValueError, TypeError) as exc:
            report.errors.append(RowError(lineno, f"{type(exc).__name__}: {exc}"))
            continue
        except RecursionError:
            report.errors.append(RowError(lineno, "a field is nested too deeply to read"))
            continue
        if limits is not None:
            limits.apply(case, note=f"; full text in {path.name} line {lineno}")
        emb = embedding if embedder_name and embedder_name == bank.embedder.name else None
        if case.id in seen:
            # Same case again in this file (training rows repeat cases): the last row wins.
            report.duplicates += 1
            if case.id in pending_index:
                pending[pending_index[case.id]] = case
                pending_emb[pending_index[case.id]] = emb
                pending_lines[pending_index[case.id]] = lineno
                continue
        seen.add(case.id)
        pending_index[case.id] = len(pending)
        pending.append(case)
        pending_emb.append(emb)
        pending_lines.append(lineno)
        if len(pending) >= batch_size:
            flush()
    flush()
    writer.close()
    report.errors.extend(writer.row_errors)
    report.written = len(seen - writer.failed)
    if progress:
        progress(last_line)
    if not report.format:
        report.format = "unknown"
    return report


def case_to_row(
    case: Case, fmt: str, embedding: np.ndarray | None = None, embedder: str | None = None
) -> dict[str, Any] | None:
    """One export row, or None when the case cannot be expressed in that format.

    Raises:
        ValueError: Unknown export format.

    """
    if fmt == "memento":
        row = case.to_dict()
        if embedding is not None:
            row["embedding"] = [round(float(x), 7) for x in embedding]
            row["embedder"] = embedder
        return row
    if fmt == "memory":
        if case.label not in _LABEL_REWARD:
            return None
        return {"case": case.question, "plan": case.plan_text(), "case_label": case.label}
    if fmt == "qpr":
        return {"question": case.question, "plan": case.plan_text(), "reward": case.reward}
    raise ValueError(f"unknown export format {fmt!r}; expected one of {EXPORT_FORMATS}")


@dataclass
class ExportReport:
    """What an export did."""

    path: str
    format: str
    written: int = 0
    skipped: int = 0


def export_jsonl(
    bank: Any,
    path: str | os.PathLike[str],
    *,
    namespace: str | None = None,
    fmt: str = "memento",
    labels: tuple[str, ...] | None = None,
    with_embeddings: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ExportReport:
    """Write a namespace as JSONL (atomically: a crash leaves the old file in place).

    Args:
        bank: The `CaseBank`.
        path: Output file.
        namespace: Namespace to export (default: the bank's).
        fmt: ``memento`` (complete), ``memory`` or ``qpr`` (the original project's shapes; the
            ``memory`` format skips cases without a positive/negative label).
        labels: Export only these labels.
        with_embeddings: Add stored vectors to ``memento`` rows (a restore skips re-encoding).
        progress: Called with the number of cases written after each page.

    Raises:
        ValueError: Unknown format or label.

    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {EXPORT_FORMATS}")
    for label in labels or ():
        if label not in LABELS:
            raise ValueError(f"unknown label {label!r}; expected one of {LABELS}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    report = ExportReport(path=str(path), format=fmt)
    stats = bank.stats(namespace) if with_embeddings else None
    embedder = stats["embedder"] if stats else None
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for _ids, metas, embs in bank.iter_pages(namespace, embeddings=with_embeddings and fmt == "memento"):
            for j, meta in enumerate(metas):
                case = Case.from_metadata(meta)
                if labels and case.label not in labels:
                    report.skipped += 1
                    continue
                row = case_to_row(case, fmt, embs[j] if embs is not None else None, embedder)
                if row is None:
                    report.skipped += 1
                    continue
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                report.written += 1
            if progress:
                progress(report.written + report.skipped)
    os.replace(tmp, path)
    return report


def count_lines(path: str | os.PathLike[str]) -> int:
    """Lines in a file (the total of an import progress bar)."""
    return _count_lines(Path(path))
