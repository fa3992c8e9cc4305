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
    typer.Option(
        "--training-data", help="Original Memento training_data.jsonl (query, case, case_label, plan, truth_label)."
    ),
]
BankOpt = Annotated[
    Path | None, typer.Option("--bank", help="Case bank folder: experience rows use its stored case embeddings.")
]
NamespaceOpt = Annotated[str | None, typer.Option("--namespace", help="Only retrievals of this namespace.")]


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(1)


def _load_data(experience: Path | None, training_data: Path | None, bank: Path | None, namespace: str | None):
    from memory.config import MemoryConfig
    from memory.embeddings import load_embedder
    from memory.policy.data import concat, load_experience, load_training_data

    if experience is None and training_data is None:
        raise _fail("give --experience PATH and/or --training-data PATH")
    embedder = load_embedder(MemoryConfig.from_env().embedder)
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
    variant: Annotated[
        str, typer.Option(help="head (cached embeddings) or finetune (also tunes the query encoder).")
    ] = "head",
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
            variant=variant,
            epochs=epochs,
            seed=seed,
            val_fraction=val_fraction,
            batch_size=batch_size,
            lr=lr,
            patience=patience,
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


def _is_bandit(checkpoint: Path) -> bool:
    """Whether ``checkpoint`` names the case-value bandit (its file, or only its history yet)."""
    from memory.policy.bandit_serving import history_path, is_bandit_checkpoint

    if checkpoint.is_file():
        return is_bandit_checkpoint(checkpoint)
    return history_path(checkpoint).is_file()


def _bandit_logs(experience: Path, bank: Path | None, namespace: str | None) -> list[Any]:
    """The experience log's judged retrievals as bandit rows (case vectors from the bank)."""
    from memory.bank import BankError, CaseBank
    from memory.config import MemoryConfig
    from memory.embeddings import load_embedder
    from memory.experience import ExperienceLog, ExperienceLogError
    from memory.policy.bandit_serving import logs_from_records

    if not experience.is_file():
        raise _fail(f"no experience log at {experience}")
    embedder = load_embedder(MemoryConfig.from_env().embedder)
    try:
        records = list(ExperienceLog(experience).records(judged_only=True, namespace=namespace))
        case_bank = CaseBank(bank, embedder=embedder, create=False)
    except (ExperienceLogError, BankError) as exc:
        raise _fail(str(exc)) from exc
    if not records:
        raise _fail(f"{experience} holds no judged retrieval{f' in namespace {namespace}' if namespace else ''}")
    with console.status("reading the log and its cases…"):
        return logs_from_records(records, embedder, case_bank)


