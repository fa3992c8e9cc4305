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
import time
import uuid
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import pytest
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.tools import load_mcp_tools

from tests.fakes.mcp_helpers import serve_http

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
        msg = await self.tools[name].ainvoke({"type": "tool_call", "id": "1", "name": name, "args": args})
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
    assert (await s.call("run_shell", command="cat note.txt", workspace="team-1"))["stdout"] == "shared"
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
        assert "error" in result and ("outside the workspace" in result["error"] or "'..'" in result["error"]), result
        await s.healthy()
    assert not os.path.exists(escape)
    assert not (Path(workspace_root).parent / "x").exists() and not (REPO / "escape.txt").exists()


async def test_symlinks_and_traversal_cannot_leave_the_workspace(s, workspace_root):
    made = await s.call("run_shell", command="ln -s / rootlink && ln -s /etc/passwd pw && ln -s .. up && echo ok")
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
    assert big["exit_code"] != 0 and "allocated" not in big["stdout"] and "MemoryError" in big["stderr"]
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


# --- issue 11: workspaces belong to sessions, uids never collide, the view is an allow-list ------


@asynccontextmanager
async def http_sessions(workspace_root, count: int, **env):
    """``count`` MCP sessions to ONE code server over streamable HTTP (one process, many sessions)."""
    server_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO),
        "OPENAI_API_KEY": CANARY,
        "MEMENTO_CODE_WORKSPACE_ROOT": workspace_root,
        "MEMENTO_CODE_NPROC": "32",
        "MEMENTO_CODE_MEMORY_MB": "512",
        **env,
    }
    with serve_http("code", env=server_env) as url:
        client = MultiServerMCPClient({"code": {"transport": "streamable_http", "url": url}})
        async with AsyncExitStack() as stack:
            sessions = [
                Session(await load_mcp_tools(await stack.enter_async_context(client.session("code"))))
                for _ in range(count)
            ]
            yield sessions


async def _cannot_touch(intruder: Session, victim_ws: str) -> None:
    for tool, args in [
        ("read_file", {"path": "secret.txt"}),
        ("list_files", {}),
        ("write_file", {"path": "planted.txt", "content": "x"}),
        ("run_shell", {"command": "cat secret.txt"}),
        ("run_python", {"code": "print(open('secret.txt').read())"}),
    ]:
        result = await intruder.call(tool, workspace=victim_ws, **args)
        assert "error" in result and "belongs to another session" in result["error"], (tool, result)
        assert "top-secret" not in json.dumps(result)


async def test_a_session_cannot_name_another_sessions_workspace_stdio(workspace_root):
    async with code_session(workspace_root) as alice, code_session(workspace_root) as bob:
        await alice.call("write_file", path="secret.txt", content="top-secret")
        alice_ws = (await alice.call("list_files"))["workspace"]
        await _cannot_touch(bob, alice_ws)
        # A named workspace belongs to the first session that names it.
        await alice.call("write_file", path="secret.txt", content="top-secret", workspace="team-a")
        await _cannot_touch(bob, "team-a")
        assert (await alice.call("read_file", path="secret.txt", workspace="team-a"))["content"] == "top-secret"
        assert not (Path(workspace_root) / alice_ws / "planted.txt").exists()
        await bob.healthy()


async def test_a_session_cannot_name_another_sessions_workspace_http():
    root = tempfile.mkdtemp(prefix="memento-code-http-")
    os.chmod(root, 0o755)
    try:
        async with http_sessions(root, 2) as (alice, bob):
            await alice.call("write_file", path="secret.txt", content="top-secret")
            alice_ws = (await alice.call("list_files"))["workspace"]
            assert (await bob.call("list_files"))["workspace"] != alice_ws
            await _cannot_touch(bob, alice_ws)
            assert (await alice.call("read_file", path="secret.txt"))["content"] == "top-secret"
            await bob.healthy()
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def test_workspace_uids_never_collide(s):
    info = await s.call("sandbox_info")
    if info["runs_as"] != "per-workspace unprivileged uid" or info["isolation"] == "userns":
        pytest.skip("commands keep the caller's uid here")
    # These two ids had the same crc32-derived uid (217892) before uids came from a registry.
    uids = {}
    for ws in ("wsx-235", "wsx-254", "wsx-3"):
        out = await s.call("run_shell", command="id -u; echo mine > mine.txt", workspace=ws)
        uids[ws] = int(out["stdout"].split()[0])
    assert len(set(uids.values())) == 3, uids
    assert all(uid >= 200_000 for uid in uids.values())


