"""The `code` MCP server over a real stdio session: it works, and every attack is contained.

After each attack the same session runs a benign command, proving the server keeps serving.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.tools import load_mcp_tools

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

CANARY = "sk-secret-canary-" + uuid.uuid4().hex[:8]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def anyio_backend():
    # Module scope, so one server session serves every test of this module.
    return "asyncio"


@pytest.fixture(scope="module")
def workspace_root():
    # Not tmp_path: pytest's folders are 0700, which the sandbox's unprivileged uid cannot traverse.
    root = tempfile.mkdtemp(prefix="memento-code-test-")
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
async def s(workspace_root):
    """One live session to the code server for the whole module (server start-up is ~1-2 s)."""
    async with code_session(workspace_root) as session:
        yield session


class Session:
    """Tools of one live MCP session, called like the agent calls them."""

    def __init__(self, tools):
        self.tools = {t.name: t for t in tools}

    async def call(self, name: str, **args):
        msg = await self.tools[name].ainvoke(
            {"type": "tool_call", "id": "1", "name": name, "args": args}
        )
        text = "".join(block["text"] for block in msg.content if block.get("type") == "text")
        if msg.status == "error":
            return {"error": text}
        return (msg.artifact or {}).get("structured_content") or json.loads(text)

    async def healthy(self):
        out = await self.call("run_python", code="print(6 * 7)", timeout_s=5)
        assert out["exit_code"] == 0 and out["stdout"].strip() == "42", out


@asynccontextmanager
async def code_session(workspace_root, **env):
    client = MultiServerMCPClient(
        {
            "code": {
                "transport": "stdio",
                "command": sys.executable,
                "args": ["-m", "mcp_servers.code"],
                "cwd": str(REPO),
                "env": {
                    "OPENAI_API_KEY": CANARY,
                    "LANGSMITH_API_KEY": CANARY,
                    "MEMENTO_CODE_WORKSPACE_ROOT": workspace_root,
                    "MEMENTO_CODE_NPROC": "32",
                    "MEMENTO_CODE_MEMORY_MB": "512",
                    **env,
                },
            }
        }
    )
    async with client.session("code") as s:
        yield Session(await load_mcp_tools(s))


async def test_python_shell_and_files_share_a_workspace(s, workspace_root):
    info = await s.call("sandbox_info")
    assert info["isolation"] in ("namespaces", "userns", "rlimits")
    assert await s.call("write_file", path="data/in.txt", content="3 4\n") == {
        "workspace": (ws := (await s.call("list_files"))["workspace"]),
        "path": "data/in.txt",
        "bytes": 4,
    }
    out = await s.call(
        "run_python",
        code="a, b = map(int, open('data/in.txt').read().split())\nopen('out.txt', 'w').write(str(a * b))\nprint('done')",
    )
    assert out["exit_code"] == 0 and out["stdout"] == "done\n" and out["workspace"] == ws
    shell = await s.call("run_shell", command="cat out.txt; echo; pwd; exit 3")
    assert shell["exit_code"] == 3 and shell["stdout"].splitlines() == [
        "12",
        str(Path(workspace_root).resolve() / ws),
    ]
    assert (await s.call("read_file", path="out.txt"))["content"] == "12"
    listed = {e["path"] for e in (await s.call("list_files"))["entries"]}
    assert {"data", "data/in.txt", "out.txt"} <= listed
    # A named workspace is shared across calls and separate from the session's own.
    await s.call("write_file", path="note.txt", content="shared", workspace="team-1")
    assert (await s.call("run_shell", command="cat note.txt", workspace="team-1"))[
        "stdout"
    ] == "shared"
    assert "error" in await s.call("read_file", path="note.txt")
    failing = await s.call("run_python", code="raise SystemExit('boom')")
    assert failing["exit_code"] == 1 and "boom" in failing["stderr"]


async def test_parent_secrets_never_reach_the_code(s, workspace_root):
    out = await s.call("run_python", code="import os; print(sorted(os.environ.items()))")
    assert CANARY not in out["stdout"]
    names = {k for k, _ in eval(out["stdout"])}  # the program printed a literal list
    assert names == {"PATH", "LANG", "HOME", "TMPDIR"}
    # Nor through /proc: the server's environment is out of reach.
    probe = "env; cat /proc/1/environ /proc/$PPID/environ; for p in /proc/[0-9]*; do cat $p/environ; done"
    shell = await s.call("run_shell", command=probe + " 2>/dev/null; true")
    assert CANARY not in shell["stdout"] + shell["stderr"]
    await s.healthy()


async def test_writes_outside_the_workspace_are_refused(s, workspace_root):
    escape = f"/tmp/escape-{uuid.uuid4().hex}"
    code = f"""
