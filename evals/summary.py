"""Summaries of an eval's result records: per memory mode and pass, and per source.

The same numbers go to the terminal (a rich table), ``summary.md`` and ``summary.json``; both
files are replaced atomically so a reader never sees half a summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from evals.metrics import breakdown
from evals.results import write_atomic, write_json_atomic

_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # (field, heading, format)
    ("n", "n", "{:d}"),
    ("accuracy", "accuracy", "{:.3f}"),
    ("exact_match", "EM", "{:.3f}"),
    ("f1", "F1", "{:.3f}"),
    ("tokens_per_task", "tokens/task", "{:.0f}"),
    ("cost_usd", "cost $", "{:.4f}"),
    ("latency_mean_s", "latency/task s", "{:.2f}"),
    ("errors", "errors", "{:d}"),
)


def summarize(records: list[dict[str, Any]], *, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Aggregate records per (mode, pass, split) and per (mode, pass, source).

    Args:
        records: Result records (one per mode, pass and task; deduplicated by the caller).
        meta: Run settings and notes to carry into the JSON summary.

    """
    overall = [
        {"mode": m, "iteration": i, "split": s, **agg}
        for (m, i, s), agg in breakdown(records, ("mode", "iteration", "split")).items()
    ]
    per_source = [
        {"mode": m, "iteration": i, "split": s, "source": src, **agg}
        for (m, i, s, src), agg in breakdown(records, ("mode", "iteration", "split", "source")).items()
    ]
    return {"meta": meta or {}, "overall": overall, "per_source": per_source}


def learning_curves(summary: dict[str, Any]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Accuracy per pass for each mode and split: ``{split: {mode: [(pass, accuracy), ...]}}``."""
    curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for row in summary["overall"]:
        # A pass where every task crashed says nothing about learning; the tables still show it.
        if row["accuracy"] is None or row.get("errors") == row.get("n"):
            continue
        curves.setdefault(row["split"], {}).setdefault(row["mode"], []).append(
            (int(row["iteration"]), float(row["accuracy"]))
        )
    for per_mode in curves.values():
        for points in per_mode.values():
            points.sort()
    return curves


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    try:
        return spec.format(value)
    except (ValueError, TypeError):
        return str(value)


def _rows(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> tuple[list[str], list[list[str]]]:
    head = [*keys, *(h for _, h, _ in _COLUMNS)]
    body = [[str(r.get(k)) for k in keys] + [_fmt(r.get(f), spec) for f, _, spec in _COLUMNS] for r in rows]
    return head, body


def _markdown_table(head: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def to_markdown(summary: dict[str, Any]) -> str:
    """Render the summary as markdown: settings, overall table, per-source table, notes."""
    meta = summary.get("meta", {})
    parts = ["# Evaluation summary", ""]
    settings = {k: v for k, v in meta.items() if k != "notes"}
    if settings:
        parts += [f"- **{k}**: {v}" for k, v in settings.items()]
        parts.append("")
    parts += [
        "## Per memory mode and pass",
        "",
        _markdown_table(*_rows(summary["overall"], ("mode", "iteration", "split"))),
        "",
    ]
    sources = {r["source"] for r in summary["per_source"]}
    if len(sources) > 1:
        parts += [
            "## Per source",
            "",
            _markdown_table(*_rows(summary["per_source"], ("mode", "iteration", "split", "source"))),
            "",
        ]
    notes = meta.get("notes") or []
    if notes:
        parts += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(parts)


def rich_table(summary: dict[str, Any], *, per_source: bool = False) -> Table:
    """Build a rich table of the overall (or per-source) rows."""
    keys = ("mode", "iteration", "split", "source") if per_source else ("mode", "iteration", "split")
    rows = summary["per_source"] if per_source else summary["overall"]
    head, body = _rows(rows, keys)
    table = Table(title="Per source" if per_source else "Evaluation summary")
    for i, h in enumerate(head):
        table.add_column(h, justify="left" if i < len(keys) else "right")
    for row in body:
        table.add_row(*row)
    return table


def write_summary(summary: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``summary.json`` and ``summary.md`` atomically; returns their paths."""
    out = Path(out_dir)
    json_path, md_path = out / "summary.json", out / "summary.md"
    write_json_atomic(json_path, summary)
    write_atomic(md_path, to_markdown(summary))
    return json_path, md_path


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    """Print the overall table, the per-source table when there are several sources, and notes."""
    console = console or Console()
    console.print(rich_table(summary))
    if len({r["source"] for r in summary["per_source"]}) > 1:
        console.print(rich_table(summary, per_source=True))
    for note in summary.get("meta", {}).get("notes") or []:
        console.print(f"[yellow]note:[/yellow] {note}")
