"""`code` MCP server: run Python and shell commands in a sandboxed per-session workspace.

Each MCP session gets its own workspace, so one agent run keeps its files between calls while runs
stay apart. A call may name a workspace (``workspace``): the first session to name it owns it, and
any other session naming it is refused; a workspace is removed once its session has ended or after
``MEMENTO_CODE_IDLE_S`` idle. How strongly commands are isolated depends on what the OS allows
here; the ``sandbox_info`` tool says exactly (see `mcp_servers.sandbox`). Configuration
(environment): ``MEMENTO_CODE_WORKSPACE_ROOT``, ``MEMENTO_CODE_SANDBOX``
(auto|namespaces|userns|rlimits), ``MEMENTO_CODE_MEMORY_MB``, ``MEMENTO_CODE_NPROC``,
``MEMENTO_CODE_FILE_SIZE_MB``, ``MEMENTO_CODE_DISK_MB``, ``MEMENTO_CODE_MAX_FILES``,
``MEMENTO_CODE_IDLE_S``, ``MEMENTO_CODE_MAX_WORKSPACES``, ``MEMENTO_CODE_OUTPUT_CHARS``,
``MEMENTO_CODE_MAX_TIMEOUT_S``, ``MEMENTO_CODE_PYTHON``, ``MEMENTO_CODE_RO_PATHS``.
"""

from __future__ import annotations

import functools
import shutil
import threading
import uuid
import weakref
from typing import Any

import anyio
from mcp.server.fastmcp import Context, FastMCP

from mcp_servers.config import ServerConfig
from mcp_servers.sandbox import Sandbox, use_private_mounts
from mcp_servers.serving import run_server

mcp = FastMCP(
    "code",
    instructions=(
        "Run Python or shell commands in a sandboxed workspace folder (no network, limited CPU, "
        "memory and processes). Files persist between calls of the same session."
    ),
)
MAX_CODE_CHARS = 100_000


class CodeServerResources:
    """What this server process holds: its sandbox and the workspace owner of each MCP session.

    The server's composition root (like `mcp_servers.memory.MemoryServerResources`): the sandbox
    is probed on first use and its janitor started then; sessions map to an owner token and a
    default workspace under weak keys, so an ended session's entries go with it.
    """

    def __init__(self) -> None:
        """Probe nothing yet."""
        self._lock = threading.Lock()
        self._sandbox: Sandbox | None = None
        self._session_owners: weakref.WeakKeyDictionary[Any, tuple[str, str]] = weakref.WeakKeyDictionary()

    def sandbox(self) -> Sandbox:
        """The server's sandbox, probed on first use; its janitor removes idle workspaces."""
        with self._lock:
            if self._sandbox is None:
                box = Sandbox()
                box.start_janitor()
                self._sandbox = box
            return self._sandbox

    def workspace_id(self, workspace: str | None, ctx: Context | None) -> tuple[str, str | None]:
        """The workspace a call uses and the owner (session) it must belong to."""
        session = ctx.session if ctx is not None else None
        if session is None:
            return workspace or ServerConfig.from_env().code_workspace, None
        box = self.sandbox()
        with self._lock:
            if session not in self._session_owners:
                owner = uuid.uuid4().hex
                self._session_owners[session] = (owner, "session-" + uuid.uuid4().hex[:16])
                # When the session object goes, so does everything it owned (at the next sweep).
                weakref.finalize(session, box.forget_owner, owner)
            owner, own = self._session_owners[session]
        return workspace or own, owner


# This module is the server process's entry point; its tools share this one owner.
resources = CodeServerResources()


def sandbox() -> Sandbox:
    """The server's sandbox."""
    return resources.sandbox()


def _check_code(text: str, what: str) -> None:
    if not text or not text.strip():
        raise ValueError(f"{what} is empty")
    if len(text) > MAX_CODE_CHARS:
        raise ValueError(f"{what} is {len(text)} characters, over the {MAX_CODE_CHARS} limit")
    if "\x00" in text:
        raise ValueError(f"{what} contains a NUL byte")


