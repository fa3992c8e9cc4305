import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from memory.cli import app

PLAN = '{"plan": [{"id": 1, "description": "Look it up."}]}'


@pytest.fixture
def env(tmp_path, monkeypatch):
    bank = tmp_path / "bank"
    monkeypatch.setenv("MEMENTO_BANK_PATH", str(bank))
    monkeypatch.setenv("MEMENTO_EMBEDDER", "hash")
    monkeypatch.delenv("MEMENTO_CHROMA_URL", raising=False)
    monkeypatch.delenv("MEMENTO_NAMESPACE", raising=False)
    return bank


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def rows_file(tmp_path):
    f = tmp_path / "memory.jsonl"
    rows = [
        json.dumps({"case": "What sport does Deportivo Cali play?", "plan": PLAN, "case_label": "positive"}),
        json.dumps({"case": "In what country is Northland Communications?", "plan": PLAN, "case_label": "negative"}),
        "{broken",
        json.dumps({"case": "What is the capital of Orotina Canton?", "plan": PLAN, "case_label": "positive"}),
    ]
    f.write_text("\n".join(rows) + "\n")
    return f


def stats(*extra):
    res = run("stats", "--json", *extra)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_import_reports_bad_rows_keeps_good_ones_and_exits_nonzero(env, tmp_path):
    res = run("import", rows_file(tmp_path))
    assert res.exit_code == 1
    assert "memory.jsonl:3:" in res.output and "invalid JSON" in res.output
    assert "3 cases written" in res.output
    s = stats()
    assert s["cases"] == 3
    assert s["by_label"] == {"positive": 2, "negative": 1}
    assert s["by_reward_source"] == {"imported": 3}
    assert s["namespaces"] == {"default": 3}


def test_search_show_set_reward_delete_export(env, tmp_path):
    run("import", rows_file(tmp_path))
    res = run("search", "What sport does Deportivo Cali play?", "-n", "2", "--json")
    assert res.exit_code == 0, res.output
    hits = json.loads(res.stdout)
    assert len(hits) == 2 and hits[0]["question"] == "What sport does Deportivo Cali play?"
    assert hits[0]["similarity"] > 0.99
    table = run("search", "What sport does Deportivo Cali play?", "--label", "negative")
    assert table.exit_code == 0 and "1 nearest cases" in table.output
    negative = json.loads(run("search", "What sport does Deportivo Cali play?", "--label", "negative", "--json").stdout)
    assert [h["label"] for h in negative] == ["negative"]
    guarded = run("search", "What sport does Deportivo Cali play?", "--exclude-above", "0.9", "--json")
    assert "Deportivo" not in guarded.stdout
    case_id = hits[0]["id"]

    shown = run("show", case_id, "--json")
    assert json.loads(shown.stdout)["label"] == "positive"
    assert run("show", case_id).exit_code == 0
    missing = run("show", "case-nope")
    assert missing.exit_code == 1 and "case-nope" in missing.output

    res = run("set-reward", case_id, "0", "--rationale", "wrong after all")
    assert res.exit_code == 0, res.output
    assert json.loads(run("show", case_id, "--json").stdout)["label"] == "negative"

    out = tmp_path / "out.jsonl"
    res = run("export", out, "--format", "memory")
    assert res.exit_code == 0, res.output
    assert sorted(json.loads(line)["case_label"] for line in out.read_text().splitlines()) == [
        "negative",
        "negative",
        "positive",
    ]

    assert run("delete", case_id).exit_code == 0
    assert stats()["cases"] == 2
    assert run("delete", case_id).exit_code == 1
    listing = run("list", "--json")
    assert len(json.loads(listing.stdout)) == 2


def test_an_empty_search_is_one_clear_line(env, tmp_path):
    run("import", rows_file(tmp_path))
    for blank in ("", "   "):
        res = run("search", blank)
        assert res.exit_code == 2
        assert "give a question to search for" in res.output and "Traceback" not in res.output


def test_namespace_option_and_env_fallback(env, tmp_path, monkeypatch):
    run("import", rows_file(tmp_path), "--namespace", "proj")
    assert stats("--namespace", "proj")["cases"] == 3
    assert stats()["cases"] == 0
    monkeypatch.setenv("MEMENTO_NAMESPACE", "proj")
    assert stats()["cases"] == 3
    res = run("namespaces")
    assert res.exit_code == 0 and "proj" in res.output


