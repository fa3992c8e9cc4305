"""`memento memory ...`: inspect and maintain the case bank.

`memento --help` imports this module, so chromadb, numpy and torch are imported inside commands.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from memory.bank import CaseBank
    from memory.embeddings import LazyEmbedder

# No completion options: `memento memory …` also runs this app on its own (`graph.entry`), and the
# full CLI has none either.
app = typer.Typer(help="Inspect and maintain the case bank.", no_args_is_help=True, add_completion=False)
console = Console()
err_console = Console(stderr=True)

BankOpt = Annotated[
    str | None,
    typer.Option("--bank", envvar="MEMENTO_BANK_PATH", help="Folder of the embedded bank [default: .memento/cases]."),
]
UrlOpt = Annotated[
    str | None,
    typer.Option("--chroma-url", envvar="MEMENTO_CHROMA_URL", help="Chroma server URL (wins over --bank)."),
]
NamespaceOpt = Annotated[str, typer.Option("--namespace", "-N", envvar="MEMENTO_NAMESPACE", help="Bank namespace.")]
EmbedderOpt = Annotated[
    str,
    typer.Option(
        "--embedder", envvar="MEMENTO_EMBEDDER", help="minilm, openai:<model>, a model folder, or hash (tests)."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _open(
    bank: str | None,
    chroma_url: str | None,
    namespace: str,
    embedder: str | LazyEmbedder = "minilm",
    *,
    create: bool = False,
) -> CaseBank:
    from memory.bank import BankError, CaseBank
    from memory.embeddings import LazyEmbedder

    try:
        return CaseBank(
            bank,
            url=chroma_url or None,
            namespace=namespace,
            embedder=embedder if isinstance(embedder, LazyEmbedder) else LazyEmbedder(embedder),
            create=create,
        )
    except (BankError, ValueError) as exc:
        _fail(str(exc))
        raise  # unreachable: _fail exits


def _exit_read_only() -> None:
    """End a read-only command without interpreter teardown (Chroma's takes 0.4-1.3 s on 2 cores).

    Only when running as the real CLI (stdout is the process's own): nothing was written, so
    there is nothing to flush but our output. Under a test runner this returns normally.
    """
    if sys.stdout is not sys.__stdout__ or sys.stderr is not sys.__stderr__ or sys.stdout is None or sys.stderr is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


def _short(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    if not console.is_terminal:  # piped or redirected: whole cells, for grep and files
        return text
    return text if len(text) <= width else text[: width - 1] + "…"


def _guard(fn: Any) -> Any:
    """Run a command body, turning bank errors into a clear message and exit code 2."""
    from memory.bank import BankError

    try:
        return fn()
    except BankError as exc:
        _fail(str(exc))
    except KeyError as exc:
        _fail(str(exc.args[0]) if exc.args else str(exc))


@app.command("import")
def import_command(
    files: Annotated[list[Path], typer.Argument(help="JSONL files (format detected per file).", exists=False)],
    bank: BankOpt = None,
    chroma_url: UrlOpt = None,
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace",
            "-N",
            envvar="MEMENTO_NAMESPACE",
            help="Target namespace [default: a memento row's own, else 'default'].",
        ),
    ] = None,
    embedder: EmbedderOpt = "minilm",
    fmt: Annotated[str | None, typer.Option("--format", help="Force memento|memory|training|qpr.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Cases embedded and written per batch.")] = 256,
    source: Annotated[str | None, typer.Option(help="Dataset source for original-format rows.")] = None,
) -> None:
    """Import cases from JSONL: ours, memory.jsonl, training_data.jsonl or {question, plan, reward}.

    Malformed rows are listed with their line numbers and skipped; every valid row is imported, and
    the exit code is 1 if any row was bad.
    """
    from tqdm import tqdm

    from memory.io import ImportFormatError, count_lines, import_jsonl
    from memory.limits import CaseLimits

    for f in files:
        if not f.is_file():
            _fail(f"no import file at {f}")
    try:
        limits = CaseLimits.from_env()
    except ValueError as exc:
        _fail(str(exc))
    store = _open(bank, chroma_url, namespace or "default", embedder, create=True)
    bad = 0
    for f in files:
        with tqdm(total=count_lines(f), desc=f"import {f.name}", unit="row", disable=None) as bar:

            def advance(line: int, bar: Any = bar) -> None:
                bar.update(line - bar.n)

            try:
                report = _guard(
                    lambda f=f, advance=advance: import_jsonl(
                        store,
                        f,
                        namespace=namespace,
                        fmt=fmt,
                        batch_size=batch_size,
                        source=source,
                        progress=advance,
                        limits=limits,
                    )
                )
            except ImportFormatError as exc:
                _fail(f"{f}: {exc}")
        console.print(
            f"{f}: format [bold]{report.format}[/bold], {report.rows} rows, "
            f"{report.written} cases written, {report.duplicates} repeated rows merged, "
            f"{len(report.errors)} bad rows"
        )
        for err in report.errors[:50]:
            err_console.print(f"  {f}:{err.line}: {err.message}", highlight=False)
        if len(report.errors) > 50:
            err_console.print(f"  … and {len(report.errors) - 50} more bad rows")
        bad += len(report.errors)
    if bad:
        raise typer.Exit(1)


@app.command("export")
def export_command(
    output: Annotated[Path, typer.Argument(help="Output JSONL file.")],
    bank: BankOpt = None,
    chroma_url: UrlOpt = None,
    namespace: NamespaceOpt = "default",
    fmt: Annotated[str, typer.Option("--format", help="memento (complete) | memory | qpr.")] = "memento",
    label: Annotated[list[str] | None, typer.Option("--label", help="Only these labels (repeatable).")] = None,
    with_embeddings: Annotated[bool, typer.Option(help="Include stored vectors (fast restore).")] = False,
) -> None:
    """Export a namespace as JSONL."""
    from tqdm import tqdm

    from memory.io import export_jsonl

    store = _open(bank, chroma_url, namespace)
    total = store.count()
    with tqdm(total=total, desc=f"export {output.name}", unit="case", disable=None) as bar:
        try:
            report = _guard(
                lambda: export_jsonl(
                    store,
                    output,
                    fmt=fmt,
                    labels=tuple(label) if label else None,
                    with_embeddings=with_embeddings,
                    progress=lambda n: bar.update(n - bar.n),
                )
            )
        except ValueError as exc:
            _fail(str(exc))
    console.print(f"{output}: {report.written} cases written ({report.format}), {report.skipped} skipped")


@app.command("stats")
def stats_command(
    bank: BankOpt = None, chroma_url: UrlOpt = None, namespace: NamespaceOpt = "default", as_json: JsonOpt = False
) -> None:
    """Counts by label, reward source and dataset, rewards, usage; and all namespaces."""
    store = _open(bank, chroma_url, namespace)
    stats = _guard(lambda: store.stats())
    stats["namespaces"] = {ns: store.count(ns) for ns in store.namespaces()}
    if as_json:
        print(json.dumps(stats, indent=2))
        return
    title = f"Case bank {stats['location']} — namespace {stats['namespace']}"
    # At least as wide as its title, so a long bank path is not broken across lines.
    table = Table(title=title, show_header=False, min_width=len(title))
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("cases", str(stats["cases"]))
    table.add_row("embedder", str(stats["embedder"] or "-"))
    for key in ("by_label", "by_reward_source", "by_source"):
        table.add_row(key.replace("_", " "), ", ".join(f"{k}: {v}" for k, v in sorted(stats[key].items())) or "-")
    mean = stats["mean_reward"]
    table.add_row("mean reward", "-" if mean is None else f"{mean:.3f}")
    table.add_row(
        "retrievals",
        f"{stats['times_retrieved']} (tasks then succeeded {stats['retrieved_successes']}, failed {stats['retrieved_failures']})",
    )
    table.add_row("oldest / newest", f"{_when(stats['oldest'])} / {_when(stats['newest'])}")
    table.add_row("namespaces", ", ".join(f"{k} ({v})" for k, v in stats["namespaces"].items()) or "-")
    console.print(table)


def _case_table(title: str, rows: list[tuple[Any, float | None]]) -> Table:
    table = Table(title=title)
    if any(sim is not None for _, sim in rows):
        table.add_column("sim", justify="right")
    table.add_column("id", no_wrap=True)
    table.add_column("label")
    table.add_column("reward", justify="right")
    table.add_column("used", justify="right")
    table.add_column("question", min_width=30)
    for case, sim in rows:
        cells = [] if sim is None else [f"{sim:.3f}"]
        reward = "-" if case.reward is None else f"{case.reward:.2f}"
        cells += [case.id, case.label, reward, str(case.times_retrieved), _short(case.question)]
        table.add_row(*cells)
    return table


@app.command("search")
def search_command(
    query: Annotated[str, typer.Argument(help="A question.")],
    n: Annotated[int, typer.Option("-n", min=1, help="Hits to show.")] = 8,
    label: Annotated[list[str] | None, typer.Option("--label", help="Only these labels (repeatable).")] = None,
    exclude_task: Annotated[list[str] | None, typer.Option(help="Leakage guard: skip cases of this task id.")] = None,
    exclude_above: Annotated[
        float | None, typer.Option(help="Leakage guard: skip cases at least this similar.")
    ] = None,
    bank: BankOpt = None,
    chroma_url: UrlOpt = None,
    namespace: NamespaceOpt = "default",
    embedder: EmbedderOpt = "minilm",
    as_json: JsonOpt = False,
) -> None:
    """Nearest cases to a question, with cosine similarities."""
    from memory.embeddings import LazyEmbedder

    if not query.strip():
        _fail("give a question to search for (it was empty)")
    # The model loads, and embeds the question, while Chroma is imported and opened: the search
    # then finds the query's vector in the model's cache.
    model = LazyEmbedder(embedder)
    model.warm(query, cached=True)
    store = _open(bank, chroma_url, namespace, model)
    hits = _guard(
        lambda: store.search(
            query, n, labels=label or None, exclude_task_ids=exclude_task or (), exclude_similarity_above=exclude_above
        )
    )
    if as_json:
        print(
            json.dumps([{"similarity": h.similarity, **h.case.to_dict()} for h in hits], indent=2, ensure_ascii=False)
        )
    else:
        console.print(
            _case_table(f"{len(hits)} nearest cases in {namespace!r}", [(h.case, h.similarity) for h in hits])
        )
    _exit_read_only()


@app.command("list")
def list_command(
    limit: Annotated[int, typer.Option(min=1)] = 20,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    label: Annotated[list[str] | None, typer.Option("--label", help="Only these labels (repeatable).")] = None,
    bank: BankOpt = None,
    chroma_url: UrlOpt = None,
    namespace: NamespaceOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """A page of cases."""
    store = _open(bank, chroma_url, namespace)
    cases = _guard(lambda: store.list_cases(limit=limit, offset=offset, labels=label or None))
    if as_json:
        print(json.dumps([c.to_dict() for c in cases], indent=2, ensure_ascii=False))
        return
    console.print(
        _case_table(
            f"cases {offset}-{offset + len(cases)} of {store.count()} in {namespace!r}", [(c, None) for c in cases]
        )
    )


@app.command("show")
def show_command(
    case_id: Annotated[str, typer.Argument(help="Case id (case-…).")],
    bank: BankOpt = None,
    chroma_url: UrlOpt = None,
    namespace: NamespaceOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """One case in full."""
    store = _open(bank, chroma_url, namespace)
    case = _guard(lambda: store.get(case_id))
    if case is None:
        _fail(f"no case {case_id!r} in namespace {namespace!r} of {store.location}", code=1)
    if as_json:
        print(json.dumps(case.to_dict(), indent=2, ensure_ascii=False))
        return
    table = Table(title=case.id, show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    data = case.to_dict()
    data["plan"] = "\n".join(f"{s['id']}. {s['description']}" for s in case.plan) or "-"
    for key in ("created_at", "updated_at", "last_retrieved_at"):
        data[key] = _when(data[key])
    data["models"] = ", ".join(f"{k}={v}" for k, v in case.models.items()) or "-"
    data["attempt_log"] = "\n".join(
        f"{_when(a.get('at'))} {a.get('id')}: {a.get('label')} ({a.get('reward_source')}) {_short(a.get('answer') or '', 50)}"
        for a in case.attempt_log
    )
    for key, value in data.items():
        table.add_row(key, "-" if value in (None, "") else str(value))
    console.print(table)


@app.command("delete")
def delete_command(
    case_ids: Annotated[list[str], typer.Argument(help="Case ids.")],
    bank: BankOpt = None,
    chroma_url: UrlOpt = None,
    namespace: NamespaceOpt = "default",
) -> None:
    """Delete cases by id (exit code 1 if any id did not exist)."""
    store = _open(bank, chroma_url, namespace)
    n = _guard(lambda: store.delete(case_ids))
    console.print(f"deleted {n} of {len(case_ids)} cases")
    if n < len(set(case_ids)):
        raise typer.Exit(1)


@app.command("set-reward")
def set_reward_command(
    case_id: Annotated[str, typer.Argument(help="Case id.")],
    reward: Annotated[float, typer.Argument(help="New reward (>= 0.5 is positive).")],
    source: Annotated[
        str, typer.Option(help="human | ground_truth_judge | self_judge | exact_match | imported.")
    ] = "human",
    judge_model: Annotated[str | None, typer.Option(help="Model that judged, if any.")] = None,
    rationale: Annotated[str | None, typer.Option(help="Why.")] = None,
    bank: BankOpt = None,
    chroma_url: UrlOpt = None,
    namespace: NamespaceOpt = "default",
) -> None:
    """Re-judge a case by hand (its label follows the reward)."""
    store = _open(bank, chroma_url, namespace)
    try:
        case = _guard(
            lambda: store.update_reward(case_id, reward, source=source, judge_model=judge_model, rationale=rationale)
        )
    except ValueError as exc:
        _fail(str(exc))
    console.print(f"{case.id}: reward {case.reward} ({case.label}, {case.reward_source})")


@app.command("prune")
def prune_command(
    max_cases: Annotated[
        int | None, typer.Option(min=0, help="Capacity: remove the lowest-ranked cases above it.")
    ] = None,
    unknown_older_than: Annotated[
        str | None, typer.Option(help="Remove unjudged cases older than this (e.g. 30d, 12h).")
    ] = None,
    negative_unused_for: Annotated[
        str | None, typer.Option(help="Remove negatives unused for this long (e.g. 90d).")
    ] = None,
    keep_positive: Annotated[bool, typer.Option(help="Never remove positive cases.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report.")] = False,
    bank: BankOpt = None,
    chroma_url: UrlOpt = None,
    namespace: NamespaceOpt = "default",
) -> None:
    """Remove low-value cases: unjudged first, then stale negatives, then by reward and usage."""
    from memory.maintenance import PrunePolicy, parse_age, prune

    try:
        policy = PrunePolicy(
            max_cases=max_cases,
            unknown_max_age_days=parse_age(unknown_older_than),
            negative_max_age_days=parse_age(negative_unused_for),
            keep_positive=keep_positive,
        )
    except ValueError as exc:
        _fail(str(exc))
    if policy.max_cases is None and policy.unknown_max_age_days is None and policy.negative_max_age_days is None:
        _fail("nothing to prune by: give --max-cases, --unknown-older-than or --negative-unused-for")
    store = _open(bank, chroma_url, namespace)
    report = _guard(lambda: prune(store, policy, dry_run=dry_run))
    reasons: dict[str, int] = {}
    for why in report.removed.values():
        key = (
            why.split(" (")[0]
            if why.startswith("stale")
            else why.split(" for ")[0]
            if why.startswith("unjudged")
            else why
        )
        reasons[key] = reasons.get(key, 0) + 1
    table = Table(title=f"prune {'(dry run) ' if dry_run else ''}{namespace!r}: {report.before} → {report.after} cases")
    table.add_column("reason")
    table.add_column("cases", justify="right")
    for why, count in sorted(reasons.items()):
        table.add_row(why, str(count))
    console.print(table)


@app.command("dedup")
def dedup_command(
    threshold: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Cosine similarity that counts as a duplicate.")
    ] = 0.95,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report.")] = False,
    bank: BankOpt = None,
    chroma_url: UrlOpt = None,
    namespace: NamespaceOpt = "default",
) -> None:
    """Merge near-duplicate cases: keep the best of each group, carry its usage counters over."""
    from memory.maintenance import dedup

    store = _open(bank, chroma_url, namespace)
    report = _guard(lambda: dedup(store, threshold=threshold, dry_run=dry_run))
    table = Table(title=f"{len(report.groups)} near-duplicate groups{' (dry run)' if dry_run else ''}")
    table.add_column("kept")
    table.add_column("removed", justify="right")
    table.add_column("question")
    for group in report.groups[:30]:
        case = store.get(group[0])
        table.add_row(group[0], str(len(group) - 1), _short(case.question if case else "?"))
    console.print(table)
    console.print(f"{'would remove' if dry_run else 'removed'} {len(report.removed)} cases")


@app.command("namespaces")
def namespaces_command(bank: BankOpt = None, chroma_url: UrlOpt = None) -> None:
    """Namespaces in the bank with their case counts."""
    from memory.config import MemoryConfig

    store = _open(bank, chroma_url, MemoryConfig.from_env().namespace)
    table = Table(title=f"namespaces in {store.location}")
    table.add_column("namespace")
    table.add_column("cases", justify="right")
    for ns in store.namespaces():
        table.add_row(ns, str(store.count(ns)))
    console.print(table)


@app.command("repair")
def repair_command(bank: BankOpt = None, embedder: EmbedderOpt = "minilm") -> None:
    """Rebuild a damaged bank's vector index from its stored cases (the old folder is kept)."""
    from memory.bank import BankError
    from memory.config import DEFAULT_BANK_PATH
    from memory.embeddings import LazyEmbedder
    from memory.repair import repair_bank

    path = Path(bank or DEFAULT_BANK_PATH)
    try:
        report = repair_bank(path, LazyEmbedder(embedder))
    except (BankError, ValueError) as exc:
        _fail(str(exc))
        return
    total = sum(report.cases.values())
    namespaces = ", ".join(f"{ns} ({n})" for ns, n in report.cases.items()) or "none"
    console.print(
        f"rebuilt {total} cases in {path.resolve()}: {namespaces}; the damaged folder is kept at {report.kept_at}"
    )
    if report.skipped:
        console.print(f"[yellow]{report.skipped} unreadable records were skipped[/]")
