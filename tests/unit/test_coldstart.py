"""Start-up work off the hot path: lazy CLI imports, background warm-up, a TTY-only spinner."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from tests.fakes.python_run import run_python

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "chromadb", "matplotlib", "langgraph", "numpy", "onnxruntime")


def test_help_imports_nothing_heavy(tmp_path):
    code = (
        "import sys\n"
        "from graph.cli import app\n"
        "try:\n    app(['--help'], prog_name='memento')\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = run_python(code, tmp_path)
    assert "HEAVY []" in out, out[-500:]


def test_building_the_graph_imports_neither_openai_nor_chromadb(tmp_path):
    # `memento ask` shows its cases once the graph runs its first node: the OpenAI client (about
    # half a second to import) is needed only by the first model call, Chroma by the bank.
    code = (
        "import sys\n"
        "from graph.builder import compile_graph\n"
        "from graph.context import Context\n"
        "from nodes.resources import Resources\n"
        "compile_graph(resources=Resources(Context(mcp_config='')))\n"
        "print('LOADED', sorted(m for m in ('openai', 'langchain_openai', 'chromadb', 'torch') if m in sys.modules))\n"
    )
    out = run_python(code, tmp_path, timeout=120)
    assert "LOADED []" in out, out[-500:]


def test_piped_output_is_widened_without_importing_typers_help_module(tmp_path):
    code = (
        "import os, sys\n"
        "from graph.terminal import widen_when_piped\n"
        "print('WIDENED', widen_when_piped(), os.environ['COLUMNS'], os.environ['TERMINAL_WIDTH'])\n"
        "print('RICH_UTILS', 'typer.rich_utils' in sys.modules)\n"
        "from typer import rich_utils\n"
        "print('HELP_WIDTH', rich_utils.MAX_WIDTH)\n"
    )
    out = run_python(code, tmp_path, unset=("COLUMNS", "TERMINAL_WIDTH"))
    assert "WIDENED True 4096 160" in out, out
    assert "RICH_UTILS False" in out and "HELP_WIDTH 160" in out, out


def test_warm_resources_opens_bank_and_caches_question(tmp_path, monkeypatch, embedder):
    from graph.context import Context
    from nodes.resources import Resources

    monkeypatch.delenv("MEMENTO_EMBEDDER", raising=False)
    question = "Which river flows through the warm-up test city?"
    assert question not in embedder._cache
    ctx = Context(bank_path=str(tmp_path / "bank"), mcp_config="")
    resources = Resources(ctx, embedder=embedder)
    resources.warm(question).join(120)
    assert question in embedder._cache
    assert (tmp_path / "bank" / "chroma.sqlite3").exists()
    assert resources.bank(ctx).embedder.get() is embedder  # the bank the first retrieval uses


def test_warm_resources_skips_when_memory_is_off(tmp_path):
    from graph.context import Context
    from nodes.resources import Resources

    Resources(Context(bank_path=str(tmp_path / "bank"), memory_mode="none")).warm("q").join(30)
    assert not (tmp_path / "bank").exists()


def test_spinner_only_on_a_terminal(monkeypatch):
    from graph import cli

    piped = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=piped, force_terminal=False))
    spinner = cli._Spinner()
    spinner.start("loading…")
    spinner.stop()
    assert piped.getvalue() == ""

    tty = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=tty, force_terminal=True))
    spinner = cli._Spinner()
    spinner.start("loading…")
    spinner.stop()
    assert "loading…" in tty.getvalue()
