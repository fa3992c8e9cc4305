"""Benchmark: does the loop learn? The simulated LLM through the real graph, bank and policy.

    python -m evals.benchmarks.learning --out results/sim [--families 10 --per-family 12 --iterations 3]
    python -m evals.benchmarks.learning --grid --out results/grid [--seeds 3 --passes 4]

``--grid`` runs the fast in-process stream (`evals.sim.stream`) over a grid of confounder settings
and seeds for none, similarity, learned and the oracle, and reports the share of the none→oracle
gap each mode closes plus paired bootstrap intervals (see `evals.sim.grid`).

Same run as ``memento eval --simulate``: curves for no memory, similarity retrieval and the learned
policy across passes over one synthetic stream, written as ``learning_curve.png``, ``summary.md``
and ``summary.json``. Reproducible: a fixed seed gives the same numbers (with concurrency 1).
"""

from __future__ import annotations

import argparse
import json
import os
import time

for _key, _value in {
    "ORT_DISABLE_TELEMETRY": "1",
    "ANONYMIZED_TELEMETRY": "False",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}.items():
    os.environ.setdefault(_key, _value)

from rich.console import Console  # noqa: E402

from evals.sim.run import SimConfig, simulate  # noqa: E402
from evals.summary import print_summary  # noqa: E402


def _bandit_overrides(parser: argparse.ArgumentParser, text: str) -> dict:
    """``--bandit`` as a dict of known `BanditConfig` fields (a bad one ends the run with one line)."""
    import dataclasses

    from memory.policy.bandit import BanditConfig

    try:
        overrides = json.loads(text)
        if not isinstance(overrides, dict):
            raise ValueError("expected a JSON object")
        BanditConfig(**overrides)
    except (ValueError, TypeError) as exc:
        fields = ", ".join(f.name for f in dataclasses.fields(BanditConfig))
        parser.error(f"--bandit: {exc} (fields: {fields})")
    return overrides


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/sim")
    parser.add_argument("--families", type=int, default=10)
    parser.add_argument("--per-family", type=int, default=12)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--memory", action="append", choices=["none", "similarity", "learned"])
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-fraction", type=float, default=0.0)
    parser.add_argument("--no-plan", action="store_true", help="answer at once (half the LLM calls per task)")
    parser.add_argument("--grid", action="store_true", help="the fast confounder grid (no graph): see evals.sim.grid")
    parser.add_argument("--seeds", type=int, default=3, help="--grid: seeds per setting")
    parser.add_argument("--passes", type=int, default=4, help="--grid: passes per run")
    parser.add_argument("--grid-families", default="6,12", help="--grid: family counts")
    parser.add_argument("--grid-penalties", default="0.05,0.2", help="--grid: look-alike penalties")
    parser.add_argument("--grid-wrong", default="0,0.2", help="--grid: lenient-judge shares (wrong labels)")
    parser.add_argument("--ungated", action="store_true", help="--grid: also run learned without the OPE gate")
    parser.add_argument(
        "--bandit", default="{}", help="--grid: BanditConfig overrides as JSON, e.g. '{\"temperature\": 0.3}'"
    )
    parser.add_argument("--share", type=float, help="--grid: the bandit's starting share of selections")
    parser.add_argument(
        "--window", type=int, help="--grid: outcomes per arm the gate compares (default: the learner's)"
    )
    parser.add_argument("--first-seed", type=int, default=0, help="--grid: seeds run from this one (held-out checks)")
    args = parser.parse_args(argv)
    if args.grid:
        from evals.sim.grid import GridSpec, run_grid

        if args.window is not None and args.window < 1:
            parser.error(f"--window: must be at least 1 outcome, got {args.window}")

        spec = GridSpec(
            families=[int(x) for x in args.grid_families.split(",")],
            penalties=[float(x) for x in args.grid_penalties.split(",")],
            wrong_labels=[float(x) for x in args.grid_wrong.split(",")],
            seeds=args.seeds,
            passes=args.passes,
            k=args.k,
            ungated=args.ungated,
            bandit=_bandit_overrides(parser, args.bandit),
            share=args.share,
            window=args.window,
            first_seed=args.first_seed,
        )
        return run_grid(spec, args.out if args.out != "results/sim" else "results/grid")
    cfg = SimConfig(
        out_dir=args.out,
        families=args.families,
        per_family=args.per_family,
        iterations=args.iterations,
        modes=args.memory or ["none", "similarity", "learned"],
        k=args.k,
        seed=args.seed,
        test_fraction=args.test_fraction,
        plan_first=not args.no_plan,
    )
    started = time.perf_counter()
    summary = simulate(cfg)
    console = Console()
    print_summary(summary, console)
    tasks = sum(r["n"] for r in summary["overall"])
    console.print(f"{tasks} graph runs in {time.perf_counter() - started:.1f}s; plot: {args.out}/learning_curve.png")
    return summary


if __name__ == "__main__":
    main()