async def test_the_sandbox_sees_system_folders_and_its_workspace_only(s, workspace_root):
    info = await s.call("sandbox_info")
    if info["isolation"] == "rlimits":
        pytest.skip(f"no mount namespace here: {info['notes']}")
    # A readable (644) secret file next to the project, and another workspace with a file in it.
    project = Path(tempfile.mkdtemp(prefix="memento-project-"))
    os.chmod(project, 0o755)
    (project / ".env").write_text(f"OPENAI_API_KEY={CANARY}\n")
    os.chmod(project / ".env", 0o644)
    (project / ".memento").mkdir()
    (project / ".memento" / "checkpoints.sqlite").write_text("CHECKPOINT-ROWS")
    await s.call("write_file", path="theirs.txt", content="other workspace", workspace="other-ws")
    try:
        probe = (
            f"cat {project}/.env {project}/.memento/checkpoints.sqlite {REPO}/pyproject.toml; "
            f"ls {workspace_root}; ls {workspace_root}/other-ws; ls /root /home /var /opt /mnt /work/wt; "
            "ls /; echo x > /etc/x; echo x > /usr/x; python -c 'import numpy, sympy; print(\"libs ok\")'"
        )
        out = await s.call("run_shell", command=probe + " 2>&1; true")
        text = out["stdout"] + out["stderr"]
        assert CANARY not in text and "CHECKPOINT-ROWS" not in text and "[project]" not in text, text
        assert "theirs.txt" not in text, text
        assert "libs ok" in text, text  # the interpreter and its packages are there, read-only
        top = set(text.split("\n"))
        assert "home" not in top and "var" not in top and "opt" not in top, text
        assert "Read-only file system" in text
        # The workspace itself is writable, /dev/null works, and so does the shared-memory folder.
        ok = await s.call(
            "run_shell", command="echo ok > w.txt && cat w.txt && echo x > /dev/null && touch /dev/shm/x && echo shm"
        )
        assert ok["stdout"].split() == ["ok", "shm"], ok
        shadow = await s.call("run_shell", command="wc -c < /etc/shadow")
        assert shadow["stdout"].strip() in ("", "0"), shadow
    finally:
        shutil.rmtree(project, ignore_errors=True)
    await s.healthy()


async def test_disk_quota_per_workspace():
    root = tempfile.mkdtemp(prefix="memento-code-quota-")
    os.chmod(root, 0o755)
    try:
        async with code_session(root, MEMENTO_CODE_DISK_MB="20", MEMENTO_CODE_MAX_FILES="200") as s:
            info = await s.call("sandbox_info")
            assert "20 MB / 200 files per workspace" in info["disk_quota"]
            # 16 files of 4 MB: 64 MB wanted, 20 MB allowed.
            code = (
                "import os\nwritten = 0\nfor i in range(16):\n    try:\n"
                "        with open(f'f{i}.bin', 'wb') as fh:\n            fh.write(os.urandom(4 << 20))\n"
                "        written += 1\n    except OSError as exc:\n        print('refused', i, exc.errno)\n"
                "        break\nprint('written', written)"
            )
            out = await s.call("run_python", code=code, timeout_s=20)
            assert any("disk quota" in note for note in out["notes"]), out
            assert "refused" in out["stdout"] and int(out["stdout"].split()[-1]) <= 5, out
            used = await s.call("run_shell", command="du -sk . | cut -f1")
            assert int(used["stdout"]) <= 20 * 1024 + 4096, used  # the tmpfs is exact; checks may overshoot a little
            too_big = await s.call("write_file", path="more.txt", content="y" * (8 << 20))
            assert "error" in too_big and "quota" in too_big["error"], too_big
            many = await s.call(
                "run_shell", command="rm -f f*.bin; for i in $(seq 300); do : > n$i || break; done; ls | wc -l"
            )
            assert int(many["stdout"].split()[-1]) <= 220, many
            # Deleting files makes room again.
            again = await s.call("run_shell", command="rm -f n*; head -c 1000000 /dev/zero > ok.bin && echo fits")
            assert again["stdout"].strip() == "fits", again
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def test_idle_and_orphaned_workspaces_are_removed():
    root = tempfile.mkdtemp(prefix="memento-code-idle-")
    os.chmod(root, 0o755)
    try:
        # A session that ends leaves its workspace behind only until the next sweep.
        async with code_session(root) as gone:
            await gone.call("write_file", path="left.txt", content="x")
            orphan = (await gone.call("list_files"))["workspace"]
        assert (Path(root) / orphan).exists()
        async with code_session(root, MEMENTO_CODE_IDLE_S="1") as s:
            await s.call("write_file", path="a.txt", content="x")
            ws = (await s.call("list_files"))["workspace"]
            assert not (Path(root) / orphan).exists()
            # Idle for longer than MEMENTO_CODE_IDLE_S: the janitor removes it with no call needed.
            deadline = time.monotonic() + 10
            while (Path(root) / ws).exists() and time.monotonic() < deadline:
                await anyio.sleep(0.2)
            assert not (Path(root) / ws).exists()
            # The session carries on in a fresh, empty workspace.
            assert (await s.call("list_files"))["entries"] == []
            await s.healthy()
    finally:
        shutil.rmtree(root, ignore_errors=True)
