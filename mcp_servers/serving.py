"""Shared entry point: every server runs as ``python -m mcp_servers.<name>`` over stdio or HTTP."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from mcp.server.fastmcp import FastMCP

from mcp_servers.config import ServerConfig


def run_server(mcp: FastMCP, argv: list[str] | None = None, *, auth: bool = False) -> None:
    """Serve over stdio (default) or streamable HTTP (``--transport http --port N``).

    The log level (``--log-level`` or ``MEMENTO_MCP_LOG_LEVEL``, default WARNING) keeps FastMCP
    from logging every request on stderr, which the client relays. With ``auth``, HTTP requires a
    bearer token (see `mcp_servers.auth`) and a bad configuration stops the start with one line.
    """
    parser = argparse.ArgumentParser(
        prog=f"python -m mcp_servers.{mcp.name}", description=f"The {mcp.name} MCP server."
    )
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--log-level",
        default=ServerConfig.from_env().mcp_log_level,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
    )
    if auth:
        parser.add_argument("--token-file", help="File of `client:token` lines (else MEMENTO_MCP_TOKEN).")
        parser.add_argument(
            "--no-auth",
            action="store_true",
            default=ServerConfig.from_env().mcp_no_auth,
            help="Serve HTTP without a token (loopback addresses only).",
        )
        parser.add_argument("--tls-cert", help="PEM certificate: serve HTTPS (with --tls-key).")
        parser.add_argument("--tls-key", help="PEM private key of --tls-cert.")
    args = parser.parse_args(argv)
    mcp.settings.log_level = args.log_level
    logging.getLogger().setLevel(args.log_level)
    logging.getLogger("mcp").setLevel(args.log_level)
    if args.transport == "http" and auth:
        _serve_http_with_auth(mcp, args)
    elif args.transport == "http":
        mcp.settings.host = args.host
        mcp.settings.port = args.port
        mcp.run(transport="streamable-http")
    else:
        mcp.run(transport="stdio")


def _serve_http_with_auth(mcp: FastMCP, args: argparse.Namespace) -> None:
    import uvicorn
    from mcp.server.transport_security import TransportSecuritySettings

    from mcp_servers.auth import (
        AuthConfigError,
        BearerAuth,
        check_http_auth,
        is_loopback,
        load_tokens,
    )

    try:
        tokens = load_tokens(args.token_file)
        check_http_auth(args.host, tokens, args.no_auth)
        tls = _tls_files(args.tls_cert, args.tls_key)
    except AuthConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(2) from None
    if not is_loopback(args.host):
        # FastMCP only lets loopback Host headers through; off loopback the token is the guard.
        mcp.settings.transport_security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
        if not tls:
            # Not refused: a TLS-terminating proxy in front is a common, sound setup.
            sys.stderr.write(
                f"warning: serving on {args.host} over plain HTTP: bearer tokens cross the network in clear "
                "text; give --tls-cert and --tls-key, or put a TLS-terminating proxy in front\n"
            )
    app: Any = mcp.streamable_http_app()
    if tokens:
        app = BearerAuth(app, tokens)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level.lower(),
        ssl_certfile=tls.get("ssl_certfile"),
        ssl_keyfile=tls.get("ssl_keyfile"),
    )


def _tls_files(cert: str | None, key: str | None) -> dict[str, str]:
    """Uvicorn's TLS arguments for a certificate and key given together (none: plain HTTP).

    Raises:
        AuthConfigError: Only one of them given, or a file that cannot be read.

    """
    from pathlib import Path

    from mcp_servers.auth import AuthConfigError

    if not cert and not key:
        return {}
    if not (cert and key):
        raise AuthConfigError("HTTPS needs both --tls-cert and --tls-key")
    for name, path in (("--tls-cert", cert), ("--tls-key", key)):
        try:
            Path(path).read_bytes()
        except OSError as exc:
            raise AuthConfigError(f"{name} {path}: {exc.strerror or exc}") from None
    return {"ssl_certfile": cert, "ssl_keyfile": key}
