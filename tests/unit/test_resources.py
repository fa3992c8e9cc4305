"""One composition root: each graph owns its clients, nothing is cached per process, settings are read in one place."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from graph.builder import compile_graph
from graph.context import Context
from memory.embeddings import HashEmbedder
from nodes.resources import Resources

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ("graph", "nodes", "memory", "mcp_servers", "evals")


def _ctx(tmp_path: Path, **kw) -> Context:
    settings = {
        "bank_path": str(tmp_path / "bank"),
        "experience_path": str(tmp_path / "exp.sqlite"),
        "base_url": "http://127.0.0.1:9/v1",
        "mcp_config": "",
    }
    return Context(**{**settings, **kw})


def test_one_object_per_setting_within_an_owner_and_none_shared_between_owners(tmp_path):
    ctx = _ctx(tmp_path)
    first, second = Resources(ctx, embedder=HashEmbedder(8)), Resources(ctx, embedder=HashEmbedder(8))
    assert first.bank(ctx) is first.bank(ctx) and first.bank(ctx) is not second.bank(ctx)
    assert first.experience(ctx) is first.experience(ctx) and first.experience(ctx) is not second.experience(ctx)
    assert first.chat_model(ctx, "planner") is first.chat_model(ctx, "planner")
    assert first.chat_model(ctx, "planner") is not second.chat_model(ctx, "planner")
    # A run with other settings (Studio's form) gets its own client, the entry point's stays.
    other = _ctx(tmp_path, planner_model="other", namespace="other")
    assert first.chat_model(other, "planner") is not first.chat_model(ctx, "planner")
    assert first.bank(other).namespace == "other" and first.bank(ctx).namespace == "default"
    bank = first.bank(ctx)
    first.close()
    assert first.bank(ctx) is not bank  # closed: the next use builds a new one


def test_toolboxes_belong_to_their_event_loop_and_aclose_ends_them(tmp_path):
    servers = tmp_path / "servers.json"
    servers.write_text('{"mcpServers": {}}')
    ctx = _ctx(tmp_path, mcp_config=str(servers))
    resources = Resources(ctx)

    async def in_loop():
        box = resources.toolbox(ctx)
        assert box is resources.toolbox(ctx)
        await resources.aclose()
        assert resources.toolbox(ctx) is not box
        await resources.aclose()
        return box

    assert asyncio.run(in_loop()) is not asyncio.run(in_loop())
    assert Resources(_ctx(tmp_path)).toolbox(_ctx(tmp_path)) is None  # no config, no tools


def test_each_compiled_graph_binds_the_resources_it_was_given(tmp_path):
    resources = Resources(_ctx(tmp_path))
    graph = compile_graph(resources=resources)
    assert set(graph.nodes) >= {"retrieve_cases", "plan", "execute", "tools", "judge", "write_back", "feedback"}
    assert compile_graph() is not compile_graph()


def _sources():
    for package in RUNTIME:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8")


def test_no_process_wide_cache_in_the_runtime():
    # Server processes keep one handle each in their own entry module (the code sandbox, libc, sympy).
    allowed = {"mcp_servers/code.py", "mcp_servers/sandbox.py", "mcp_servers/math.py"}
    found = [name for name, text in _sources() if "lru_cache" in text and name not in allowed]
    assert found == []
    for name, text in _sources():
        assert not re.search(r"^_(cache|warned|toolboxes|instances)\b", text, re.M), name


def test_memento_settings_are_read_from_the_environment_in_one_place_each():
    readers = {
        "graph/context.py",  # Context: MEMENTO_<FIELD> for every field
        "memory/config.py",  # MemoryConfig.from_env
        "memory/limits.py",  # CaseLimits.from_env
        "mcp_servers/config.py",  # ServerConfig.from_env (every server's scattered settings)
        "mcp_servers/sandbox.py",  # Limits.from_env (MEMENTO_CODE_* limits)
        "mcp_servers/netguard.py",  # EgressPolicy.from_env
        "mcp_servers/crawl.py",  # CrawlSettings.from_env
        "evals/benchmarks/overhead.py",  # its --postgres default
    }
    pattern = re.compile(r"(os\.environ\.get|os\.getenv|os\.environ\[)\(?\s*f?[\"']MEMENTO_")
    offenders = [name for name, text in _sources() if pattern.search(text) and name not in readers]
    assert offenders == []


def test_close_waits_for_a_running_retrain(tmp_path, monkeypatch):
    """A refit killed at interpreter exit aborts the process (exit 134) and is lost: close joins it."""
    import threading
    import time

    ctx = _ctx(tmp_path, memory_mode="learned", policy_path=str(tmp_path / "policy.pt"))
    resources = Resources(ctx, embedder=HashEmbedder(8))
    trainer = resources.trainer(ctx, resources.bank(ctx))
    finished = threading.Event()

    def slow_retrain():
        time.sleep(0.5)
        finished.set()

    monkeypatch.setattr(trainer, "retrain", slow_retrain)
    trainer._thread = threading.Thread(target=trainer._run, daemon=True)
    trainer._thread.start()
    resources.close()
    assert finished.is_set()
