"""Concurrent-writer benchmark: single-case upserts into one embedded bank, one writer vs eight.

    python -m evals.benchmarks.writers [--rounds 3] [--writes 64] [--writers 8] [--seed-cases 2000]
        [--before DIR] [--out results/benchmarks/writers.json]

Each run starts from a fresh bank holding ``--seed-cases`` cases and times ``--writes`` single-case
``CaseBank.upsert`` calls, made either by one writer process alone or by ``--writers`` processes
together (each writing its share, all at once). Every process opens its bank and reads it once
before a start signal, so the timing is the writes alone; throughput is total writes per second
from the signal until the last write returned (each writer stamps the wall clock after its last
upsert). The same to the last writer's exit is reported beside it: eight interpreters tearing
down at once on two cores add about a third of a second that no write waits for, and one writer
pays one such exit. The ratio eight-together ÷ one-alone is the figure: one
embedded bank serialises writes under its folder lock, so more writers can at best keep one
writer's rate while overlapping the work done outside the lock.

Vectors come from ``HashEmbedder(384)`` (MiniLM's size, no model): the benchmark measures the bank,
not the encoder. After each run the bank is checked: every case is counted and findable through
the vector index.

With ``--before DIR`` (another checkout, e.g. ``git archive main | tar -x -C DIR``) the same runs
are made with that code, interleaved round by round with this checkout's, so a busy machine slows
both alike.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from rich.console import Console
from rich.table import Table

from evals.results import write_json_atomic

console = Console()
ROOT = Path(__file__).resolve().parents[2]
DIM = 384

# Runs with PYTHONPATH set to the checkout under test (this module may not exist in the other one).
_WRITER = f"""
import os, sys, time
from pathlib import Path
from memory.bank import CaseBank
from memory.cases import Case
from memory.embeddings import HashEmbedder
path, writer, n, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
bank = CaseBank(path, embedder=HashEmbedder({DIM}), lock_timeout=600)
bank.search("warm up", 1)
print("ready", flush=True)
while not go.exists():
    time.sleep(0.001)
for i in range(n):
    bank.upsert(Case(question=f"writer {{writer}} case {{i}}", task_id=f"w{{writer}}", reward=float(i % 2)))
print(f"done {{time.time():.6f}}", flush=True)
"""

_SEED = f"""
import sys
from memory.bank import CaseBank
from memory.cases import Case
from memory.embeddings import HashEmbedder
bank = CaseBank(sys.argv[1], embedder=HashEmbedder({DIM}))
cases = [Case(question=f"seed case {{i}}", reward=1.0) for i in range(int(sys.argv[2]))]
for start in range(0, len(cases), 500):
    bank.upsert(cases[start : start + 500])
