"""`code` MCP server: run Python and shell commands in a sandboxed per-run workspace.

Each MCP session gets its own workspace unless a tool call names one (``workspace``), so one agent
run keeps its files between calls while runs stay apart. How strongly commands are isolated
depends on what the OS allows here; the ``sandbox_info`` tool says exactly (see
`mcp_servers.sandbox`). Configuration (environment): ``MEMENTO_CODE_WORKSPACE_ROOT``,
``MEMENTO_CODE_SANDBOX`` (auto|namespaces|userns|rlimits), ``MEMENTO_CODE_MEMORY_MB``,
``MEMENTO_CODE_NPROC``, ``MEMENTO_CODE_FILE_SIZE_MB``, ``MEMENTO_CODE_OUTPUT_CHARS``,
``MEMENTO_CODE_MAX_TIMEOUT_S``, ``MEMENTO_CODE_PYTHON``.
"""

from __future__ import annotations

import functools
import os
import shutil
import uuid
import weakref
from typing import Any

import anyio
from mcp.server.fastmcp import Context, FastMCP

from mcp_servers.sandbox import Sandbox
from mcp_servers.serving import run_server

mcp = FastMCP(
    "code",
    instructions=(
        "Run Python or shell commands in a sandboxed workspace folder (no network, limited CPU, "
        "memory and processes). Files persist between calls of the same session."
    ),
)
MAX_CODE_CHARS = 100_000
_session_workspaces: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


@functools.lru_cache(maxsize=1)
def sandbox() -> Sandbox:
    """The process-wide sandbox, probed on first use."""
    return Sandbox()


def _workspace_id(workspace: str | None, ctx: Context | None) -> str:
    if workspace:
        return workspace
    session = ctx.session if ctx is not None else None
    if session is None:
        return os.environ.get("MEMENTO_CODE_WORKSPACE", "default")
    if session not in _session_workspaces:
        _session_workspaces[session] = "session-" + uuid.uuid4().hex[:16]
    return _session_workspaces[session]


def _check_code(text: str, what: str) -> None:
    if not text or not text.strip():
        raise ValueError(f"{what} is empty")
    if len(text) > MAX_CODE_CHARS:
        raise ValueError(f"{what} is {len(text)} characters, over the {MAX_CODE_CHARS} limit")
    if "\x00" in text:
        raise ValueError(f"{what} contains a NUL byte")


async def _run(
    argv: list[str], workspace: str | None, timeout_s: float, ctx: Context | None
) -> dict[str, Any]:
    box = await anyio.to_thread.run_sync(sandbox)
    ws = _workspace_id(workspace, ctx)
    result = await anyio.to_thread.run_sync(lambda: box.run(argv, ws, timeout_s))
    return {"workspace": ws, **result.to_dict()}


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
        workspace: Workspace id to run in; default: this session's own workspace.
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
        workspace: Workspace id to run in; default: this session's own workspace.
        ctx: Injected by FastMCP; its session picks the default workspace.

    """
    _check_code(command, "command")
    shell = shutil.which("bash", path="/usr/bin:/bin") or "/bin/sh"
    return await _run([shell, "-c", command], workspace, timeout_s, ctx)


@mcp.tool()
async def list_files(
    path: str = ".", workspace: str | None = None, *, ctx: Context
) -> dict[str, Any]:
    """List the files under a folder of the workspace (recursive, at most 500 entries).

    Args:
        path: Folder relative to the workspace root.
        workspace: Workspace id; default: this session's own workspace.
        ctx: Injected by FastMCP; its session picks the default workspace.

    """
    ws = _workspace_id(workspace, ctx)
    return {"workspace": ws, **sandbox().list_files(ws, path)}


@mcp.tool()
async def read_file(path: str, workspace: str | None = None, *, ctx: Context) -> dict[str, Any]:
    """Read a text file of the workspace (at most 100,000 characters).

    Args:
        path: File path relative to the workspace root.
        workspace: Workspace id; default: this session's own workspace.
        ctx: Injected by FastMCP; its session picks the default workspace.

    """
    ws = _workspace_id(workspace, ctx)
    return {"workspace": ws, **sandbox().read_file(ws, path)}


@mcp.tool()
async def write_file(
    path: str, content: str, workspace: str | None = None, *, ctx: Context
) -> dict[str, Any]:
    """Write a text file in the workspace, creating parent folders; replaces an existing file.

    Args:
        path: File path relative to the workspace root.
        content: The text to write (UTF-8).
        workspace: Workspace id; default: this session's own workspace.
        ctx: Injected by FastMCP; its session picks the default workspace.

    """
    ws = _workspace_id(workspace, ctx)
    return {"workspace": ws, **sandbox().write_file(ws, path, content)}


@mcp.tool()
async def sandbox_info() -> dict[str, Any]:
    """How commands are isolated on this machine: level, network, filesystem, limits, caveats."""
    box = await anyio.to_thread.run_sync(sandbox)
    return box.info()


if __name__ == "__main__":
    run_server(mcp)
