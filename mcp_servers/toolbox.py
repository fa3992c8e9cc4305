"""Client side of the tool ecosystem: load MCP tools from a servers config and keep sessions open.

``MultiServerMCPClient.get_tools()`` binds each tool to a *connection*, so every stdio call would
spawn a fresh server process (~600 ms). A `Toolbox` instead holds one live session per server
(opened by a long-lived owner task, so it can be used from any node's task) and reconnects once
when a server has crashed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool

logger = logging.getLogger(__name__)

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ToolConfigError(ValueError):
    """The servers config is missing or malformed."""


def _expand(value: str) -> str:
    """``${VAR}`` / ``${VAR:-default}`` from the parent environment (configs hold no secrets)."""
    return _ENV_REF.sub(lambda m: os.environ.get(m.group(1), m.group(2) or ""), value)


def load_connections(config_path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Read an ``mcpServers`` JSON file into langchain-mcp-adapters connection dicts.

    Args:
        config_path: Path of the JSON file. Relative paths resolve against the working directory.

    Returns:
        Server name to connection mapping.

    """
    path = Path(config_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ToolConfigError(f"MCP servers config not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise ToolConfigError(f"MCP servers config {path} is not valid JSON: {exc}") from exc
    servers = data.get("mcpServers", data.get("servers"))
    if not isinstance(servers, dict):
        raise ToolConfigError(f"MCP servers config {path} needs an object under 'mcpServers'")
    connections: dict[str, dict[str, Any]] = {}
    for name, spec in servers.items():
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", name):
            raise ToolConfigError(f"server name {name!r} in {path}: letters, digits, '_' or '-' only")
        if spec.get("disabled"):
            continue
        transport = spec.get("transport") or ("stdio" if "command" in spec else "streamable_http")
        if transport in ("http", "streamable-http"):
            transport = "streamable_http"
        if transport == "stdio":
            if "command" not in spec:
                raise ToolConfigError(f"stdio server {name!r} in {path} needs a 'command'")
            command = spec["command"]
            # "python" means the interpreter running the agent, so servers see the same packages.
            if command in ("python", "python3"):
                command = sys.executable
            env = {k: _expand(str(v)) for k, v in (spec.get("env") or {}).items()}
            # Servers get a minimal environment plus what the config names: never the agent's keys.
            base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH") if k in os.environ}
            connections[name] = {
                "transport": "stdio",
                "command": command,
                "args": [_expand(str(a)) for a in spec.get("args", [])],
                "env": {**base, **env},
                **({"cwd": spec["cwd"]} if spec.get("cwd") else {}),
            }
        elif transport in ("streamable_http", "sse"):
            if "url" not in spec:
                raise ToolConfigError(f"{transport} server {name!r} in {path} needs a 'url'")
            connections[name] = {
                "transport": transport,
                "url": _expand(spec["url"]),
                **(
                    {"headers": {k: _expand(str(v)) for k, v in spec["headers"].items()}} if spec.get("headers") else {}
                ),
            }
        else:
            raise ToolConfigError(f"server {name!r} in {path}: unknown transport {transport!r}")
    return connections


class _Server:
    """One server's live session, owned by a background task so any task may use it."""

    def __init__(self, client: Any, name: str):
        self.client = client
        self.name = name
        self.tools: list[BaseTool] = []
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._error: BaseException | None = None
        self._task: asyncio.Task | None = None

    async def start(self, timeout: float) -> None:
        from langchain_mcp_adapters.tools import load_mcp_tools

        async def owner() -> None:
            try:
                async with self.client.session(self.name) as session:
                    self.tools = await load_mcp_tools(session, server_name=self.name, tool_name_prefix=True)
                    self._ready.set()
                    await self._stop.wait()
            except BaseException as exc:
                self._error = exc
                self._ready.set()

        self._task = asyncio.create_task(owner(), name=f"mcp-session-{self.name}")
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            await self.close()
            raise RuntimeError(f"MCP server {self.name!r} did not start within {timeout:.0f}s") from None
        if self._error is not None:
            raise RuntimeError(f"MCP server {self.name!r} failed to start: {_describe(self._error)}") from self._error

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done() and self._error is None

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 5)
            except (TimeoutError, Exception):
                self._task.cancel()


def _describe(exc: BaseException) -> str:
    # anyio wraps failures in exception groups; the first leaf says what happened.
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


class Toolbox:
    """The tools of every configured server, one session per server, reconnecting after a crash."""

    def __init__(self, config_path: str, start_timeout: float = 30.0):
        """Create (sessions open on first use).

        Args:
            config_path: ``mcpServers`` JSON file; empty string means no tools.
            start_timeout: Seconds a server gets to start and list its tools.

        """
        from langchain_mcp_adapters.client import MultiServerMCPClient

        self.config_path = config_path
        self.connections = load_connections(config_path) if config_path else {}
        # load_connections builds the adapter's connection dicts; they are plain dicts to the type checker.
        self._client = MultiServerMCPClient(self.connections) if self.connections else None  # type: ignore[arg-type]
        self._servers: dict[str, _Server] = {}
        self._start_timeout = start_timeout
        # One lock per server: servers start in parallel, and one server never starts twice.
        self._locks = {name: asyncio.Lock() for name in self.connections}
        self.errors: dict[str, str] = {}

    async def _server(self, name: str) -> _Server:
        async with self._locks[name]:
            server = self._servers.get(name)
            if server is not None and server.alive:
                return server
            if server is not None:
                await server.close()
            server = _Server(self._client, name)
            await server.start(self._start_timeout)
            self._servers[name] = server
            return server

    async def tools(self) -> list[BaseTool]:
        """All tools of all servers that start; a server that fails is reported, not fatal."""
        started = await asyncio.gather(*(self._server(n) for n in self.connections), return_exceptions=True)
        result: list[BaseTool] = []
        for name, server in zip(self.connections, started, strict=True):
            if isinstance(server, BaseException):
                self.errors[name] = str(server)
                logger.warning("%s", server)
                continue
            self.errors.pop(name, None)
            result.extend(server.tools)
        return result

    async def call(self, name: str, args: dict[str, Any], call_id: str) -> ToolMessage:
        """Run one tool call; every failure becomes an error `ToolMessage` for the model.

        A server that died is restarted on the next call. A call that was in flight when its
        server died is reported, not repeated: it may have had side effects, so the model decides.
        """
        server_name = next((s for s in self.connections if name.startswith(f"{s}_")), None)
        if server_name is None:
            known = ", ".join(t.name for t in await self.tools()) or "none"
            return _error(call_id, name, f"unknown tool {name!r}; available tools: {known}")
        try:
            server = await self._server(server_name)
        except RuntimeError as exc:
            return _error(call_id, name, str(exc))
        tool = next((t for t in server.tools if t.name == name), None)
        if tool is None:
            known = ", ".join(t.name for t in server.tools)
            return _error(call_id, name, f"unknown tool {name!r}; {server_name} offers: {known}")
        try:
            msg = await tool.ainvoke({"type": "tool_call", "id": call_id, "name": name, "args": args})
        except Exception as exc:  # a crashed server or a transport error
            if not server.alive or _looks_like_connection_error(exc):
                logger.warning("MCP server %s failed during %s: %s", server_name, name, _describe(exc))
                await server.close()
                return _error(
                    call_id,
                    name,
                    f"the {server_name} server crashed during this call ({_describe(exc)}); it will be "
                    "restarted for the next call. Call again only if repeating it is safe.",
                )
            return _error(call_id, name, f"tool {name} failed: {_describe(exc)}")
        return _as_plain(msg, call_id, name)

    async def aclose(self) -> None:
        """Close every session (ends stdio server processes)."""
        for server in list(self._servers.values()):
            await server.close()
        self._servers.clear()


def _looks_like_connection_error(exc: BaseException) -> bool:
    text = _describe(exc).lower()
    return any(s in text for s in ("closed", "broken", "connection", "endofstream", "eof"))


def _error(call_id: str, name: str, text: str) -> ToolMessage:
    return ToolMessage(content=f"Error: {text}", tool_call_id=call_id, name=name, status="error")


def _as_plain(msg: Any, call_id: str, name: str) -> ToolMessage:
    """Flatten content blocks to text so state stays JSON-plain and any model can read it."""
    if not isinstance(msg, ToolMessage):
        return ToolMessage(content=str(msg), tool_call_id=call_id, name=name)
    content = msg.content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict):
                parts.append(block.get("text") or f"[{block.get('type', 'block')}]")
            else:
                parts.append(str(block))
        content = "\n".join(parts)
    return ToolMessage(content=str(content), tool_call_id=call_id, name=name, status=msg.status)