def test_prune_and_dedup(env, tmp_path):
    run("import", rows_file(tmp_path))
    res = run("prune", "--max-cases", "1", "--dry-run")
    assert res.exit_code == 0, res.output
    assert "3 → 1" in res.output and stats()["cases"] == 3
    assert run("prune", "--max-cases", "2").exit_code == 0
    assert stats()["by_label"] == {"positive": 2}
    assert run("prune").exit_code == 2
    res = run("dedup", "--dry-run", "--threshold", "0.99")
    assert res.exit_code == 0 and "would remove 0 cases" in res.output


def test_missing_or_corrupt_bank_is_a_clear_error(env, tmp_path):
    res = run("stats", "--bank", tmp_path / "nope")
    assert res.exit_code == 2
    assert str(tmp_path / "nope") in res.output
    assert not (tmp_path / "nope").exists()
    run("import", rows_file(tmp_path))
    (env / "chroma.sqlite3").write_bytes(b"garbage" * 100)
    res = subprocess.run(
        [sys.executable, "-c", "from memory.cli import app; app()", "stats", "--bank", str(env)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert str(env) in " ".join(res.stderr.split()) and "re-import" in res.stderr


def test_import_of_missing_file_fails_cleanly(env, tmp_path):
    res = run("import", tmp_path / "absent.jsonl")
    assert res.exit_code == 2 and "absent.jsonl" in res.output


def test_module_import_stays_light():
    code = "import sys, memory.cli; print(sorted(m for m in ('chromadb', 'torch', 'numpy', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_import_caps_answers_like_a_run_does(env, tmp_path, monkeypatch):
    """An imported case is shown to the planner like a run's: the same size caps apply."""
    from memory.bank import CaseBank
    from memory.embeddings import load_embedder

    f = tmp_path / "ours.jsonl"
    f.write_text(json.dumps({"question": "How long is the answer?", "answer": "x" * 500, "reward": 1.0}) + "\n")
    monkeypatch.setenv("MEMENTO_CASE_ANSWER_CHARS", "nope")
    res = run("import", f)
    assert res.exit_code == 2 and "MEMENTO_CASE_ANSWER_CHARS must be a whole number" in res.output
    assert not env.exists() or stats()["cases"] == 0  # refused before anything was written
    monkeypatch.setenv("MEMENTO_CASE_ANSWER_CHARS", "100")
    res = run("import", f)
    assert res.exit_code == 0, res.output
    (case,) = list(CaseBank(env, embedder=load_embedder("hash")).iter_cases())
    assert case.answer.startswith("x" * 50) and len(case.answer) < 200 and "ours.jsonl line 1" in case.answer


def test_memento_memory_runs_the_bank_commands_alone_with_the_same_help(env, tmp_path):
    """`memento memory …` skips the agent's and the evals' command modules, and reads `.env` the same."""
    (tmp_path / ".env").write_text(f"MEMENTO_BANK_PATH={tmp_path / 'from-dotenv'}\n")
    environ = {k: v for k, v in os.environ.items() if k != "MEMENTO_BANK_PATH"}
    lean = (
        "import atexit, sys\n"
        "atexit.register(lambda: print(sorted(m for m in ('graph.cli', 'evals.cli', 'memory.policy.cli') "
        "if m in sys.modules), file=sys.stderr))\n"
        "sys.argv = ['memento', 'memory', 'stats', '--json']\n"
        "from graph.entry import main\n"
        "main()\n"
    )
    out = subprocess.run([sys.executable, "-c", lean], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env=environ)  # fmt: skip
    assert out.stderr.strip().splitlines()[-1] == "[]"
    assert "from-dotenv" in out.stderr and "no case bank" in out.stderr  # the .env's bank was the one asked for

    full = "import sys\nfrom graph.cli import app\napp(sys.argv[1:], prog_name='memento')\n"
    alone = "import sys\nsys.argv[0] = 'memento'\nfrom graph.entry import main\nmain()\n"
    help_env = {**environ, "COLUMNS": "100"}
    for args in (["memory", "--help"], ["memory", "search", "--help"]):
        a, b = (
            subprocess.run(
                [sys.executable, "-c", code, *args],
                capture_output=True,
                text=True,
                timeout=120,
                cwd=tmp_path,
                env=help_env,
            )
            for code in (full, alone)
        )
        assert a.returncode == b.returncode == 0 and a.stdout == b.stdout and "Usage: memento memory" in b.stdout