"""


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(root), "ANONYMIZED_TELEMETRY": "False"}


def _run(root: Path, bank: Path, seed: int, writers: int, writes: int) -> tuple[float, float]:
    """Total writes per second of ``writers`` processes writing ``writes`` cases between them.

    Returns:
        ``(until the last write returned, until the last writer exited)``.

    """
    if seed:
        subprocess.run([sys.executable, "-c", _SEED, str(bank), str(seed)], env=_env(root), check=True)
    go = bank.with_name(bank.name + ".go")
    shares = [writes // writers + (1 if w < writes % writers else 0) for w in range(writers)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(bank), str(w), str(n), str(go)],
            env=_env(root),
            stdout=subprocess.PIPE,
            text=True,
        )
        for w, n in enumerate(shares)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a writer did not start (exit {proc.wait()})")
        start, wall = time.perf_counter(), time.time()
        go.touch()
        finished = []
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().split()
            finished.append(float(line[1]) if line[:1] == ["done"] else float("nan"))
        codes = [proc.wait() for proc in procs]
        elapsed = time.perf_counter() - start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            if proc.stdout is not None:
                proc.stdout.close()
    if codes != [0] * writers:
        raise RuntimeError(f"writers exited {codes}")
    _check(bank, seed, shares)
    return writes / (max(finished) - wall), writes / elapsed


def _check(path: Path, seed: int, shares: list[int]) -> None:
    """Every case is stored once and findable through the vector index."""
    from memory.bank import CaseBank
    from memory.embeddings import HashEmbedder

    bank = CaseBank(path, embedder=HashEmbedder(DIM), create=False)
    try:
        expected = seed + sum(shares)
        if bank.count() != expected:
            raise RuntimeError(f"{path}: {bank.count()} cases, expected {expected}")
        for w, n in enumerate(shares):
            question = f"writer {w} case {n - 1}"
            hits = bank.search(question, 1)
            if not hits or hits[0].case.question != question:
                raise RuntimeError(f"{path}: {question!r} is not found through the index")
        if len(bank.nearest_ids([[1.0] * DIM], expected)[0]) != expected:
            raise RuntimeError(f"{path}: the vector index does not hold all {expected} cases")
    finally:
        bank.close()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds (medians are reported).")
    parser.add_argument("--writes", type=int, default=64, help="Single-case upserts per run, in total.")
    parser.add_argument("--writers", type=int, default=8, help="Writer processes of the concurrent run.")
    parser.add_argument("--seed-cases", type=int, default=2000, help="Cases in the bank before each run.")
    parser.add_argument("--before", default=None, help="Another checkout timed in the same rounds.")
    parser.add_argument("--out", default="results/benchmarks/writers.json", help="JSON results file.")
    args = parser.parse_args(argv)
    if args.writers < 2 or args.writes < args.writers:
        parser.error("--writers must be at least 2 and --writes at least --writers")

    roots = {"now": ROOT}
    if args.before:
        roots["before"] = Path(args.before).resolve()
        if not (roots["before"] / "memory" / "bank.py").is_file():
            parser.error(f"{roots['before']} is not a checkout of this project (no memory/bank.py)")
    work = Path(tempfile.mkdtemp(prefix="memento-writers-"))
    runs: dict[str, dict[str, list[float]]] = {
        label: {"alone": [], "together": [], "alone_to_exit": [], "together_to_exit": []} for label in roots
    }
    try:
        for r in range(args.rounds):
            order = list(roots.items()) if r % 2 == 0 else list(reversed(roots.items()))
            for label, root in order:
                for kind, writers in (("alone", 1), ("together", args.writers)):
                    bank = work / f"{label}-{kind}-{r}"
                    to_write, to_exit = _run(root, bank, args.seed_cases, writers, args.writes)
                    runs[label][kind].append(to_write)
                    runs[label][f"{kind}_to_exit"].append(to_exit)
                    shutil.rmtree(bank, ignore_errors=True)
            console.print(
                f"  round {r + 1}/{args.rounds}: "
                + ", ".join(
                    f"{label} {v['alone'][-1]:.1f} / {v['together'][-1]:.1f} writes/s "
                    f"(to the exits {v['alone_to_exit'][-1]:.1f} / {v['together_to_exit'][-1]:.1f})"
                    for label, v in runs.items()
                )
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    results: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "rounds": args.rounds,
        "writes": args.writes,
        "writers": args.writers,
        "seed_cases": args.seed_cases,
        "embedder": f"hash-{DIM}",
    }
    table = Table(
        title=f"{args.writes} single-case upserts into one embedded bank of {args.seed_cases} cases "
        f"({results['cpus']} CPUs, median of {args.rounds} interleaved rounds)"
    )
    cols = ("code", "1 writer alone", f"{args.writers} writers together", "together ÷ alone",
            "to the exits: alone", "together", "together ÷ alone")  # fmt: skip
    for col in cols:
        table.add_column(col, justify="right" if col != "code" else "left")
    for label, v in runs.items():
        alone, together = statistics.median(v["alone"]), statistics.median(v["together"])
        alone_x, together_x = statistics.median(v["alone_to_exit"]), statistics.median(v["together_to_exit"])
        results[label] = {
            "alone_writes_per_s": alone,
            "together_writes_per_s": together,
            "ratio": together / alone,
            "ratio_per_round": [t / a for a, t in zip(v["alone"], v["together"], strict=True)],
            "alone_to_exit_writes_per_s": alone_x,
            "together_to_exit_writes_per_s": together_x,
            "ratio_to_exit": together_x / alone_x,
            "runs": v,
        }
        table.add_row(label, f"{alone:.1f}/s", f"{together:.1f}/s", f"{together / alone:.2f}",
                      f"{alone_x:.1f}/s", f"{together_x:.1f}/s", f"{together_x / alone_x:.2f}")  # fmt: skip
    console.print(table)
    write_json_atomic(args.out, results)
    console.print(f"results written to {args.out}")
    return results


if __name__ == "__main__":
    main()
