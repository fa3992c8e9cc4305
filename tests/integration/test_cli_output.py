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

from tests.fakes import final, plan, tool_call

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
    servers.write_text(json.dumps({"mcpServers": {"crashy": {"command": sys.executable, "args": ["-m", "tests.fakes.crashy_mcp_server"]}}}))
    llm_server.script("planner", plan(["Echo two lines", "Say it is done"]), final("done"))
    llm_server.script("executor", tool_call("crashy_echo", {"text": "first line\n    indented second"}), "echoed", "it is done")
    res = memento("ask", "Echo and finish", "--memory", "none", "--mcp-config", str(servers))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "done"
    assert "subtask 2" in res.stderr
    assert "answered directly" not in res.stderr
    assert "final answer after 2 subtask(s)" in res.stderr
    # The continuation line sits under its tool line and keeps its own indentation.
    tool_line = next(line for line in res.stderr.splitlines() if "tool crashy_echo" in line)
    following = res.stderr.splitlines()[res.stderr.splitlines().index(tool_line) + 1]
    assert following.startswith(" " * 6 + "    indented second"), res.stderr


def test_piped_tables_and_help_print_whole_cells(tmp_path):
    rows = tmp_path / "cases.jsonl"
    rows.write_text(json.dumps({"case": LONG_QUESTION, "plan": '{"plan": ["Look it up."]}', "case_label": "positive"}) + "\n")
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
