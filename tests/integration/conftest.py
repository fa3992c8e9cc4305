"""Fixtures for running the real graph against the scripted model server."""

from __future__ import annotations

import os
import uuid

import pytest

from graph.context import Context

POSTGRES_URL = os.environ.get("MEMENTO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def agent_env(tmp_path, llm_server, monkeypatch):
    """Environment a subprocess (CLI, dev server) needs to reach the scripted server and tmp stores."""
    # Only the math server: the graph tests exercise the tool loop, not every server's start-up.
    servers = tmp_path / "servers.json"
    servers.write_text('{"mcpServers": {"math": {"command": "python", "args": ["-m", "mcp_servers.math"]}}}')
    env = {
        "MEMENTO_MCP_CONFIG": str(servers),
        "OPENAI_API_KEY": "test-key",
        "OPENAI_BASE_URL": llm_server.url,
        "MEMENTO_PLANNER_MODEL": "planner",
        "MEMENTO_EXECUTOR_MODEL": "executor",
        "MEMENTO_JUDGE_MODEL": "judge",
        "MEMENTO_BANK_PATH": str(tmp_path / "bank"),
        "MEMENTO_EXPERIENCE_PATH": str(tmp_path / "experience.sqlite"),
        "MEMENTO_POLICY_PATH": str(tmp_path / "policy.pt"),
        "MEMENTO_CHECKPOINT_URL": str(tmp_path / "checkpoints.sqlite"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def ctx(agent_env, llm_server) -> Context:
    """A Context for in-process runs (tools: the built-in math server)."""
    return Context(base_url=llm_server.url)


@pytest.fixture
def thread_id() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"
