"""`memento ask` as a user meets it: answers, progress, and clear configuration errors."""

from __future__ import annotations

import socket

from typer.testing import CliRunner

from evals.sim.openai_server import final, plan, tool_call, verdict
from graph.cli import app

runner = CliRunner()


def test_ask_prints_progress_and_answer(agent_env, llm_server):
    llm_server.script("planner", plan(["Compute 3^4"]), final("81"))
    llm_server.script("executor", tool_call("math_evaluate", {"expression": "3^4"}), "81")
    llm_server.script("judge", verdict(True))
    result = runner.invoke(app, ["ask", "What is 3 to the 4th?", "--ground-truth", "81"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("81")
    for fragment in ("cases", "plan", "Compute 3^4", "tool math_evaluate", "subtask 1", "judge", "written"):
        assert fragment in result.output


def test_missing_api_key_explains_configuration(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env here
    result = runner.invoke(app, ["ask", "hello"])
    assert result.exit_code == 2
    for fragment in ("OPENAI_API_KEY", "Azure", "vLLM", "Ollama", "OPENAI_BASE_URL"):
        assert fragment in result.output


def test_unreachable_endpoint_is_one_clear_message(agent_env, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    monkeypatch.setenv("MEMENTO_MAX_RETRIES", "0")
    result = runner.invoke(app, ["ask", "hello", "--memory", "none"])
    assert result.exit_code == 2, result.output
    assert f"127.0.0.1:{port}" in result.output and "Traceback" not in result.output
    assert "memento ask --thread" in result.output


def test_empty_question_and_bad_memory_mode(agent_env):
    assert runner.invoke(app, ["ask", "  "]).exit_code == 2
    bad = runner.invoke(app, ["ask", "q", "--memory", "psychic"])
    assert bad.exit_code == 2 and "memory_mode" in bad.output


def test_env_file_is_loaded(tmp_path, monkeypatch, llm_server):
    keys = (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "MEMENTO_PLANNER_MODEL",
        "MEMENTO_BANK_PATH",
        "MEMENTO_EXPERIENCE_PATH",
        "MEMENTO_CHECKPOINT_URL",
    )
    for key in keys:  # setenv first so monkeypatch restores whatever .env loading adds
        monkeypatch.setenv(key, "unset")
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        f"OPENAI_API_KEY=from-dotenv\nOPENAI_BASE_URL={llm_server.url}\nMEMENTO_PLANNER_MODEL=planner\n"
        f"MEMENTO_BANK_PATH={tmp_path / 'bank'}\nMEMENTO_EXPERIENCE_PATH={tmp_path / 'exp.sqlite'}\n"
        f"MEMENTO_CHECKPOINT_URL={tmp_path / 'cp.sqlite'}\n"
    )
    llm_server.script("planner", final("hi"))
    result = runner.invoke(app, ["ask", "Say hi", "--memory", "none"])
    assert result.exit_code == 0, result.output
    assert llm_server.requests_for("planner")


def test_piped_ask_has_no_spinner_and_cases_come_from_the_warmed_bank(agent_env, llm_server):
    llm_server.script("planner", final("81"))
    llm_server.script("judge", verdict(True))
    result = runner.invoke(app, ["ask", "What is 3 to the 4th?", "--ground-truth", "81", "--mcp-config", ""])
    assert result.exit_code == 0, result.output
    assert "loading the agent" not in result.output and "working…" not in result.output
    assert "\x1b[" not in result.output  # no cursor control or colour codes when piped
    assert result.output.index("thread") < result.output.index("cases")
