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


def test_ask_shows_the_same_cases_with_and_without_the_bank_worker(agent_env, llm_server, monkeypatch, tmp_path):
    import shutil

    from memory.bank import CaseBank
    from memory.bank_worker import BankWorker
    from memory.cases import Case
    from memory.embeddings import HashEmbedder

    monkeypatch.setattr("memory.bank_worker.has_spare_core", lambda: True)  # also on a one-core runner
    monkeypatch.setenv("MEMENTO_EMBEDDER", "hash:16")
    monkeypatch.setenv("MEMENTO_MIN_SIMILARITY", "-1")  # hash vectors: show the nearest whatever they are
    CaseBank(tmp_path / "seed", embedder=HashEmbedder(16)).upsert(
        [Case(question=f"Which number comes after {i}?", answer=str(i + 1), reward=i % 3 and 1.0) for i in range(8)]
    )
    workers: list[BankWorker] = []
    real_start = BankWorker.start

    def recorded(*args, **kwargs):
        worker = real_start(*args, **kwargs)
        workers.append(worker)
        return worker

    monkeypatch.setattr(BankWorker, "start", recorded)

    def cases_shown(bank: str) -> list[str]:
        # Each run writes its own case: each starts from its own copy of the same bank.
        shutil.copytree(tmp_path / "seed", tmp_path / bank)
        monkeypatch.setenv("MEMENTO_BANK_PATH", str(tmp_path / bank))
        llm_server.script("planner", final("8"))
        result = runner.invoke(app, ["ask", "Which number comes after 7?", "--mcp-config", "", "--no-self-judge"])
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        first = next(i for i, line in enumerate(lines) if line.startswith("cases"))
        return lines[first : first + 5]

    with_worker = cases_shown("a")
    assert len(workers) == 1 and workers[0]._state == "used"  # the worker answered the search
    assert workers[0]._proc is None  # and was reaped
    monkeypatch.setenv("MEMENTO_BANK_WORKER", "0")
    without = cases_shown("b")
    assert len(workers) == 1  # switched off: no worker this time
    assert with_worker == without
    assert with_worker[0] == "cases 4 shown (similarity)"
    assert "positive" in with_worker[1] and "Which number comes after 7?" in with_worker[1]
    assert any("negative" in line for line in with_worker[2:])


def test_ask_with_a_config_error_ends_its_bank_worker(agent_env, monkeypatch, tmp_path):
    from memory.bank_worker import BankWorker

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setattr("memory.bank_worker.has_spare_core", lambda: True)
    workers: list[BankWorker] = []
    real_start = BankWorker.start
    monkeypatch.setattr(BankWorker, "start", lambda *a, **kw: workers.append(real_start(*a, **kw)) or workers[-1])
    result = runner.invoke(app, ["ask", "hello"])
    assert result.exit_code == 2 and "OPENAI_API_KEY" in result.output
    assert len(workers) == 1 and workers[0]._proc is None


def _seed_numbers_bank(path):
    from memory.bank import CaseBank
    from memory.cases import Case
    from memory.embeddings import HashEmbedder

    CaseBank(path, embedder=HashEmbedder(16)).upsert(
        [Case(question=f"Which number comes after {i}?", answer=str(i + 1), reward=i % 3 and 1.0) for i in range(8)]
    )


def test_ask_uses_the_bank_worker_the_console_script_started(agent_env, llm_server, monkeypatch, tmp_path):
    """`memento` starts ask's bank worker before importing the CLI (`graph.entry`); ask answers its
    first search with it, and a worker for another bank is closed, never used."""
    from graph.entry import early_bank_worker
    from memory.bank_worker import BankWorker

    monkeypatch.setattr("memory.bank_worker.has_spare_core", lambda: True)
    monkeypatch.setenv("MEMENTO_EMBEDDER", "hash:16")
    monkeypatch.setenv("MEMENTO_MIN_SIMILARITY", "-1")
    _seed_numbers_bank(tmp_path / "bank")
    _seed_numbers_bank(tmp_path / "other")
    monkeypatch.setenv("MEMENTO_BANK_PATH", str(tmp_path / "bank"))
    argv = ["ask", "Which number comes after 7?", "--mcp-config", "", "--no-self-judge"]

    early = early_bank_worker(argv)
    assert early is not None and early.serves(str(tmp_path / "bank"), None, "default")
    llm_server.script("planner", final("8"))
    result = runner.invoke(app, argv, obj={"bank_worker": early})
    assert result.exit_code == 0, result.output
    assert "cases 4 shown (similarity)" in result.output
    assert early._state == "used" and early._proc is None  # it answered the search, and was reaped

    stranger = BankWorker.start(str(tmp_path / "other"), None, "default")
    assert stranger is not None
    llm_server.script("planner", final("8"))
    result = runner.invoke(app, argv, obj={"bank_worker": stranger})
    assert result.exit_code == 0, result.output
    assert "cases 4 shown (similarity)" in result.output
    assert stranger._state == "closed" and stranger._proc is None


def test_the_console_script_starts_no_worker_unless_ask_would_use_its_bank(monkeypatch, tmp_path):
    from graph.entry import early_bank_worker

    started: list[tuple] = []
    monkeypatch.setattr("memory.bank_worker.has_spare_core", lambda: True)
    monkeypatch.setattr("memory.bank_worker.BankWorker.start", lambda *a, **kw: started.append(a) or None)
    monkeypatch.setenv("MEMENTO_BANK_PATH", str(tmp_path / "bank"))
    for argv in (
        [],
        ["memory", "search", "capital"],
        ["ask"],
        ["ask", "--help"],
        ["ask", "q", "--bank", "elsewhere"],
        ["ask", "q", "--memory=none"],
        ["ask", "--thread", "abc", "--approve"],
    ):
        assert early_bank_worker(argv) is None, argv
    assert started == []
    monkeypatch.setenv("MEMENTO_BANK_WORKER", "0")
    assert early_bank_worker(["ask", "q"]) is None and started == []
    monkeypatch.setenv("MEMENTO_BANK_WORKER", "1")
    monkeypatch.setenv("MEMENTO_K", "not a number")
    assert early_bank_worker(["ask", "q"]) is None and started == []  # the command reports a bad setting
    monkeypatch.delenv("MEMENTO_K")
    early_bank_worker(["ask", "q"])
    assert started == [(str(tmp_path / "bank"), None, "default")]
