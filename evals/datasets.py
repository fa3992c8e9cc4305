"""Evaluation datasets: one `Example` record from several public question formats.

Supported formats (auto-detected from the extension and the columns, or named with ``fmt``):

* ``jsonl`` — ours: ``{"question", "ground_truth"?, "task_id"?, "source"?}`` per line.
* ``deepresearcher`` — Memento's set: ``question``, ``ground_truth`` (alternatives joined by the
  literal ``<|answer_split|>``), ``data_source``.
* ``simpleqa`` — OpenAI SimpleQA CSV: ``metadata,problem,answer``.
* ``gaia`` — GAIA ``metadata.jsonl``: ``task_id, Question, Level, Final answer, file_name``; an
  attachment is resolved relative to the metadata file's folder.
* ``frames`` — Google FRAMES CSV: ``Prompt``, ``Answer`` plus an index and wiki-link columns.
* ``csv`` — our fields as CSV columns (``question``, ``ground_truth``, ``task_id``, ``source``).

Malformed rows are never skipped silently: every problem is collected with its line number and
one `DatasetError` lists them all, unless ``skip_bad`` is set, in which case the good rows load
and the problems come back in `Dataset.errors` for the caller to report.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.metrics import ANSWER_SPLIT
from memory.io import iter_rows

FORMATS: tuple[str, ...] = ("jsonl", "deepresearcher", "simpleqa", "gaia", "frames", "csv")

# FRAMES and SimpleQA cells can hold long multi-line text.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(frozen=True)
class Example:
    """One task of an evaluation stream."""

    task_id: str
    question: str
    ground_truth: str | None = None
    source: str = "unknown"
    file_path: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    line: int = 0

    def graph_input(self) -> dict[str, Any]:
        """Build the graph input; an attachment's path is appended so tools can open it."""
        question = self.question
        if self.file_path:
            question = f"{question}\n\nAttached file: {self.file_path}"
        return {
            "question": question,
            "ground_truth": self.ground_truth,
            "task_id": self.task_id,
            "source": self.source,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-plain form (written into result records)."""
        return {
            "task_id": self.task_id,
            "question": self.question,
            "ground_truth": self.ground_truth,
            "source": self.source,
            "file_path": self.file_path,
        }


@dataclass(frozen=True)
class RowError:
    """A problem with one row of a dataset file."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class Dataset:
    """Loaded examples plus the rows that were rejected (only non-empty with ``skip_bad``)."""

    path: str
    format: str
    examples: list[Example]
    errors: list[RowError] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)


class DatasetError(ValueError):
    """A dataset file is unreadable or holds malformed rows; lists every problem found."""

    def __init__(self, path: str | Path, errors: list[RowError], fmt: str | None = None, *, message: str | None = None):
        """Build a message naming the file, its format and each bad row (or use ``message``)."""
        self.path = str(path)
        self.errors = errors
        if message is not None:
            super().__init__(message)
            return
        shown = "\n".join(f"  {e}" for e in errors[:50])
        more = f"\n  ... and {len(errors) - 50} more" if len(errors) > 50 else ""
        kind = f" ({fmt})" if fmt else ""
        super().__init__(
            f"{len(errors)} malformed row(s) in {self.path}{kind}:\n{shown}{more}\n"
            "Fix the rows, or pass --skip-bad to load the rest and report these."
        )


def stable_task_id(source: str, question: str) -> str:
    """Deterministic id for a task that has none: a hash of its source and question."""
    digest = hashlib.sha256(f"{source}\n{question.strip()}".encode()).hexdigest()[:16]
    return f"t-{digest}"


