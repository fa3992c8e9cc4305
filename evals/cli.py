"""`memento eval`: run the agent over a dataset (or the simulator) and report learning curves."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from evals.datasets import FORMATS

# `memento --help` imports this module: matplotlib, the runner (langgraph, langchain) and the
# summary are imported by the command itself.

console = Console()


def _parse_prices(items: list[str]) -> dict[str, float]:
    prices = {}
    for item in items:
        model, sep, value = item.rpartition("=")
        try:
            if not sep or not model:
                raise ValueError
            prices[model] = float(value)
        except ValueError:
            raise typer.BadParameter(f"--price expects MODEL=USD_PER_1K_TOKENS, got {item!r}") from None
    return prices


def eval_command(
    dataset: Annotated[
        Path | None,
        typer.Argument(help="Dataset file (JSONL, DeepResearcher, SimpleQA/FRAMES CSV, GAIA metadata.jsonl)."),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help=f"Dataset format: auto or one of {', '.join(FORMATS)}.")
    ] = "auto",
    limit: Annotated[int | None, typer.Option(help="Use only the first N examples.")] = None,
    iterations: Annotated[int, typer.Option(help="Passes over the stream; memory accumulates across them.")] = 1,
    memory: Annotated[
        list[str] | None, typer.Option("--memory", help="Memory mode: none, similarity or learned (repeat to compare).")
    ] = None,
    k: Annotated[int, typer.Option(help="Cases shown to the planner.")] = 4,
    concurrency: Annotated[int, typer.Option(help="Tasks in flight at once (1 is reproducible).")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the train/test split (and of the simulator).")] = 0,
    test_fraction: Annotated[
        float,
        typer.Option(
            help="Share of tasks held out as test: run after each pass's train tasks, leakage guard on, never written to memory."
        ),
    ] = 0.0,
    out: Annotated[Path, typer.Option("--out", help="Output folder; rerunning with it resumes.")] = Path(
        "results/eval"
    ),
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Load the valid rows and report the malformed ones.")
    ] = False,
    planner: Annotated[
        str | None, typer.Option(help="Planner model (default: MEMENTO_PLANNER_MODEL or gpt-4.1).")
    ] = None,
    executor: Annotated[str | None, typer.Option(help="Executor model.")] = None,
    judge: Annotated[str | None, typer.Option(help="Judge model.")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint.")] = None,
    mcp_config: Annotated[str | None, typer.Option(help="MCP servers JSON ('' for no tools).")] = None,
    price: Annotated[
        list[str] | None, typer.Option("--price", help="MODEL=USD per 1k tokens (repeatable; default 0).")
    ] = None,
    simulate: Annotated[
        bool, typer.Option("--simulate", help="Run the offline simulated-LLM benchmark instead of a dataset.")
    ] = False,
    families: Annotated[int, typer.Option(help="--simulate: task families.")] = 10,
    per_family: Annotated[int, typer.Option(help="--simulate: tasks per family.")] = 12,
    penalty: Annotated[
        float, typer.Option(help="--simulate: success lost per misleading case shown (a look-alike or a wrong label).")
    ] = 0.08,
    bonus: Annotated[float, typer.Option(help="--simulate: success gained per same-family case shown.")] = 0.3,
    wrong_label: Annotated[
        float, typer.Option(help="--simulate: share of wrong answers a lenient judge passes (stored as positive).")
    ] = 0.0,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline", help="Keep results local even when LANGSMITH_API_KEY is set (no upload, no tracing)."
        ),
    ] = False,
    self_judge_accuracy: Annotated[
        float | None,
        typer.Option(
            help="--simulate: no ground truth; a self-judge right with this probability (e.g. 0.8) labels the cases."
        ),
    ] = None,
) -> None:
    """Run the agent over a dataset with one or more memory modes and report learning curves.

    Writes results.jsonl (one line per mode, pass and task; rerunning resumes), summary.md,
    summary.json and learning_curve.png into --out. A rerun on the same --out must use the same
    --memory modes, --k, --seed and models (more --iterations extend it); use another folder otherwise.
    With LANGSMITH_API_KEY set results are also uploaded, unless --offline or LangSmith is unreachable.
    """
    from evals.datasets import DatasetError, load_dataset
    from evals.plots import plot_learning_curves
    from evals.runner import (
        MODES,
        EvalConfig,
        EvalRunner,
        check_resume,
        make_context,
        models_of,
        train_policy_before_pass,
    )
    from evals.summary import learning_curves, print_summary, summarize, write_summary

    modes = memory or (["none", "similarity", "learned"] if simulate else ["similarity"])
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise typer.BadParameter(f"--memory must be one of {', '.join(MODES)}, got {', '.join(bad)}")
    logging.basicConfig(level=logging.WARNING)
    if simulate:
        from evals.sim.model import SimParams
        from evals.sim.run import SimConfig
        from evals.sim.run import simulate as run_simulation

        sim_out = out if out != Path("results/eval") else Path("results/sim")
        if self_judge_accuracy is not None and not 0.0 <= self_judge_accuracy <= 1.0:
            raise typer.BadParameter(
                f"--self-judge-accuracy must be a probability in [0, 1], got {self_judge_accuracy}"
            )
        try:
            summary = run_simulation(
                SimConfig(
                    out_dir=sim_out,
                    families=families,
                    per_family=per_family,
                    iterations=iterations,
                    modes=modes,
                    k=k,
                    seed=seed,
                    concurrency=concurrency,
                    test_fraction=test_fraction,
                    progress=not quiet,
                    self_judge_accuracy=self_judge_accuracy,
                    params=SimParams(bonus=bonus, penalty=penalty, wrong_label=wrong_label),
                )
            )
        except ValueError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from exc
        print_summary(summary, console)
        console.print(f"wrote {sim_out}/results.jsonl, summary.md, summary.json, learning_curve.png")
        return
    if dataset is None:
        raise typer.BadParameter("give a dataset file, or --simulate for the offline benchmark")
    try:
        data = load_dataset(dataset, fmt, skip_bad=skip_bad, limit=limit)
    except DatasetError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    for err in data.errors:
        console.print(f"[yellow]skipped[/yellow] {dataset}: {err}")
    context = {
        key: value
        for key, value in {
            "planner_model": planner,
            "executor_model": executor,
            "judge_model": judge,
            "base_url": base_url,
            "mcp_config": mcp_config,
        }.items()
        if value is not None
    }
    try:
        config = EvalConfig(
            out_dir=out,
            modes=modes,
            iterations=iterations,
            k=k,
            concurrency=concurrency,
            seed=seed,
            test_fraction=test_fraction,
            prices=_parse_prices(price or []),
            context=context,
            dataset_name=f"{Path(dataset).stem}-{data.format}",
            progress=not quiet,
            langsmith_upload=False if offline else None,
        )
        check_resume(config, data.examples)
        notes: list[str] = [f"{len(data.errors)} malformed row(s) skipped"] if data.errors else []
        runner = EvalRunner(
            config, data.examples, before_pass=functools.partial(train_policy_before_pass, seed=seed, notes=notes)
        )
    except ValueError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        console.print(
            f"[red]error:[/red] cannot use the output folder {escape(str(out))}: {escape(str(exc))}", soft_wrap=True
        )
        raise typer.Exit(2) from None
    if runner.upload_note:
        console.print(
            f"[yellow]warning:[/yellow] {escape(runner.upload_note)} (--offline skips this check)", soft_wrap=True
        )
    from nodes.models import ModelConfigError, check_endpoint

    try:
        check_endpoint(make_context(config, modes[0], "train"))
    except ModelConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    runner.write_config({"dataset_path": str(dataset), "format": data.format, "examples": len(data.examples)})
    shown_note = runner.upload_note
    import asyncio

    records = asyncio.run(runner.run())
    if runner.upload_note and runner.upload_note != shown_note:
        console.print(f"[yellow]warning:[/yellow] {escape(runner.upload_note)}", soft_wrap=True)
    records = [r for r in records if r["mode"] in modes and int(r["iteration"]) <= iterations]
    meta = {
        "dataset": str(dataset),
        "format": data.format,
        "examples": len(data.examples),
        "modes": modes,
        "iterations": iterations,
        "k": k,
        "seed": seed,
        "test_fraction": test_fraction,
        "models": models_of(make_context(config, modes[0], "train")),
        "langsmith_upload": runner.upload,
        "notes": notes,
    }
    summary = summarize(records, meta=meta)
    write_summary(summary, out)
    try:
        plot_learning_curves(
            learning_curves(summary), out / "learning_curve.png", title=f"{Path(dataset).name}: accuracy across passes"
        )
    except ValueError as exc:
        console.print(f"[yellow]no plot:[/yellow] {exc}")
    print_summary(summary, console)
    errors = sum(1 for r in records if r.get("error"))
    if errors:
        console.print(f"[yellow]{errors} task(s) failed; rerun the same command to retry them.[/yellow]")
    console.print(f"wrote {out}/results.jsonl, summary.md, summary.json, learning_curve.png")
