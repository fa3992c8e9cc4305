"""What a person sees at the CLI when things go wrong, and when its output is piped.

Every test runs `memento` as a subprocess with stdout and stderr piped, as a script or a shell
pipeline would: no Typer test runner, no terminal.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from evals.sim.openai_server import final, plan, tool_call, verdict

ROOT = Path(__file__).resolve().parents[2]
LONG_QUESTION = (
    "Which element of the periodic table was first isolated by Humphry Davy in 1807 using electrolysis "
    "of molten caustic potash, and what is its atomic number?"
)


def memento(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the CLI like a user's shell pipeline does (no terminal, no COLUMNS)."""
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full.pop("COLUMNS", None)
    return subprocess.run(
        [sys.executable, "-m", "graph", *args], capture_output=True, text=True, env=full, cwd=cwd or ROOT, timeout=300
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_resuming_an_unknown_thread_is_one_clear_line(agent_env):
    res = memento("ask", "--thread", "doesnotexist")
    assert res.returncode == 1, res.stderr
    assert "no run found for thread doesnotexist" in res.stderr
    assert "Traceback" not in res.stderr and "EmptyInputError" not in res.stderr
    assert len(res.stderr.strip().splitlines()) <= 2, res.stderr


def test_unreachable_postgres_checkpointer_is_one_clear_line(agent_env):
    url = f"postgresql://postgres:secret@127.0.0.1:{free_port()}/test"
    res = memento("ask", "hello", "--memory", "none", env={"MEMENTO_CHECKPOINT_URL": url})
    assert res.returncode == 2, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot open the Postgres checkpoint store" in errors[0], res.stderr
    assert "secret" not in res.stderr  # the password is not echoed
    assert "Traceback" not in res.stderr and "OperationalError" not in res.stderr


def test_ask_json_on_a_failed_run_exits_nonzero_with_the_thread_id(agent_env, llm_server):
    llm_server.script("planner", "no json here", "still none")  # unusable twice: the run fails
    res = memento("ask", "What is 2 + 2?", "--memory", "none", "--mcp-config", "", "--json")
    assert res.returncode == 1, res.stderr
    state = json.loads(res.stdout)
    assert state["status"] == "failed" and state["answer"] is None
    assert re.search(rf"^thread {state['thread_id']}$", res.stderr, re.M), res.stderr


def test_progress_after_subtasks_and_multiline_tool_results(agent_env, llm_server, tmp_path):
    servers = tmp_path / "echo.json"
    servers.write_text(
        json.dumps(
            {"mcpServers": {"crashy": {"command": sys.executable, "args": ["-m", "tests.fakes.crashy_mcp_server"]}}}
        )
    )
    # Square brackets are printed as they are, never read as Rich markup (a stray "[/x]" used to crash).
    llm_server.script("planner", plan(["Echo two lines", "Say it is done"]), final("done [/tmp] [bold]"))
    llm_server.script(
        "executor", tool_call("crashy_echo", {"text": "first [/red] line\n    indented second"}), "echoed", "it is done"
    )
    res = memento("ask", "Echo and finish", "--memory", "none", "--mcp-config", str(servers))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "done [/tmp] [bold]"
    assert "first [/red] line" in res.stderr
    assert "subtask 2" in res.stderr
    assert "answered directly" not in res.stderr
    assert "final answer after 2 subtask(s)" in res.stderr
    # The continuation line sits under its tool line and keeps its own indentation.
    tool_line = next(line for line in res.stderr.splitlines() if "tool crashy_echo" in line)
    following = res.stderr.splitlines()[res.stderr.splitlines().index(tool_line) + 1]
    assert following.startswith(" " * 6 + "    indented second"), res.stderr


def test_piped_tables_and_help_print_whole_cells(tmp_path):
    rows = tmp_path / "cases.jsonl"
    rows.write_text(
        json.dumps({"case": LONG_QUESTION, "plan": '{"plan": ["Look it up."]}', "case_label": "positive"}) + "\n"
    )
    bank = tmp_path / "a-case-bank-folder-with-a-rather-long-name-so-the-title-is-wider-than-eighty-columns"
    env = {"MEMENTO_BANK_PATH": str(bank), "MEMENTO_EMBEDDER": "hash"}
    assert memento("memory", "import", str(rows), env=env).returncode == 0

    search = memento("memory", "search", "Humphry Davy electrolysis", env=env)
    assert search.returncode == 0, search.stderr
    assert LONG_QUESTION in search.stdout and "…" not in search.stdout

    stats = memento("memory", "stats", env=env)
    assert f"Case bank {bank} — namespace default" in stats.stdout, stats.stdout
    assert "memento:cases.jsonl: 1" in stats.stdout and "…" not in stats.stdout

    help_ = memento("ask", "--help")
    assert "('<|answer_split|>'-separated)" in help_.stdout and "…" not in help_.stdout


def test_eval_unreachable_langsmith_offline_flag_and_changed_modes(llm_server, tmp_path):
    llm_server.respond_with("planner", lambda request: final("Paris"))
    llm_server.respond_with("judge", lambda request: verdict(True, "same city"))
    data = tmp_path / "data.jsonl"
    data.write_text(
        json.dumps({"question": "What is the capital of France?", "ground_truth": "Paris", "source": "geo"}) + "\n"
    )
    out = tmp_path / "out"
    args = (
        "eval",
        str(data),
        "--base-url",
        llm_server.url,
        "--planner",
        "planner",
        "--executor",
        "executor",
        "--judge",
        "judge",
        "--mcp-config",
        "",
        "--out",
        str(out),
        "--quiet",
        "--memory",
        "similarity",
    )
    env = {
        "OPENAI_API_KEY": "test-key",
        "LANGSMITH_API_KEY": "lsv2-test",
        "LANGSMITH_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "MEMENTO_JUDGE_MODEL": "judge",
    }

    # With a key and no LangSmith: one warning line, and the results are kept locally.
    res = memento(*args, env=env, cwd=tmp_path)
    both = res.stdout + res.stderr
    assert res.returncode == 0, both
    assert [line for line in both.splitlines() if "LangSmith unreachable" in line] != [] and "Traceback" not in both
    assert sum("LangSmith" in line for line in both.splitlines()) == 1, both
    assert "LangSmithBetaWarning" not in both and "is in beta" not in both
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["correct"] is True and records[0]["error"] is None
    assert json.loads((out / "config.json").read_text())["langsmith_upload"] is False
    # The piped summary keeps whole cells.
    assert "similarity" in res.stdout and "accuracy" in res.stdout and "…" not in res.stdout

    # --offline: no LangSmith check at all; the finished folder reruns nothing.
    asked = len(llm_server.requests_for("planner"))
    offline = memento(*args, "--offline", env=env, cwd=tmp_path)
    assert offline.returncode == 0, offline.stdout + offline.stderr
    assert "LangSmith" not in offline.stdout + offline.stderr
    assert len(llm_server.requests_for("planner")) == asked

    # Another --memory set on the same folder is refused like another --k, leaving its summary alone.
    summary = (out / "summary.json").read_text()
    changed = memento(*args[:-1], "none", "--offline", env=env, cwd=tmp_path)
    assert changed.returncode == 2 and "other settings" in changed.stdout and "modes" in changed.stdout, changed.stdout
    assert (out / "summary.json").read_text() == summary

    # A binary file is one clear line.
    blob = tmp_path / "weights.jsonl"
    blob.write_bytes(bytes(range(256)) * 8)
    binary = memento("eval", str(blob), "--mcp-config", "", "--out", str(tmp_path / "bin"), env=env, cwd=tmp_path)
    assert binary.returncode == 2
    assert binary.stdout.strip().splitlines() == [
        f"error: cannot read {blob} as a dataset: it holds binary data (NUL bytes)"
    ]
