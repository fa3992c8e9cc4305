"""Our servers through a third-party client: the MCP Inspector CLI (npm, Node), stdio and HTTP.

The inspector is installed into ``tests/.npm`` by ``scripts/install_inspector.sh`` (run here when
missing); the tests skip only when node/npm are absent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.fakes.mcp_helpers import serve_http

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PREFIX = REPO / "tests" / ".npm"
BIN = PREFIX / "node_modules" / ".bin" / "mcp-inspector"


@pytest.fixture(scope="module")
def inspector():
    if not (shutil.which("node") and shutil.which("npm") and shutil.which("npx")):
        pytest.skip("node/npm not installed: the MCP Inspector CLI cannot run")
    if not BIN.exists():
        done = subprocess.run(
            [str(REPO / "scripts" / "install_inspector.sh")],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0 and BIN.exists(), f"installing the MCP Inspector failed:\n{done.stderr[-2000:]}"

    def run(*args: str) -> dict:
        done = subprocess.run(
            ["npx", "--no-install", "@modelcontextprotocol/inspector", "--cli", *args],
            cwd=PREFIX,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, (
            f"inspector failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )
        return json.loads(done.stdout)

    return run


def _text(result: dict) -> str:
    return "".join(block.get("text", "") for block in result["content"])


def _call(tool: str, **args: str) -> list[str]:
    pairs = [f"{k}={v}" for k, v in args.items()]
    return ["--method", "tools/call", "--tool-name", tool, "--tool-arg", *pairs]


# Each inspector run starts Node and a fresh server (seconds each): few runs, each checking much.


def test_math_server_over_stdio(inspector):
    server = [sys.executable, "-m", "mcp_servers.math"]
    tools = {t["name"]: t for t in inspector(*server, "--method", "tools/list")["tools"]}
    assert {"evaluate", "solve", "simplify", "differentiate", "integrate", "add"} <= set(tools)
    assert tools["evaluate"]["inputSchema"]["required"] == ["expression"]
    result = inspector(*server, *_call("evaluate", expression="2^10"))
    assert not result["isError"]
    assert _text(result) == "exact: 1024\nnumeric: 1024.00000000000"


def test_code_server_keeps_secrets_from_a_third_party_client(inspector):
    canary = "sk-secret-canary-" + uuid.uuid4().hex[:8]
    root = tempfile.mkdtemp(prefix="memento-code-inspector-")
    os.chmod(root, 0o755)
    env = ["-e", f"OPENAI_API_KEY={canary}", "-e", f"MEMENTO_CODE_WORKSPACE_ROOT={root}"]
    try:
        server = [*env, sys.executable, "-m", "mcp_servers.code"]
        result = inspector(*server, *_call("run_shell", command='echo "key=[$OPENAI_API_KEY]"; env'))
        out = result["structuredContent"]
        assert out["exit_code"] == 0 and "key=[]" in out["stdout"]
        assert canary not in out["stdout"]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_math_server_over_streamable_http(inspector):
    with serve_http("math") as url:
        result = inspector(url, *_call("solve", equation="x^2 = 9"))
        assert _text(result) == "[-3, 3]"
