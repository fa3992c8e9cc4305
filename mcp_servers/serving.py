"""Shared entry point: every server runs as ``python -m mcp_servers.<name>`` over stdio or HTTP."""

from __future__ import annotations

import argparse
import logging
import os

from mcp.server.fastmcp import FastMCP


def run_server(mcp: FastMCP, argv: list[str] | None = None) -> None:
    """Serve over stdio (default) or streamable HTTP (``--transport http --port N``).

    The log level (``--log-level`` or ``MEMENTO_MCP_LOG_LEVEL``, default WARNING) keeps FastMCP
    from logging every request on stderr, which the client relays.
    """
    parser = argparse.ArgumentParser(
        prog=f"python -m mcp_servers.{mcp.name}", description=f"The {mcp.name} MCP server."
    )
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--log-level",
        default=os.environ.get("MEMENTO_MCP_LOG_LEVEL", "WARNING").upper(),
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
    )
    args = parser.parse_args(argv)
    mcp.settings.log_level = args.log_level
    logging.getLogger().setLevel(args.log_level)
    logging.getLogger("mcp").setLevel(args.log_level)
    if args.transport == "http":
        mcp.settings.host = args.host
        mcp.settings.port = args.port
        mcp.run(transport="streamable-http")
    else:
        mcp.run(transport="stdio")
