"""Per-task framework overhead: the graph and its checkpoints with an instant scripted model.

Every configuration runs the same task shape (plan with one subtask → one executor reply →
final answer → judge) against the scripted OpenAI-compatible server on loopback, so LLM time is
~0 and what remains is HTTP + LangGraph + checkpointing + memory. The baseline is the same
four chat calls made directly with ``ChatOpenAI`` (no graph), side by side in the same process.

    python -m evals.benchmarks.overhead --tasks 40 [--postgres postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from typing import Any

from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from rich.console import Console
from rich.table import Table

from evals.sim.openai_server import ScriptedOpenAI, final, plan, verdict
from graph.builder import compile_graph
from graph.context import Context
from graph.persistence import open_checkpointer
from nodes.resources import Resources


def _script(server: ScriptedOpenAI) -> None:
    """Answer every request instantly with the same four-call task shape."""
    planner_turn = {"n": 0}

    def planner(_req):
        planner_turn["n"] += 1
        return plan(["look it up"]) if planner_turn["n"] % 2 == 1 else final("42")

    server.respond_with("planner", planner)
    server.respond_with("executor", lambda _req: "found 42")
    server.respond_with("judge", lambda _req: verdict(True))


async def _baseline(ctx: Context, n: int, resources: Resources) -> list[float]:
    times = []
    models = [resources.chat_model(ctx, r) for r in ("planner", "executor", "planner", "judge")]
    for _ in range(n):
        t0 = time.perf_counter()
        for m in models:
            await m.ainvoke([HumanMessage("What is the answer?")])
        times.append(time.perf_counter() - t0)
    return times


async def _graph_runs(ctx: Context, n: int, saver, resources: Resources) -> list[float]:
    graph = compile_graph(saver, resources=resources)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        task: Any = {"question": f"What is the answer to question {i}?", "ground_truth": "42"}
        out = await graph.ainvoke(
            task,
            {"configurable": {"thread_id": uuid.uuid4().hex}},
            context=ctx,
        )
        times.append(time.perf_counter() - t0)
        assert out["answer"] == "42", out
    return times


def _ms(values: list[float], q: float) -> float:
    values = sorted(values)
    return 1000 * values[min(len(values) - 1, int(q * len(values)))]


async def main_async(args: argparse.Namespace) -> dict:
    os.environ.setdefault("OPENAI_API_KEY", "benchmark")
    work = tempfile.mkdtemp(prefix="memento-overhead-")
    rows: dict[str, list[float]] = {}
    with ScriptedOpenAI() as server:
        _script(server)
        base: dict[str, Any] = dict(
            planner_model="planner",
            executor_model="executor",
            judge_model="judge",
            base_url=server.url,
            bank_path=f"{work}/bank",
            experience_path=f"{work}/exp.sqlite",
            mcp_config="",
        )
        no_memory = Context(**base, memory_mode="none", write_back=False)
        with_memory = Context(**base, memory_mode="similarity")
        # One owner of the model clients, the embedder and the bank for every configuration (as one
        # server holds them); the warm-up loads them once.
        res = Resources(with_memory)
        await _baseline(no_memory, 3, res)
        await _graph_runs(with_memory, 3, None, res)
        rows["direct ChatOpenAI calls (baseline)"] = await _baseline(no_memory, args.tasks, res)
        rows["graph, no checkpointer, no memory"] = await _graph_runs(no_memory, args.tasks, None, res)
        rows["graph + in-memory checkpoints"] = await _graph_runs(no_memory, args.tasks, InMemorySaver(), res)
        async with open_checkpointer(f"{work}/cp.sqlite") as saver:
            rows["graph + SQLite checkpoints"] = await _graph_runs(no_memory, args.tasks, saver, res)
        if args.postgres:
            async with open_checkpointer(args.postgres) as saver:
                rows["graph + Postgres checkpoints"] = await _graph_runs(no_memory, args.tasks, saver, res)
        async with open_checkpointer(f"{work}/cp2.sqlite") as saver:
            rows["graph + SQLite + similarity memory + write-back"] = await _graph_runs(
                with_memory, args.tasks, saver, res
            )
        await res.aclose()
    baseline = statistics.median(rows["direct ChatOpenAI calls (baseline)"])
    result = {
        name: {
            "p50_ms": round(_ms(v, 0.5), 2),
            "p95_ms": round(_ms(v, 0.95), 2),
            "overhead_ms_p50": round(1000 * (statistics.median(v) - baseline), 2),
            "ratio_vs_baseline": round(statistics.median(v) / baseline, 2),
        }
        for name, v in rows.items()
    }
    return {"tasks": args.tasks, "llm_calls_per_task": 4, "results": result}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=40, help="tasks per configuration")
    parser.add_argument(
        "--postgres", default=os.environ.get("MEMENTO_BENCH_POSTGRES", ""), help="Postgres URL to include"
    )
    parser.add_argument("--out", default="", help="write the results as JSON here")
    args = parser.parse_args(argv)
    report = asyncio.run(main_async(args))
    table = Table(title=f"Per-task overhead, instant scripted model ({args.tasks} tasks, 4 LLM calls each)")
    for col in ("configuration", "p50 ms", "p95 ms", "overhead p50 ms", "× baseline"):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for name, r in report["results"].items():
        table.add_row(
            name,
            f"{r['p50_ms']:.1f}",
            f"{r['p95_ms']:.1f}",
            f"{r['overhead_ms_p50']:.1f}",
            f"{r['ratio_vs_baseline']:.2f}",
        )
    Console().print(table)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
