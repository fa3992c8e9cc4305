"""`memento policy ...`: train, evaluate and inspect the case-selection policy.

Heavy imports (torch, transformers) happen inside the commands: `memento --help` imports this.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Train, evaluate and inspect the learned case-selection policy.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

DEFAULT_POLICY_PATH = os.path.join(".memento", "policy.pt")

ExperienceOpt = Annotated[
    Path | None, typer.Option("--experience", help="Experience log (SQLite) with judged retrievals.")
]
TrainingDataOpt = Annotated[
    Path | None,
    typer.Option("--training-data", help="Original Memento training_data.jsonl (query, case, case_label, plan, truth_label)."),
]
BankOpt = Annotated[
    Path | None, typer.Option("--bank", help="Case bank folder: experience rows use its stored case embeddings.")
]
NamespaceOpt = Annotated[str | None, typer.Option("--namespace", help="Only retrievals of this namespace.")]


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(1)


def _load_data(experience: Path | None, training_data: Path | None, bank: Path | None, namespace: str | None):
    from memory.embeddings import get_embedder
    from memory.policy.data import concat, load_experience, load_training_data

    if experience is None and training_data is None:
        raise _fail("give --experience PATH and/or --training-data PATH")
    embedder = get_embedder(os.environ.get("MEMENTO_EMBEDDER", "minilm"))
    parts = []
    with console.status("embedding training data…"):
        if training_data is not None:
            parts.append(load_training_data(training_data, embedder))
        if experience is not None:
            case_bank = None
            if bank is not None:
                from memory.bank import CaseBank

                case_bank = CaseBank(bank, embedder=embedder, create=False)
            parts.append(load_experience(experience, embedder, bank=case_bank, namespace=namespace))
    return concat(parts)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def metrics_table(title: str, rows: dict[str, dict[str, Any]]) -> Table:
    """A rich table of AUC/accuracy/F1/Brier/ECE per named scorer."""
    table = Table(title=title)
    table.add_column("scorer")
    for col in ("AUC", "accuracy", "F1", "Brier", "ECE", "rows"):
        table.add_column(col, justify="right")
    for name, m in rows.items():
        table.add_row(name, *(_fmt(m.get(k)) for k in ("auc", "accuracy", "f1", "brier", "ece", "n")))
    return table


@app.command()
def train(
    experience: ExperienceOpt = None,
    training_data: TrainingDataOpt = None,
    bank: BankOpt = None,
    namespace: NamespaceOpt = None,
    out: Annotated[
        Path, typer.Option("--out", envvar="MEMENTO_POLICY_PATH", help="Checkpoint to write (atomically).")
    ] = Path(DEFAULT_POLICY_PATH),
    variant: Annotated[str, typer.Option(help="head (cached embeddings) or finetune (also tunes the query encoder).")] = "head",
    epochs: Annotated[int, typer.Option(min=1)] = 40,
    seed: int = 0,
    val_fraction: Annotated[float, typer.Option(min=0.01, max=0.9, help="Share of queries held out.")] = 0.2,
    batch_size: Annotated[int, typer.Option(min=1)] = 256,
    lr: float = 1e-3,
    patience: Annotated[int, typer.Option(min=1, help="Epochs without a better validation AUC before stopping.")] = 8,
) -> None:
    """Train a policy checkpoint (split by query, early stopping on validation AUC)."""
    from memory.policy.data import PolicyDataError
    from memory.policy.train import TrainConfig, fit_and_save

    try:
        cfg = TrainConfig(
            variant=variant, epochs=epochs, seed=seed, val_fraction=val_fraction, batch_size=batch_size, lr=lr, patience=patience
        )
        data = _load_data(experience, training_data, bank, namespace)
        console.print(f"{len(data)} rows, {data.n_queries} queries, {int(data.is_null.sum())} no-case rows")
        started = time.perf_counter()
        version, result = fit_and_save(data, out, cfg, progress=True)
    except (PolicyDataError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    console.print(
        metrics_table(
            f"policy {version} ({variant}, best epoch {result.best_epoch}, {time.perf_counter() - started:.0f}s)",
            {"train": result.train_metrics, "validation": result.val_metrics},
        )
    )
    console.print(f"wrote [bold]{out}[/]")


@app.command("eval")
def eval_(
    checkpoint: Annotated[Path, typer.Argument(help="Policy checkpoint.")],
    experience: ExperienceOpt = None,
    training_data: TrainingDataOpt = None,
    bank: BankOpt = None,
    namespace: NamespaceOpt = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the metrics as JSON here.")] = None,
) -> None:
    """Score a dataset with a checkpoint: AUC, accuracy, F1, Brier, ECE (vs similarity)."""
    from memory.policy.checkpoint import PolicyCheckpointError, load_checkpoint
    from memory.policy.data import PolicyDataError
    from memory.policy.metrics import classification_report, finite_or_none
    from memory.policy.train import predict

    try:
        loaded = load_checkpoint(checkpoint)
        data = _load_data(experience, training_data, bank, namespace)
    except (PolicyCheckpointError, PolicyDataError) as exc:
        raise _fail(str(exc)) from exc
    y = data.target > 0.5
    policy = classification_report(y, predict(loaded.model, data, loaded.tokenizer))
    # Similarity is not a probability: only its ranking (AUC) is comparable.
    similarity = {"auc": classification_report(y, data.features[:, 0])["auc"], "n": len(data)}
    rows = {f"policy {loaded.version}": policy, "similarity": similarity}
    console.print(metrics_table(f"{checkpoint}: {data.n_queries} queries", rows))
    if json_out is not None:
        plain = {k: {m: finite_or_none(v) if isinstance(v, float) else v for m, v in r.items()} for k, r in rows.items()}
        json_out.write_text(json.dumps({"checkpoint": str(checkpoint), "version": loaded.version, "metrics": plain}, indent=2))


@app.command()
def info(
    checkpoint: Annotated[
        Path, typer.Argument(envvar="MEMENTO_POLICY_PATH", help="Policy checkpoint.")
    ] = Path(DEFAULT_POLICY_PATH),
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw metadata as JSON.")] = False,
) -> None:
    """Show a checkpoint's version, variant, training data and metrics (weights checked)."""
    from memory.policy.checkpoint import PolicyCheckpointError, read_checkpoint

    try:
        payload = read_checkpoint(checkpoint)
    except PolicyCheckpointError as exc:
        raise _fail(str(exc)) from exc
    meta, config = payload["metadata"], payload["config"]
    if as_json:
        console.print_json(json.dumps({"version": payload["version"], "config": config, "metadata": meta}))
        return
    table = Table(title=f"policy checkpoint {checkpoint}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    val = (meta.get("metrics") or {}).get("val") or {}
    saved = meta.get("saved_at")
    for key, value in [
        ("version", payload["version"]),
        ("format", f"{payload['format']} v{payload['format_version']}"),
        ("variant", config.get("variant")),
        ("backbone", config.get("backbone")),
        ("features", ", ".join(config.get("feature_names") or [])),
        ("data sources", ", ".join(meta.get("data_sources") or [])),
        ("data hash", meta.get("data_hash")),
        ("rows / queries", f"{meta.get('n_rows')} / {meta.get('n_queries')} (val {meta.get('n_val_queries')})"),
        ("no-case rows", meta.get("null_examples")),
        ("best epoch", meta.get("best_epoch")),
        ("val AUC / acc / F1", " / ".join(_fmt(val.get(k)) for k in ("auc", "accuracy", "f1"))),
        ("val Brier / ECE", " / ".join(_fmt(val.get(k)) for k in ("brier", "ece"))),
        ("saved", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(saved)) if saved else "—"),
        ("weights sha256", meta.get("weights_sha256")),
    ]:
        table.add_row(key, _fmt(value))
    console.print(table)
