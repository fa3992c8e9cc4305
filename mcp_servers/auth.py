"""Bearer tokens for MCP servers over streamable HTTP, and who the caller is.

A server that opts in (`run_server(..., auth=True)`) refuses HTTP requests without a valid
``Authorization: Bearer <token>`` header, on loopback too: any local process or a web page doing
DNS rebinding can reach a loopback port. Tokens come from ``MEMENTO_MCP_TOKEN`` (one client, named
by ``MEMENTO_MCP_CLIENT``) or a token file (``--token-file`` / ``MEMENTO_MCP_TOKEN_FILE``) with one
``client:token`` per line, so each client has its own name. ``--no-auth`` (or
``MEMENTO_MCP_NO_AUTH=1``) turns the check off, on a loopback address only.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
from pathlib import Path
from typing import Any

from mcp_servers.config import ServerConfig

MIN_TOKEN_CHARS = 16
CLIENT_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Where the middleware leaves the authenticated client's name for the tools to read.
SCOPE_KEY = "memento_client"


class AuthConfigError(ValueError):
    """The server cannot start safely with this configuration; the message says what to set."""


def is_loopback(host: str) -> bool:
    """Whether a listen address only accepts connections from this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name may resolve anywhere


def _client_name(name: str, origin: str) -> str:
    if not CLIENT_NAME.match(name):
        raise AuthConfigError(
            f"{origin}: client name {name!r} must be 1-64 characters of letters, digits, '.', '_', '-'"
        )
    return name


def _check_token(token: str, origin: str) -> str:
    if len(token) < MIN_TOKEN_CHARS:
        raise AuthConfigError(
            f"{origin}: a token needs at least {MIN_TOKEN_CHARS} characters "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return token


def load_tokens(token_file: str | None = None) -> dict[str, str]:
    """Tokens and the client each one names: ``{token: client}``.

    Raises:
        AuthConfigError: A token is too short, a name malformed, the file unreadable or empty.

    """
    tokens: dict[str, str] = {}
    config = ServerConfig.from_env()
    single = config.mcp_token
    if single:
        name = config.mcp_client or "http"
        tokens[_check_token(single, "MEMENTO_MCP_TOKEN")] = _client_name(name, "MEMENTO_MCP_CLIENT")
    path = token_file or config.mcp_token_file
    if path:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise AuthConfigError(f"cannot read the token file {path}: {exc.strerror or exc}") from None
        found = 0
        for n, raw in enumerate(lines, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, token = line.partition(":")
            if not sep:
                name, token = config.mcp_client or "http", line
            origin = f"{path}:{n}"
            tokens[_check_token(token.strip(), origin)] = _client_name(name.strip(), origin)
            found += 1
        if not found:
            raise AuthConfigError(f"the token file {path} holds no token (one `client:token` per line)")
    return tokens


def check_http_auth(host: str, tokens: dict[str, str], no_auth: bool) -> None:
    """Refuse configurations that would serve without authentication where that is unsafe.

    Raises:
        AuthConfigError: No token on a non-loopback address, or none on loopback without ``--no-auth``.

    """
    if tokens:
        return
    if not is_loopback(host):
        raise AuthConfigError(
            f"refusing to serve on {host} without a bearer token: set MEMENTO_MCP_TOKEN or "
            "--token-file (--no-auth is only allowed on a loopback address)"
        )
    if not no_auth:
        raise AuthConfigError(
            "HTTP needs a bearer token: set MEMENTO_MCP_TOKEN (or --token-file with `client:token` "
            "lines), or pass --no-auth to serve this loopback address without one"
        )


class BearerAuth:
    """ASGI middleware: a request without a known bearer token gets 401 and never reaches MCP."""

    def __init__(self, app: Any, tokens: dict[str, str]):
        """Wrap ``app``; ``tokens`` maps each accepted token to its client's name."""
        self.app = app
        self._tokens = [(t.encode(), c) for t, c in tokens.items()]

    def _client(self, header: bytes) -> str | None:
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer" or not given.strip():
            return None
        given = given.strip()
        match = None
        for token, client in self._tokens:  # compare with every token: timing says nothing
            if hmac.compare_digest(token, given):
                match = client
        return match

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Check HTTP requests; pass lifespan and other events through."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = next((v for k, v in scope.get("headers", []) if k == b"authorization"), b"")
        client = self._client(header)
        if client is None:
            body = json.dumps({"error": "unauthorized: send Authorization: Bearer <token>"}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"www-authenticate", b'Bearer realm="memento"'),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app({**scope, SCOPE_KEY: client}, receive, send)


def current_client(request: Any) -> str:
    """The calling client's name: from its token over HTTP, else ``MEMENTO_MCP_CLIENT`` or the transport."""
    scope = getattr(request, "scope", None) or {}
    if scope.get(SCOPE_KEY):
        return str(scope[SCOPE_KEY])
    return ServerConfig.from_env().mcp_client or ("http" if request is not None else "stdio")