def _bandit_eval(checkpoint: Path, experience: Path, bank: Path | None, namespace: str | None, k: int,
                 confidence: float, json_out: Path | None) -> None:  # fmt: skip
    """Off-policy estimates: the two serving arms as logged (A/B), and the served bandit's shown sets."""
    from memory.policy.bandit import CaseValueModel
    from memory.policy.bandit_serving import BanditCheckpointError, load_bandit
    from memory.policy.learner import WINDOW
    from memory.policy.ope import compare, compare_arms

    policies: list[tuple[str, Any]] = []
    try:
        if checkpoint.is_file():
            model, version, _ = load_bandit(checkpoint)
            policies.append((f"policy {version}", model))
    except BanditCheckpointError as exc:
        raise _fail(str(exc)) from exc
    prior = CaseValueModel()
    if not policies:
        policies.append(("prior (no checkpoint yet)", prior))
    logs = _bandit_logs(experience, bank, namespace)
    arms = {
        "all": compare_arms(logs, confidence=confidence, min_ess=1.0),
        f"each arm's last {WINDOW}": compare_arms(logs, window=WINDOW, confidence=confidence, min_ess=1.0),
    }

    from memory.policy.bandit import SimilarityPolicy

    def prob_of(model: Any):
        return lambda r: model.slate_probability(r.query_embedding, r.candidates, r.shown, k, r.query_key)

    similarity = SimilarityPolicy()
    rows: dict[str, dict[str, Any]] = {}
    for name, model in policies:
        vs_sim = compare(logs, prob_of(model), prob_of(similarity), confidence=confidence, min_ess=1.0)
        vs_prior = compare(logs, prob_of(model), prob_of(prior), confidence=confidence, min_ess=1.0)
        if vs_sim.rows == 0:
            raise _fail(f"cannot estimate from {experience}: {vs_sim.reason}")
        rows[name] = {"estimate": vs_sim.candidate, "ess": vs_sim.ess_candidate,
                      "vs_similarity": [vs_sim.difference, vs_sim.low, vs_sim.high],
                      "vs_prior": [vs_prior.difference, vs_prior.low, vs_prior.high], "retrievals": vs_sim.rows,
                      "similarity": vs_sim.incumbent, "similarity_ess": vs_sim.ess_incumbent,
                      "prior": vs_prior.incumbent, "prior_ess": vs_prior.ess_incumbent}  # fmt: skip
    first = next(iter(rows.values()))
    console.print(f"experience log: {experience}")
    table = Table(title=f"off-policy estimates of task success ({first['retrievals']} judged retrievals, K={k})")
    table.add_column("policy")
    table.add_column("success (est.)", justify="right")
    table.add_column("effective n", justify="right")
    table.add_column(f"vs similarity top-{k} [{confidence:.0%} interval]", justify="right")
    table.add_column("vs prior [interval]", justify="right")

    def diff(d: list[float]) -> str:
        return f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]" if all(math.isfinite(x) for x in d) else "—"

    for name, row in rows.items():
        table.add_row(
            name, _fmt(row["estimate"]), f"{row['ess']:.0f}", diff(row["vs_similarity"]), diff(row["vs_prior"])
        )
    table.add_row(f"similarity top-{k}", _fmt(first["similarity"]), f"{first['similarity_ess']:.0f}", "", "")
    table.add_row("prior", _fmt(first["prior"]), f"{first['prior_ess']:.0f}", "", "")
    console.print(table)
    console.print("Self-normalised IPS over whole shown sets, from the logged probability of each shown set "
                  "(retrievals logged without one are skipped). Effective n: how many logged retrievals the estimate "
                  "effectively rests on; a small one means a rough estimate.")  # fmt: skip
    ab = Table(title="serving arms, A/B (what the rollout gate decides on)")
    for col in ("retrievals", "bandit arm", "similarity arm", f"bandit − similarity [{confidence:.0%} interval]",
                "effective n (bandit / similarity)"):  # fmt: skip
        ab.add_column(col, justify="right")
    for span, est in arms.items():
        if est.rows == 0:
            ab.add_row(span, "—", "—", "no retrieval logged its arm", "—")
            continue
        ab.add_row(f"{span} ({est.rows})", _fmt(est.candidate), _fmt(est.incumbent),
                   diff([est.difference, est.low, est.high]), f"{est.ess_candidate:.0f} / {est.ess_incumbent:.0f}")  # fmt: skip
    console.print(ab)
    console.print("Each retrieval was served by one arm, drawn at random with the logged probability; the estimate "
                  "is each arm's success rate weighted by the inverse of that probability.")  # fmt: skip
    if json_out is not None:
        plain = {
            n: {key: (None if isinstance(v, float) and not math.isfinite(v) else v) for key, v in r.items()}
            for n, r in rows.items()
        }
        arm_rows = {
            span: {
                key: (None if isinstance(v, float) and not math.isfinite(v) else v) for key, v in est.__dict__.items()
            }
            for span, est in arms.items()
        }
        json_out.write_text(json.dumps({"checkpoint": str(checkpoint), "k": k, "confidence": confidence, "policies": plain,
                                        "arms": arm_rows}, indent=2, default=lambda x: None))  # fmt: skip


@app.command("eval")
def eval_(
    checkpoint: Annotated[Path, typer.Argument(envvar="MEMENTO_POLICY_PATH", help="Policy checkpoint.")] = Path(
        DEFAULT_POLICY_PATH
    ),
    experience: ExperienceOpt = None,
    training_data: TrainingDataOpt = None,
    bank: BankOpt = None,
    namespace: NamespaceOpt = None,
    k: Annotated[
        int, typer.Option("--k", min=1, help="Cases shown at most (case-value bandit: as the graph's k).")
    ] = 4,
    confidence: Annotated[float, typer.Option(min=0.5, max=0.999, help="Level of the bandit's intervals.")] = 0.8,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the metrics as JSON here.")] = None,
) -> None:
    """Evaluate a policy checkpoint.

    The case-value bandit that learned mode serves (or its prior, before any checkpoint): the
    off-policy estimate of its task success on an experience log (``--experience``; case vectors
    from ``--bank``), against similarity top-K and the prior. An MLP scorer from ``memento policy
    train``: AUC, accuracy, F1, Brier, ECE on a dataset (vs similarity).
    """
    if experience is not None and training_data is None and (not checkpoint.exists() or _is_bandit(checkpoint)):
        _bandit_eval(checkpoint, experience, bank, namespace, k, confidence, json_out)
        return
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
        plain = {
            k: {m: finite_or_none(v) if isinstance(v, float) else v for m, v in r.items()} for k, r in rows.items()
        }
        json_out.write_text(
            json.dumps({"checkpoint": str(checkpoint), "version": loaded.version, "metrics": plain}, indent=2)
        )


