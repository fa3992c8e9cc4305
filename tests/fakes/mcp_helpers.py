"""MCP test helpers: call a tool as a model would; start a server over streamable HTTP."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_http(
    module: str, env: dict[str, str] | None = None, timeout: float = 30.0, args: tuple[str, ...] = ()
) -> Iterator[str]:
    """Run ``python -m mcp_servers.<module> --transport http`` and yield its ``/mcp`` URL.

    Args:
        module: Server module name under ``mcp_servers``.
        env: The server's whole environment (default: this process's).
        timeout: Seconds the server gets to accept connections.
        args: More command-line arguments (``--tls-cert``/``--tls-key`` make the URL ``https``).
    """
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", f"mcp_servers.{module}", "--transport", "http", "--port", str(port), *args],
        cwd=REPO,
        env=env if env is not None else dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{module} server exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{module} server did not listen within {timeout:.0f}s") from None
                time.sleep(0.1)
        yield f"{'https' if '--tls-cert' in args else 'http'}://127.0.0.1:{port}/mcp"
    finally:
        proc.kill()  # a graceful uvicorn shutdown only adds seconds to a test
        proc.wait(timeout=10)
        proc.stderr.close()


async def call(tool, **args) -> tuple[str, str]:
    """Invoke a LangChain MCP tool as a model would (a tool call); returns ``(status, text)``."""
    message = await tool.ainvoke({"type": "tool_call", "id": "call-1", "name": tool.name, "args": args})
    content = message.content
    text = content if isinstance(content, str) else "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return message.status, text