def _pack_truth(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        items = [str(v).strip() for v in value if v is not None and str(v).strip()]
        return ANSWER_SPLIT.join(items) if items else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ValueError(f"ground truth must be a string or a list of strings, got {type(value).__name__}")
    return value.strip() or None


def _text(row: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ValueError(f"missing or empty {key!r}")
        return None
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError(f"{key!r} must be text, got {type(value).__name__}")
    return str(value).strip()


# -- row parsers: dict -> Example fields (task_id may be None: filled in afterwards) ------------


def _row_jsonl(row: dict[str, Any], _: Path) -> dict[str, Any]:
    return {
        "question": _text(row, "question"),
        "ground_truth": _pack_truth(row.get("ground_truth")),
        "task_id": _text(row, "task_id", required=False),
        "source": _text(row, "source", required=False) or "dataset",
    }


def _row_deepresearcher(row: dict[str, Any], _: Path) -> dict[str, Any]:
    return {
        "question": _text(row, "question"),
        "ground_truth": _pack_truth(row.get("ground_truth")),
        "task_id": _text(row, "task_id", required=False),
        "source": _text(row, "data_source", required=False) or "deepresearcher",
    }


def _row_gaia(row: dict[str, Any], path: Path) -> dict[str, Any]:
    task_id = _text(row, "task_id")
    file_name = _text(row, "file_name", required=False)
    file_path = None
    if file_name:
        attached = (path.parent / file_name).resolve()
        if not attached.is_file():
            raise ValueError(f"attachment {file_name!r} not found at {attached}")
        file_path = str(attached)
    level = row.get("Level")
    return {
        "question": _text(row, "Question"),
        "ground_truth": _pack_truth(row.get("Final answer")),
        "task_id": task_id,
        "source": f"gaia-L{level}" if level not in (None, "") else "gaia",
        "file_path": file_path,
        "metadata": {"level": level},
    }


def _row_simpleqa(row: dict[str, Any], _: Path) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    raw = (row.get("metadata") or "").strip()
    if raw:
        try:
            # SimpleQA writes its metadata as a Python dict literal, not JSON.
            parsed = ast.literal_eval(raw)
        except (ValueError, SyntaxError) as exc:
            raise ValueError(f"metadata is not a dict literal: {exc}") from exc
        meta = parsed if isinstance(parsed, dict) else {"metadata": parsed}
    return {
        "question": _text(row, "problem"),
        "ground_truth": _pack_truth(_text(row, "answer")),
        "task_id": None,
        "source": "simpleqa",
        "metadata": {k: v for k, v in meta.items() if isinstance(v, str | int | float)},
    }


def _row_frames(row: dict[str, Any], _: Path) -> dict[str, Any]:
    links = {k: v for k, v in row.items() if k and "wiki" in k.lower() and v}
    index = row.get("") or row.get("Unnamed: 0") or row.get("index")
    return {
        "question": _text(row, "Prompt"),
        "ground_truth": _pack_truth(_text(row, "Answer")),
        "task_id": f"frames-{index.strip()}" if isinstance(index, str) and index.strip() else None,
        "source": "frames",
        "metadata": {"reasoning_types": row.get("reasoning_types") or "", **links},
    }


def _row_csv(row: dict[str, Any], path: Path) -> dict[str, Any]:
    return _row_jsonl(row, path)


_PARSERS = {
    "jsonl": _row_jsonl,
    "deepresearcher": _row_deepresearcher,
    "gaia": _row_gaia,
    "simpleqa": _row_simpleqa,
    "frames": _row_frames,
    "csv": _row_csv,
}
_CSV_FORMATS = {"simpleqa", "frames", "csv"}


# -- readers: yield (line number, row dict or error message) ------------------------------------


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    # One JSONL reader with line-numbered errors serves the bank's import and the datasets.
    for lineno, row, error in iter_rows(path):
        if error is None:
            assert row is not None  # iter_rows yields a row or an error, never neither
            yield lineno, row
        else:
            yield lineno, error


def _read_csv(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            return
        header = [h.strip() for h in header]
        width = len(header)
        end = reader.line_num
        while True:
            start = end + 1
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                yield start, f"unreadable CSV: {exc}"
                end = reader.line_num
                continue
            end = reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != width:
                yield start, f"expected {width} columns, got {len(cells)}"
                continue
            yield start, dict(zip(header, cells, strict=True))


def _csv_header(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return [h.strip() for h in next(csv.reader(fh), [])]


def _first_json_row(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    return {}
                return row if isinstance(row, dict) else {}
    return {}


def detect_format(path: str | Path) -> str:
    """Guess a file's format from its extension and its first row's fields.

    Raises:
        DatasetError: The format cannot be recognised.

    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        row = _first_json_row(path)
        if "Question" in row and "Final answer" in row:
            return "gaia"
        if "data_source" in row:
            return "deepresearcher"
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        header = set(_csv_header(path))
        if {"problem", "answer"} <= header:
            return "simpleqa"
        if {"Prompt", "Answer"} <= header:
            return "frames"
        if "question" in header:
            return "csv"
        raise DatasetError(path, [RowError(1, f"unrecognised CSV header {sorted(header)}; pass --format")])
    raise DatasetError(path, [RowError(0, f"unrecognised extension {suffix!r}; pass --format ({', '.join(FORMATS)})")])


def _check_text_file(path: Path) -> None:
    """Refuse a binary or non-UTF-8 file with one line, before any parser trips over it.

    Raises:
        DatasetError: The file's start holds NUL bytes or is not UTF-8.

    """
    import codecs

    with path.open("rb") as fh:
        head = fh.read(64 * 1024)
    problem = None
    if b"\x00" in head:
        problem = "it holds binary data (NUL bytes)"
    else:
        try:
            # Incremental: a multi-byte character cut at the end of the sample is not an error.
            codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        except UnicodeDecodeError as exc:
            problem = f"it is not UTF-8 text (byte 0x{head[exc.start]:02x} at offset {exc.start})"
    if problem:
        raise DatasetError(path, [RowError(0, problem)], message=f"cannot read {path} as a dataset: {problem}")


def load_dataset(
    path: str | Path,
    fmt: str | None = None,
    *,
    skip_bad: bool = False,
    limit: int | None = None,
) -> Dataset:
    """Read a dataset file into examples with stable task ids.

    Args:
        path: The file (for GAIA, its ``metadata.jsonl``).
        fmt: One of `FORMATS`; detected when None or ``"auto"``.
        skip_bad: Load the good rows and return the bad ones in ``errors`` instead of raising.
        limit: Keep only the first ``limit`` good examples (all rows are still validated).

    Raises:
        DatasetError: The file is missing or unrecognised, or (without ``skip_bad``) has bad rows.

    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, [RowError(0, "file not found")])
    _check_text_file(path)
    fmt = detect_format(path) if fmt in (None, "", "auto") else fmt
    if fmt not in _PARSERS:
        raise DatasetError(path, [RowError(0, f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")])
    parse = _PARSERS[fmt]
    rows = _read_csv(path) if fmt in _CSV_FORMATS else _read_jsonl(path)

    examples: list[Example] = []
    errors: list[RowError] = []
    given_ids: dict[str, int] = {}
    generated: dict[str, int] = {}
    try:
        for lineno, row in rows:
            if isinstance(row, str):
                errors.append(RowError(lineno, row))
                continue
            try:
                fields_ = parse(row, path)
            except ValueError as exc:
                errors.append(RowError(lineno, str(exc)))
                continue
            task_id = fields_.pop("task_id")
            if task_id:
                if task_id in given_ids:
                    errors.append(
                        RowError(lineno, f"duplicate task_id {task_id!r} (first on line {given_ids[task_id]})")
                    )
                    continue
                given_ids[task_id] = lineno
            else:
                # Repeated questions (upstream sets have a few) get an occurrence suffix so resume
                # never mistakes the second copy for the finished first one.
                base = stable_task_id(fields_["source"], fields_["question"])
                seen = generated.get(base, 0)
                generated[base] = seen + 1
                task_id = base if seen == 0 else f"{base}-{seen + 1}"
            examples.append(Example(task_id=task_id, line=lineno, **fields_))
    except UnicodeDecodeError as exc:
        errors.append(RowError(0, f"not UTF-8 text: {exc}"))
    if errors and not skip_bad:
        raise DatasetError(path, errors, fmt)
    if limit is not None:
        examples = examples[: max(0, limit)]
    return Dataset(path=str(path), format=fmt, examples=examples, errors=errors)
