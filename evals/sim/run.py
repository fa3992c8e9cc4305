"""The simulated continual-learning benchmark end to end: tasks, simulated LLM, real graph, report.

    simulate(SimConfig(out_dir="results/sim", modes=["none", "similarity", "learned"]))

starts the scripted OpenAI-compatible server on loopback, installs one `SimLLM` per memory mode
(its own model names, so attempt counters never mix), runs the eval over the synthetic stream and
writes ``results.jsonl``, ``summary.{json,md}`` and ``learning_curve.png``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evals.plots import plot_learning_curves
from evals.results import write_json_atomic
from evals.runner import EvalConfig, EvalRunner, train_policy_before_pass
from evals.sim.model import SimLLM, SimParams
from evals.sim.openai_server import ScriptedOpenAI
from evals.sim.tasks import generate_tasks
from evals.summary import learning_curves, summarize, write_summary

SIM_KEY_ENV = "MEMENTO_SIM_API_KEY"


@dataclass
class SimConfig:
    """Size and settings of a simulated run."""

    out_dir: Path = Path("results/sim")
    families: int = 10
    per_family: int = 12
    iterations: int = 3
    modes: list[str] = field(default_factory=lambda: ["none", "similarity", "learned"])
    k: int = 4
    seed: int = 0
    # 1 keeps runs reproducible: with several tasks in flight, which cases a task sees depends
    # on timing.
    concurrency: int = 1
    test_fraction: float = 0.0
    params: SimParams = field(default_factory=SimParams)
    plan_first: bool = True
    progress: bool = True
    # Set: no ground truth reaches the graph, and the simulated self-judge is right with this
    # probability (everyday use); accuracy is still scored against the true answers.
    self_judge_accuracy: float | None = None


async def asimulate(cfg: SimConfig) -> dict[str, Any]:
    """Run the simulated benchmark; returns the summary (also written to ``out_dir``)."""
    out = Path(cfg.out_dir)
    tasks = generate_tasks(cfg.families, cfg.per_family, cfg.seed)
    examples = [t.example() for t in tasks]
    check_sim_settings(cfg)
    notes: list[str] = []
    os.environ.setdefault(SIM_KEY_ENV, "sim")
    with ScriptedOpenAI() as server:
        judge_accuracy = 1.0 if cfg.self_judge_accuracy is None else cfg.self_judge_accuracy
        sims = {
            mode: SimLLM(
                tasks,
                seed=cfg.seed,
                params=cfg.params,
                suffix=mode,
                plan_first=cfg.plan_first,
                judge_accuracy=judge_accuracy,
            ).install(server)
            for mode in cfg.modes
        }
        # One EvalConfig per mode: each mode's models are its own simulator instance.
        records: list[dict[str, Any]] = []
        for mode in cfg.modes:
            models = sims[mode].models
            econf = EvalConfig(
                out_dir=out,
                modes=[mode],
                iterations=cfg.iterations,
                k=cfg.k,
                concurrency=cfg.concurrency,
                seed=cfg.seed,
                test_fraction=cfg.test_fraction,
                namespace_prefix="sim",
                dataset_name=f"sim-f{cfg.families}x{cfg.per_family}-s{cfg.seed}",
                progress=cfg.progress,
                langsmith_upload=False,
                hide_ground_truth=cfg.self_judge_accuracy is not None,
                context={
                    "planner_model": models["planner"],
                    "executor_model": models["executor"],
                    "judge_model": models["judge"],
                    "base_url": server.url,
                    "api_key_env": SIM_KEY_ENV,
                    "mcp_config": "",
                    "max_cycles": 2,
                    # Valid for both the Context and the policy's selector; keeps the policy learning.
                    "exploration": "epsilon:0.1",
                },
            )
            hook = functools.partial(train_policy_before_pass, seed=cfg.seed, notes=notes)
            runner = EvalRunner(econf, examples, before_pass=hook)
            records = await runner.run()
    records = [r for r in records if r["mode"] in cfg.modes and int(r["iteration"]) <= cfg.iterations]
    meta = {
        "benchmark": "simulated LLM",
        "families": cfg.families,
        "per_family": cfg.per_family,
        "iterations": cfg.iterations,
        "modes": cfg.modes,
        "k": cfg.k,
        "seed": cfg.seed,
        "test_fraction": cfg.test_fraction,
        "sim_params": asdict(cfg.params),
        "self_judge_accuracy": cfg.self_judge_accuracy,
        "notes": notes + fallback_notes(records),
    }
    summary = summarize(records, meta=meta)
    write_summary(summary, out)
    plot_learning_curves(
        learning_curves(summary),
        out / "learning_curve.png",
        title=f"Simulated LLM: {cfg.families} families × {cfg.per_family} tasks, K={cfg.k}, seed {cfg.seed}",
        labels=mode_labels(records),
    )
    return summary


def simulate(cfg: SimConfig) -> dict[str, Any]:
    """Blocking wrapper of `asimulate`."""
    return asyncio.run(asimulate(cfg))


def fallback_notes(records: list[dict[str, Any]]) -> list[str]:
    """Say where learned mode actually ran as similarity (no policy yet, or none installed)."""
    notes = []
    failed: dict[tuple[str, int], str] = {}
    for r in records:
        if r.get("error"):
            failed.setdefault((r["mode"], int(r["iteration"])), r["error"])
    for (mode, it), err in sorted(failed.items()):
        notes.append(f"{mode} pass {it}: tasks failed, e.g. {err[:200]} (rerun the same command to retry them)")
    passes: dict[int, set[str]] = {}
    for r in records:
        if r["mode"] == "learned" and not r.get("error"):
            passes.setdefault(int(r["iteration"]), set()).add(str(r.get("selector")))
    for it, selectors in sorted(passes.items()):
        if "learned" not in selectors:
            notes.append(
                f"learned pass {it} ran with selector(s) {sorted(selectors)}: no usable policy, similarity fallback"
            )
    return notes


def mode_labels(records: list[dict[str, Any]]) -> dict[str, str]:
    """Legend labels; learned says when none of its passes used the policy."""
    learned = {str(r.get("selector")) for r in records if r["mode"] == "learned" and not r.get("error")}
    if learned and "learned" not in learned:
        return {"learned": "learned (fell back to similarity)"}
    return {}


def check_sim_settings(cfg: SimConfig) -> None:
    """Refuse to resume into a folder written with other stream settings; record them otherwise.

    More passes or more modes may be added to an existing folder; a different stream may not.

    Raises:
        ValueError: The folder holds a run over a different synthetic stream.

    """
    path = Path(cfg.out_dir) / "sim_config.json"
    now = {
        "families": cfg.families,
        "per_family": cfg.per_family,
        "k": cfg.k,
        "seed": cfg.seed,
        "test_fraction": cfg.test_fraction,
        "params": asdict(cfg.params),
        "plan_first": cfg.plan_first,
    }
    if cfg.self_judge_accuracy is not None:
        now["self_judge_accuracy"] = cfg.self_judge_accuracy
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = sorted(k for k in now if old.get(k) != now[k])
        if diff:
            raise ValueError(
                f"{cfg.out_dir} holds a simulated run with other settings ({', '.join(diff)}); "
                "rerun with the same settings to resume, or choose another --out folder"
            )
    write_json_atomic(path, now)
