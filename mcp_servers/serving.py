"""Shared entry point: every server runs as ``python -m mcp_servers.<name>`` over stdio or HTTP."""

from __future__ import annotations

import argparse

from mcp.server.fastmcp import FastMCP


def run_server(mcp: FastMCP, argv: list[str] | None = None) -> None:
    """Serve over stdio (default) or streamable HTTP (``--transport http --port N``)."""
    parser = argparse.ArgumentParser(prog=f"python -m mcp_servers.{mcp.name}", description=f"The {mcp.name} MCP server.")
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    if args.transport == "http":
        mcp.settings.host = args.host
        mcp.settings.port = args.port
        mcp.run(transport="streamable-http")
    else:
        mcp.run(transport="stdio")