import os
for target in ['../../x', '../x', {escape!r}, '/x-{uuid.uuid4().hex[:6]}', {str(REPO / "escape.txt")!r}]:
    try:
        with open(target, 'w') as fh:
            fh.write('pwned')
        print('WROTE', target)
    except OSError as exc:
        print('refused', target, type(exc).__name__)
"""
    out = await s.call("run_python", code=code)
    assert "WROTE" not in out["stdout"] and out["stdout"].count("refused") == 5, out
    await s.healthy()
    for path in ("../../x", escape, "/etc/passwd", "a/../../x"):
        result = await s.call("write_file", path=path, content="pwned")
        assert "error" in result and (
            "outside the workspace" in result["error"] or "'..'" in result["error"]
        ), result
        await s.healthy()
    assert not os.path.exists(escape)
    assert not (Path(workspace_root).parent / "x").exists() and not (REPO / "escape.txt").exists()


async def test_symlinks_and_traversal_cannot_leave_the_workspace(s, workspace_root):
    made = await s.call(
        "run_shell", command="ln -s / rootlink && ln -s /etc/passwd pw && ln -s .. up && echo ok"
    )
    assert made["stdout"].strip() == "ok"
    for tool, args in [
        ("read_file", {"path": "pw"}),
        ("read_file", {"path": "rootlink/etc/passwd"}),
        ("read_file", {"path": "../../../../etc/passwd"}),
        ("read_file", {"path": "/etc/passwd"}),
        ("write_file", {"path": "rootlink/tmp/x", "content": "pwned"}),
        ("write_file", {"path": "up/evil.txt", "content": "pwned"}),
        ("list_files", {"path": "rootlink"}),
        ("list_files", {"path": ".."}),
    ]:
        result = await s.call(tool, **args)
        assert "error" in result, (tool, args, result)
        assert "root:" not in result["error"]
    assert not (Path(workspace_root) / "evil.txt").exists()
    # The listing shows the links themselves without following them.
    listed = {e["path"]: e["type"] for e in (await s.call("list_files"))["entries"]}
    assert listed["rootlink"] == "symlink" and listed["pw"] == "symlink"
    await s.healthy()


async def test_fork_bomb_is_contained(s, workspace_root):
    bomb = """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""
    out = await s.call("run_python", code=bomb, timeout_s=1.5)
    assert out["timed_out"] and out["killed_by"] == "SIGKILL"
    await s.healthy()
    counted = await s.call(
        "run_python",
        code="import os\nn = 0\ntry:\n    while n < 1000:\n        if os.fork() == 0:\n            import time; time.sleep(3); os._exit(0)\n        n += 1\nexcept OSError as e:\n    print('stopped at', n, e.errno)",
        timeout_s=5,
    )
    assert counted["stdout"].startswith("stopped at"), counted
    assert int(counted["stdout"].split()[2]) < 32
    await s.healthy()


async def test_memory_cpu_and_output_limits(s, workspace_root):
    big = await s.call("run_python", code="x = bytearray(10 * 1024**3)\nprint('allocated')")
    assert (
        big["exit_code"] != 0
        and "allocated" not in big["stdout"]
        and "MemoryError" in big["stderr"]
    )
    await s.healthy()
    loop = await s.call("run_python", code="while True:\n    pass", timeout_s=1)
    assert loop["timed_out"] and loop["exit_code"] is None and loop["duration_s"] < 10
    await s.healthy()
    sleeper = await s.call("run_shell", command="(sleep 60 &) ; sleep 60", timeout_s=1)
    assert sleeper["timed_out"]
    flood = await s.call("run_shell", command="yes flood | head -c 5000000")
    assert flood["truncated"] and len(flood["stdout"]) < 30_000
    await s.healthy()
    bad = await s.call("run_python", code="print(1)", timeout_s=10_000)
    assert "error" in bad and "timeout_s" in bad["error"]
    await s.healthy()


async def test_no_network_when_namespaces_are_available(s):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        info = await s.call("sandbox_info")
        if info["isolation"] == "rlimits":
            pytest.skip(f"no network namespace here: {info['notes']}")
        code = f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=1)\n    print('CONNECTED')\nexcept OSError as e:\n    print('blocked', e)"
        out = await s.call("run_python", code=code)
        assert "CONNECTED" not in out["stdout"] and "blocked" in out["stdout"]
        await s.healthy()
    finally:
        listener.close()