async def _run(argv: list[str], workspace: str | None, timeout_s: float, ctx: Context | None) -> dict[str, Any]:
    box = await anyio.to_thread.run_sync(sandbox)
    ws, owner = resources.workspace_id(workspace, ctx)
    result = await anyio.to_thread.run_sync(lambda: box.run(argv, ws, timeout_s, owner=owner))
    return {"workspace": ws, **result.to_dict()}


async def _files(method: str, workspace: str | None, ctx: Context | None, *args: Any) -> dict:
    box = await anyio.to_thread.run_sync(sandbox)
    ws, owner = resources.workspace_id(workspace, ctx)
    result = await anyio.to_thread.run_sync(functools.partial(getattr(box, method), ws, *args, owner=owner))
    return {"workspace": ws, **result}


@mcp.tool()
async def run_python(
    code: str, timeout_s: float = 10.0, workspace: str | None = None, *, ctx: Context
) -> dict[str, Any]:
    """Run a Python program in the workspace and return its exit code, stdout and stderr.

    The program runs as ``python -c <code>`` with the workspace as working directory; print what
    you need to see. numpy, sympy and the standard library are available; the network is not.

    Args:
        code: The Python source.
        timeout_s: Wall-clock limit in seconds (the whole program is killed after it).
        workspace: Workspace id to run in; default: this session's own workspace. A name no
            session uses yet becomes this session's; another session's is refused.
        ctx: Injected by FastMCP; its session picks the default workspace.

    """
    _check_code(code, "code")
    return await _run([sandbox().python, "-c", code], workspace, timeout_s, ctx)


@mcp.tool()
async def run_shell(
    command: str, timeout_s: float = 10.0, workspace: str | None = None, *, ctx: Context
) -> dict[str, Any]:
    """Run a shell command line (bash, or sh when bash is absent) in the workspace.

    Args:
        command: The command line.
        timeout_s: Wall-clock limit in seconds (every process it started is killed after it).
        workspace: Workspace id to run in; default: this session's own workspace. A name no
            session uses yet becomes this session's; another session's is refused.
        ctx: Injected by FastMCP; its session picks the default workspace.

    """
    _check_code(command, "command")
    shell = shutil.which("bash", path="/usr/bin:/bin") or "/bin/sh"
    return await _run([shell, "-c", command], workspace, timeout_s, ctx)


@mcp.tool()
async def list_files(path: str = ".", workspace: str | None = None, *, ctx: Context) -> dict[str, Any]:
    """List the files under a folder of the workspace (recursive, at most 500 entries).

    Args:
        path: Folder relative to the workspace root.
        workspace: Workspace id; default: this session's own workspace.
        ctx: Injected by FastMCP; its session picks the default workspace.

    """
    return await _files("list_files", workspace, ctx, path)


@mcp.tool()
async def read_file(path: str, workspace: str | None = None, *, ctx: Context) -> dict[str, Any]:
    """Read a text file of the workspace (at most 100,000 characters).

    Args:
        path: File path relative to the workspace root.
        workspace: Workspace id; default: this session's own workspace.
        ctx: Injected by FastMCP; its session picks the default workspace.

    """
    return await _files("read_file", workspace, ctx, path)


@mcp.tool()
async def write_file(path: str, content: str, workspace: str | None = None, *, ctx: Context) -> dict[str, Any]:
    """Write a text file in the workspace, creating parent folders; replaces an existing file.

    Args:
        path: File path relative to the workspace root.
        content: The text to write (UTF-8).
        workspace: Workspace id; default: this session's own workspace.
        ctx: Injected by FastMCP; its session picks the default workspace.

    """
    return await _files("write_file", workspace, ctx, path, content)


@mcp.tool()
async def sandbox_info() -> dict[str, Any]:
    """How commands are isolated on this machine: level, network, filesystem, limits, caveats."""
    box = await anyio.to_thread.run_sync(sandbox)
    return box.info()


if __name__ == "__main__":
    # Before any thread exists: workspaces become size-limited tmpfs mounts private to this server.
    use_private_mounts()
    run_server(mcp)
