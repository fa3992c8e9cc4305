"""The confounder grid: how much of the gap to an oracle each memory mode closes.

For every setting (families, look-alike penalty, share of wrong labels) and seed, the fast stream
(`evals.sim.stream.run_stream`) runs none, similarity, learned, the oracle and the label-blind
family oracle (it knows families but not which stored answers are right: the ceiling of a policy
that fully learns the look-alikes), and ``told`` (the learned policy given the families as its word
features: what the learner reaches when its features are perfect) and ``relation`` (three effects
learned from the same outcomes with the relation handed over: what this much evidence supports when
almost nothing is free) over the same tasks with the same draws. Reported per setting, averaged over seeds:

* accuracy per pass for each mode;
* the share of the none→oracle gap a mode closes in the last pass,
  ``(acc_mode - acc_none) / (acc_oracle - acc_none)``;
* the paired difference learned − similarity in the last pass, and learned − none in pass 1, with
  a bootstrap 95% interval over (seed, task) pairs: both modes answered the same task with the same
  draw, so the pairs differ only by the cases shown;
* the share of the bank's positive labels that are right after each pass (a lenient judge's wrong
  labels are the rest, and a mode that answers right more often leaves fewer of them).
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evals.sim.model import SimParams
from evals.sim.stream import run_stream
from evals.sim.tasks import generate_tasks
from memory.policy.bandit import BanditConfig


@dataclass
class GridSpec:
    """The settings swept and the size of each run."""

    families: list[int] = field(default_factory=lambda: [6, 12])
    penalties: list[float] = field(default_factory=lambda: [0.05, 0.2])
    wrong_labels: list[float] = field(default_factory=lambda: [0.0, 0.2])
    seeds: int = 3
    passes: int = 4
    per_family: int = 10
    k: int = 4
    base: float = 0.25
    bonus: float = 0.25
    ungated: bool = False
    # Overrides of the learned modes' `BanditConfig` fields and of the bandit's starting share.
    bandit: dict[str, Any] = field(default_factory=dict)
    share: float | None = None
    # The gate's window per arm (None: the learner's default), and the first seed (seeds run from it).
    window: int | None = None
    first_seed: int = 0

    def learner_options(self) -> dict[str, Any] | None:
        """The `BanditLearner` overrides this grid runs with (None: its defaults)."""
        opts = {k: v for k, v in (("share", self.share), ("window", self.window)) if v is not None}
        return opts or None


def paired_interval(a: np.ndarray, b: np.ndarray, *, boots: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``a - b`` over paired units and its bootstrap 95% interval."""
    d = np.asarray(a, float) - np.asarray(b, float)
    if d.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(boots, d.size))].mean(1)
    return float(d.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def gap_closed(mode: float, none: float, oracle: float) -> float:
    """Share of the none→oracle gap closed (nan when the oracle does no better than none)."""
    gap = oracle - none
    return float((mode - none) / gap) if gap > 1e-9 else float("nan")


def run_grid(spec: GridSpec, out_dir: str | Path, *, embedder: Any = None, progress: bool = True) -> dict[str, Any]:
    """Run the grid, write ``grid.json``, ``grid.md`` and ``grid.png`` under ``out_dir``; return the table."""
    from memory.embeddings import load_embedder

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    embedder = embedder or load_embedder("minilm")
    modes = ["none", "similarity", "learned", "oracle", "family", "told", "relation"] + (
        ["learned_ungated"] if spec.ungated else []
    )
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for fam, pen, wrong in itertools.product(spec.families, spec.penalties, spec.wrong_labels):
        params = SimParams(base=spec.base, bonus=spec.bonus, penalty=pen, wrong_label=wrong)
        per_mode: dict[str, list[dict[int, dict[str, bool]]]] = {m: [] for m in modes}
        precision: dict[str, list[list[float]]] = {m: [] for m in modes}
        for seed in range(spec.first_seed, spec.first_seed + spec.seeds):
            tasks = generate_tasks(fam, spec.per_family, seed)
            emb = np.asarray(embedder.embed([t.question for t in tasks]), dtype=np.float32)
            for mode in modes:
                res = run_stream(tasks, emb, "learned" if mode == "learned_ungated" else mode, params=params,
                                 passes=spec.passes, k=spec.k, seed=seed, gate=mode != "learned_ungated",
                                 bandit=BanditConfig(**{**spec.bandit, "seed": seed}),
                                 learner_options=spec.learner_options())  # fmt: skip
                per_mode[mode].append(res.correct)
                precision[mode].append([res.label_precision[it] for it in range(1, spec.passes + 1)])
        rows.append(_summarise(fam, pen, wrong, per_mode, spec.passes))
        rows[-1]["label_precision"] = {m: _column_means(v) for m, v in precision.items()}
        if progress:
            r = rows[-1]
            print(f"[{time.perf_counter() - started:6.0f}s] families {fam:2d} penalty {pen:.2f} wrong {wrong:.1f}: "
                  + "  ".join(f"{m} {r['accuracy'][m][-1]:.2f}" for m in modes), flush=True)  # fmt: skip
    table = {"spec": asdict(spec), "rows": rows, "seconds": time.perf_counter() - started}
    (out / "grid.json").write_text(json.dumps(table, indent=2), encoding="utf-8")
    (out / "grid.md").write_text(grid_markdown(table), encoding="utf-8")
    plot_grid(table, out / "grid.png")
    if progress:
        print(grid_markdown(table))
    return table


def _summarise(
    fam: int, pen: float, wrong: float, per_mode: dict[str, list[dict[int, dict[str, bool]]]], passes: int
) -> dict[str, Any]:
    def vec(mode: str, it: int) -> np.ndarray:
        return np.array([float(v) for run in per_mode[mode] for v in (run[it][t] for t in sorted(run[it]))])

    acc = {m: [float(vec(m, it).mean()) for it in range(1, passes + 1)] for m in per_mode}
    last = passes
    row: dict[str, Any] = {"families": fam, "penalty": pen, "wrong_label": wrong, "accuracy": acc}
    row["gap_closed"] = {
        m: gap_closed(acc[m][-1], acc["none"][-1], acc["oracle"][-1]) for m in per_mode if m != "oracle"
    }
    row["learned_minus_similarity"] = paired_interval(vec("learned", last), vec("similarity", last))
    row["learned_minus_none_pass1"] = paired_interval(vec("learned", 1), vec("none", 1))
    row["similarity_minus_none_pass1"] = paired_interval(vec("similarity", 1), vec("none", 1))
    for m in ("told", "relation"):
        if m in per_mode:
            row[f"{m}_minus_none_pass1"] = paired_interval(vec(m, 1), vec("none", 1))
    return row


def grid_markdown(table: dict[str, Any]) -> str:
    """The grid as a markdown table (last pass unless said otherwise)."""
    spec = table["spec"]
    head = (
        "| families | penalty | wrong labels | none | similarity | learned | oracle | family oracle | similarity closes "
        "| learned closes | told closes | relation closes | family oracle closes | learned − similarity [95% CI] "
        "| pass 1: learned − none [95% CI] |\n"
        f"|{'---|' * 15}"
    )
    lines = [head]
    for r in table["rows"]:
        a = r["accuracy"]
        d, lo, hi = r["learned_minus_similarity"]
        p, plo, phi = r["learned_minus_none_pass1"]
        lines.append(
            f"| {r['families']} | {r['penalty']:.2f} | {r['wrong_label']:.1f} | {a['none'][-1]:.2f} | {a['similarity'][-1]:.2f} "
            f"| {a['learned'][-1]:.2f} | {a['oracle'][-1]:.2f} | {_fmt(a, 'family', '.2f')} "
            f"| {r['gap_closed']['similarity']:.0%} | {r['gap_closed']['learned']:.0%} | {_fmt(r['gap_closed'], 'told', '.0%')} "
            f"| {_fmt(r['gap_closed'], 'relation', '.0%')} | {_fmt(r['gap_closed'], 'family', '.0%')} "
            f"| {d:+.3f} [{lo:+.3f}, {hi:+.3f}] | {p:+.3f} [{plo:+.3f}, {phi:+.3f}] |"
        )
    lines.append("")
    if all("label_precision" in r for r in table["rows"]):
        modes = [m for m in ("similarity", "learned", "told", "family") if m in table["rows"][0]["label_precision"]]
        lines.append("Positive labels in the bank whose answer is right, after pass 1 → after the last pass:")
        lines.append("")
        lines.append("| families | penalty | wrong labels | " + " | ".join(modes) + " |")
        lines.append(f"|{'---|' * (3 + len(modes))}")
        for r in table["rows"]:
            cells = " | ".join(f"{r['label_precision'][m][0]:.2f} → {r['label_precision'][m][-1]:.2f}" for m in modes)
            lines.append(f"| {r['families']} | {r['penalty']:.2f} | {r['wrong_label']:.1f} | {cells} |")
        lines.append("")
    first = spec.get("first_seed", 0)
    lines.append(f"{spec['seeds']} seeds per setting ({first}–{first + spec['seeds'] - 1}), {spec['passes']} passes, {spec['per_family']} tasks per family, K={spec['k']}; "
                 f"accuracy and gap share in pass {spec['passes']}.")  # fmt: skip
    return "\n".join(lines) + "\n"


def _column_means(runs: list[list[float]]) -> list[float]:
    """Per pass, the mean over seeds of the values that are defined (nan where none is)."""
    arr = np.array(runs, float)
    ok = ~np.isnan(arr)
    sums = np.where(ok, arr, 0.0).sum(0)
    counts = ok.sum(0)
    return [float(x / n) if n else float("nan") for x, n in zip(sums, counts, strict=True)]


def _fmt(values: dict[str, Any], mode: str, spec: str) -> str:
    # Tables written before the family oracle existed have no such column.
    v = values.get(mode)
    return "—" if v is None else format(v[-1] if isinstance(v, list) else v, spec)


def plot_grid(table: dict[str, Any], path: Path) -> None:
    """Share of the none→oracle gap closed per setting and mode, as grouped bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table["rows"]
    modes = [m for m in rows[0]["gap_closed"] if m != "none"]
    x = np.arange(len(rows))
    width = 0.8 / max(1, len(modes))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 3.8))
    colors = {"similarity": "#1f77b4", "learned": "#d62728", "learned_ungated": "#ff9896", "family": "#98df8a",
              "told": "#9467bd", "relation": "#e377c2"}  # fmt: skip
    for i, m in enumerate(modes):
        ax.bar(
            x + (i - (len(modes) - 1) / 2) * width,
            [r["gap_closed"][m] for r in rows],
            width,
            label=m,
            color=colors.get(m),
        )
    ax.axhline(1.0, color="#2ca02c", linestyle="--", linewidth=1, label="oracle")
    ax.axhline(0.0, color="#7f7f7f", linewidth=0.8)
    ax.set_xticks(x, [f"F{r['families']} p{r['penalty']:.2f}\nw{r['wrong_label']:.1f}" for r in rows], fontsize=8)
    ax.set_ylabel(f"gap to oracle closed, pass {table['spec']['passes']}")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