@app.command()
def info(
    checkpoint: Annotated[Path, typer.Argument(envvar="MEMENTO_POLICY_PATH", help="Policy checkpoint.")] = Path(
        DEFAULT_POLICY_PATH
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw metadata as JSON.")] = False,
) -> None:
    """Show a checkpoint: the bandit's version, rows and last decisions, or an MLP scorer's metrics."""
    if _is_bandit(checkpoint):
        _bandit_info(checkpoint, as_json)
        return
    if not checkpoint.exists():
        raise _fail(
            f"no policy checkpoint at {checkpoint} yet: in learned mode the bandit's prior serves its starting "
            "share beside similarity until the first refit is written there (`memento policy train` builds the "
            "MLP scorer)"
        )
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


def _bandit_info(checkpoint: Path, as_json: bool, last: int = 5) -> None:
    """The served bandit, its share of selections and its last retraining decisions."""
    from memory.policy.bandit_serving import BanditCheckpointError, history_path, load_bandit
    from memory.policy.learner import START_SHARE

    def describe(path: Path) -> dict[str, Any] | None:
        if not path.is_file():
            return None
        try:
            model, version, meta = load_bandit(path)
        except BanditCheckpointError as exc:
            return {"error": str(exc)}
        return {"version": version, "rows": model.n_rows, "case_values": len(model.case_index),
                "dims": model.dims, "words": len(model.vocab), "decided_at": meta.get("decided_at"),
                "reason": meta.get("reason"), "share": float(meta.get("share", START_SHARE))}  # fmt: skip

    history: list[dict[str, Any]] = []
    hist = history_path(checkpoint)
    if hist.is_file():
        for line in hist.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                history.append(json.loads(line))
            except ValueError:
                continue  # a torn last line of a crashed write
    info: dict[str, Any] = {
        "checkpoint": describe(checkpoint),
        "decisions": len(history),
        "last_decisions": history[-last:],
    }
    if as_json:
        console.print_json(json.dumps(info))
        return

    def when(t: Any, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
        return time.strftime(fmt, time.localtime(t)) if isinstance(t, (int, float)) else "—"

    table = Table(title=f"case-value bandit {checkpoint}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    part = info["checkpoint"]
    if part is None:
        table.add_row("policy", f"prior (no checkpoint yet), serving {START_SHARE:.0%} of selections")
    elif "error" in part:
        table.add_row("policy", f"unusable: {part['error']}")
    else:
        table.add_row("policy", f"{part['version']} ({part['rows']} retrievals, {part['case_values']} case values, "
                                f"{part['words']} words, decided {when(part['decided_at'])})")  # fmt: skip
        table.add_row("share", f"{part['share']:.0%} of selections (similarity serves the rest)")
    table.add_row("decisions", str(len(history)))
    console.print(table)
    if history:
        recent = Table(title=f"last {min(last, len(history))} retraining decisions")
        for col in ("finished", "share", "rows", "bandit arm", "similarity arm", "lower bound", "reason"):
            recent.add_column(col, justify="right" if col not in ("finished", "reason") else "left")
        for h in history[-last:]:
            # The numbers have their own columns: the reason's first clause says why.
            reason = str(h.get("reason", "")).split(":", 1)[0]
            share = h.get("share")
            recent.add_row(when(h.get("finished_at"), "%m-%d %H:%M:%S"), f"{share:.0%}" if isinstance(share, (int, float)) else "—", str(h.get("rows", "—")),
                           _fmt(h.get("candidate")), _fmt(h.get("incumbent")), _fmt(h.get("low")), reason)  # fmt: skip
        console.print(recent)
