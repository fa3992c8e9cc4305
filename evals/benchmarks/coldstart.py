"""Cold-start benchmark: what a person waits for at the command line, and bulk-import throughput.

    python -m evals.benchmarks.coldstart [--rounds 5] [--memory-jsonl ../shared/data/memento/memory.jsonl]
        [--out results/benchmarks/coldstart.json] [--no-server]

Each command runs in a fresh Python process, interleaved round by round with the baseline, a bare
``python -c "import chromadb"``, so a busy machine slows both alike; the medians are reported as
ratios to the baseline's median:

* ``memento --help``;
* ``memento memory search "<question>"`` against a bank holding the imported file;
* ``memento ask "<question>"`` against the scripted OpenAI-compatible server (no tools), timed
  until its ``cases`` line is printed (the retrieved cases are on screen), and to its exit (the
  scripted server answers at once, so work done while a real model is thinking shows here);
  once more with ``MEMENTO_BANK_WORKER=0`` (the bank opened in-process, no child process).

The 1-minute load average is recorded before and after the rounds: other jobs on the machine slow
every command, and a command that uses a second core (``ask``'s bank worker) more than the rest.

The served graph: ``langgraph dev`` is started, and three runs go through it one after another
(the first right after the server answers ``/ok``); the first should cost no more than the others.

Import throughput: the encoder's own batch throughput (``embed_uncached`` at batch 64 over the
file's case texts) against ``import_jsonl`` of the same file into a fresh embedded bank and into a
``chroma run`` server, in this process with the embedder already loaded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from rich.console import Console
from rich.table import Table

from evals.results import write_json_atomic

console = Console()
ROOT = Path(__file__).resolve().parents[2]
QUESTION = "What is the capital of Orotina Canton?"


def _env(extra: dict[str, str] | None = None, root: Path = ROOT) -> dict[str, str]:
    env = dict(os.environ)
    for key in (
        "LANGSMITH_TRACING",
        "LANGCHAIN_TRACING_V2",
        "MEMENTO_EMBEDDER",
        "MEMENTO_EMBEDDER_BACKEND",
        "MEMENTO_BANK_WORKER",
    ):
        env.pop(key, None)
    return {**env, "PYTHONPATH": str(root), **(extra or {})}


def _timed(argv: list[str], cwd: Path, env: dict[str, str], until: str | None = None) -> tuple[float, float]:
    """Seconds until a stderr/stdout line starts with ``until`` (else until exit), and until exit."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = None
    assert proc.stdout is not None
    for line in proc.stdout:
        if until and seen is None and line.lstrip().startswith(until):
            seen = time.perf_counter() - start
    rc = proc.wait()
    total = time.perf_counter() - start
    if rc != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}… exited {rc}")
    if until:
        if seen is None:
            raise RuntimeError(f"{' '.join(argv[:4])}… never printed {until!r}")
        return seen, total
    return total, total


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _import_throughput(data: Path, work: Path, server: bool) -> dict:
    from memory.bank import CaseBank
    from memory.embeddings import MiniLMEmbedder
    from memory.io import import_jsonl, iter_rows, row_to_case

    embedder = MiniLMEmbedder()  # what load_embedder("minilm") builds; its cache is cleared below
    texts = []
    fmt = None
    from memory.io import detect_format

    for _, row, err in iter_rows(data):
        if err or row is None:
            continue
        fmt = fmt or detect_format(row)
        texts.append(row_to_case(row, fmt, namespace=None, source="benchmark")[0].embedding_text())
    embedder.embed_uncached(texts[:64])  # first-run allocations out of the measurement

    def encoder_pass() -> float:
        t = time.perf_counter()
        for i in range(0, len(texts), 64):
            embedder.embed_uncached(texts[i : i + 64])
        return len(texts) / (time.perf_counter() - t)

    result: dict[str, Any] = {"cases": len(texts), "backend": getattr(embedder, "backend", "?")}

    def timed_import(bank: CaseBank) -> float:
        embedder._cache.clear()
        t = time.perf_counter()
        report = import_jsonl(bank, data)
        return report.written / (time.perf_counter() - t)

    # Each import sits between two encoder passes (a shared machine's load drifts).
    before = encoder_pass()
    result["embedded_per_s"] = timed_import(CaseBank(work / "import-bank", embedder=embedder))
    after = encoder_pass()
    encoder = result["encoder_per_s"] = (before + after) / 2
    result["embedded_vs_encoder"] = result["embedded_per_s"] / encoder
    chroma = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    if server and Path(chroma).exists():
        port = _free_port()
        log = (work / "chroma.log").open("w")
        proc = subprocess.Popen(
            [chroma, "run", "--path", str(work / "server"), "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
        try:
            deadline = time.time() + 60
            while True:
                try:
                    bank = CaseBank(url=f"http://127.0.0.1:{port}", embedder=embedder)
                    break
                except Exception:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.3)
            result["server_per_s"] = timed_import(bank)
            result["server_encoder_per_s"] = (after + encoder_pass()) / 2
            result["server_vs_encoder"] = result["server_per_s"] / result["server_encoder_per_s"]
        finally:
            proc.terminate()
            proc.wait(10)
    return result


def _served_runs(work: Path, env: dict[str, str], root: Path = ROOT, runs: int = 3) -> list[float] | None:
    """Seconds per run of the served graph (``langgraph dev``): the first after start, then more."""
    import httpx
    from langgraph_sdk import get_sync_client

    exe = shutil.which("langgraph", path=str(Path(sys.executable).parent))
    if exe is None:
        return None
    port = _free_port()
    log = (work / "dev.log").open("w")
    proc = subprocess.Popen(
        [
            exe,
            "dev",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--no-browser",
            "--no-reload",
            "--config",
            str(root / "langgraph.json"),
        ],
        cwd=root,
        env={
            **env,
            "PYTHONPATH": str(root),
            "MEMENTO_EXPERIENCE_PATH": str(work / "served-experience.sqlite"),
            "LANGGRAPH_CLI_NO_ANALYTICS": "1",
            "LANGGRAPH_NO_VERSION_CHECK": "1",
        },
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("langgraph dev did not start: " + (work / "dev.log").read_text()[-1500:])
            time.sleep(0.3)
        client = get_sync_client(url=url)
        assistant = client.assistants.search(graph_id="memento")[0]["assistant_id"]
        times = []
        for i in range(runs):
            thread = client.threads.create()["thread_id"]
            t = time.perf_counter()
            out = client.runs.wait(
                thread, assistant, input={"question": f"{QUESTION} ({i})"}, context={"mcp_config": ""}
            )
            times.append(time.perf_counter() - t)
            if not isinstance(out, dict) or not out.get("answer"):
                raise RuntimeError(f"served run failed: {out}")
        return times
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        log.close()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="Cold runs of each command (interleaved).")
    parser.add_argument("--memory-jsonl", default="../shared/data/memento/memory.jsonl", help="Cases to import.")
    parser.add_argument("--no-server", action="store_true", help="Skip the Chroma-server import.")
    parser.add_argument("--out", default="results/benchmarks/coldstart.json", help="JSON results file.")
    parser.add_argument(
        "--before",
        default=None,
        help="Another checkout (e.g. `git archive <commit> | tar -x -C DIR`) whose commands are timed in the same rounds.",
    )
    args = parser.parse_args(argv)

    data = Path(args.memory_jsonl).resolve()  # the commands run in a scratch folder
    if not data.is_file():
        parser.error(f"no case file at {data}")
    work = Path(tempfile.mkdtemp(prefix="memento-coldstart-"))
    py = sys.executable
    try:
        console.print("[bold]import throughput…")
        results: dict = {
            "cpus": os.cpu_count(),
            "rounds": args.rounds,
            "import": _import_throughput(data, work, not args.no_server),
        }

        bank = work / "bank"
        env = _env({"MEMENTO_BANK_PATH": str(bank)})
        subprocess.run(
            [py, "-m", "graph", "memory", "import", str(data), "--bank", str(bank)],
            cwd=work,
            env=env,
            check=True,
            capture_output=True,
        )
        from evals.sim.openai_server import ScriptedOpenAI, final, verdict

        with ScriptedOpenAI() as llm:
            llm.respond_with("planner", lambda _req: final("San Mateo"))
            llm.respond_with("judge", lambda _req: verdict(True))
            ask_vars = {
                "MEMENTO_BANK_PATH": str(bank),
                "OPENAI_BASE_URL": llm.url,
                "OPENAI_API_KEY": "test",
                "MEMENTO_PLANNER_MODEL": "planner",
                "MEMENTO_EXECUTOR_MODEL": "executor",
                "MEMENTO_JUDGE_MODEL": "judge",
            }
            ask_env = _env(ask_vars)
            commands = {
                "import chromadb (baseline)": ([py, "-c", "import chromadb"], env, None),
                "memento --help": ([py, "-m", "graph", "--help"], env, None),
                "memento memory search": ([py, "-m", "graph", "memory", "search", QUESTION, "-n", "5"], env, None),
                "memento ask (until cases shown)": (
                    [
                        py,
                        "-m",
                        "graph",
                        "ask",
                        QUESTION,
                        "--mcp-config",
                        "",
                        "--checkpoint-url",
                        str(work / "ck.sqlite"),
                    ],
                    ask_env,
                    "cases",
                ),
            }
            # The same command with the bank opened in-process: what the bank worker buys here and now.
            commands["memento ask, no bank worker (until cases shown)"] = (
                commands["memento ask (until cases shown)"][0],
                _env({**ask_vars, "MEMENTO_BANK_WORKER": "0"}),
                "cases",
            )
            if args.before:
                old = Path(args.before).resolve()
                old_env, old_ask = _env({"MEMENTO_BANK_PATH": str(bank)}, old), _env(ask_vars, old)
                for name, (cmd, cmd_env, until) in list(commands.items())[1:4]:
                    commands[f"before: {name}"] = (cmd, old_ask if cmd_env is ask_env else old_env, until)
            times: dict[str, list[float]] = {name: [] for name in commands}
            whole: dict[str, list[float]] = {name: [] for name, (_, _, until) in commands.items() if until}
            results["load_before"] = os.getloadavg()[0]
            for r in range(args.rounds):
                for name, (cmd, cmd_env, until) in commands.items():
                    seen, total = _timed(cmd, work, cmd_env, until)
                    times[name].append(seen)
                    if until:
                        whole[name].append(total)
                console.print(
                    f"  round {r + 1}/{args.rounds}: "
                    + ", ".join(f"{n.split(' (')[0]} {v[-1]:.2f}s" for n, v in times.items())
                    + f" (load {os.getloadavg()[0]:.2f})"
                )
            results["load_after"] = os.getloadavg()[0]
            for name, v in whole.items():
                times[name.replace("(until cases shown)", "(whole run)")] = v
            if not args.no_server:
                served = {"now": _served_runs(work, ask_env)}
                if args.before:
                    served["before"] = _served_runs(work, old_ask, Path(args.before).resolve())
                if served["now"]:
                    results["served_runs_s"] = served
        # The whole `memento memory import` command (model load included) into a fresh bank.
        roots = {"now": ROOT, **({"before": Path(args.before).resolve()} if args.before else {})}
        results["import_cli_s"] = {}
        for label, root in roots.items():
            target = work / f"cli-import-{label}"
            t = time.perf_counter()
            subprocess.run(
                [py, "-m", "graph", "memory", "import", str(data), "--bank", str(target)],
                cwd=work,
                env=_env(None, root),
                check=True,
                capture_output=True,
            )
            results["import_cli_s"][label] = time.perf_counter() - t
        base = statistics.median(times["import chromadb (baseline)"])
        results["cold"] = {
            name: {
                "median_s": statistics.median(v),
                "min_s": min(v),
                "runs_s": v,
                "x_baseline": statistics.median(v) / base,
            }
            for name, v in times.items()
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)

    table = Table(
        title=f"Cold start ({results['cpus']} CPUs, median of {args.rounds} interleaved runs, "
        f"load {results['load_before']:.2f} before, {results['load_after']:.2f} after)"
    )
    for col in ("command", "median", "min", "× import chromadb"):
        table.add_column(col, justify="right" if col != "command" else "left")
    for name, row in results["cold"].items():
        table.add_row(name, f"{row['median_s']:.2f} s", f"{row['min_s']:.2f} s", f"{row['x_baseline']:.2f}")
    console.print(table)
    imp = results["import"]
    console.print(
        f"import of {imp['cases']} cases ({imp['backend']} encoder {imp['encoder_per_s']:.0f}/s at batch 64): "
        f"embedded {imp['embedded_per_s']:.0f}/s ({imp['embedded_vs_encoder']:.0%})"
        + (
            f", Chroma server {imp['server_per_s']:.0f}/s ({imp['server_vs_encoder']:.0%})"
            if "server_per_s" in imp
            else ""
        )
    )
    if "served_runs_s" in results:
        for label, runs in results["served_runs_s"].items():
            console.print(f"langgraph dev, runs after start ({label}): " + ", ".join(f"{t:.2f} s" for t in runs or []))
    console.print(
        "`memento memory import` (cold, whole command): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in results["import_cli_s"].items())
    )
    write_json_atomic(args.out, results)
    console.print(f"results written to {args.out}")
    return results


if __name__ == "__main__":
    main()
