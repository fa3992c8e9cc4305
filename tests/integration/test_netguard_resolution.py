"""The egress guard against real name resolution and a real server on loopback (moved from the unit tests: they use sockets)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aiohttp
import pytest

from mcp_servers.netguard import BlockedURLError, EgressPolicy, GuardedResolver, redirect_guard


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "only http and https"),
        ("ftp://example.com/x", "only http and https"),
        ("javascript:alert(1)", "only http and https"),
        ("example.com/page", "without a scheme"),
        ("http:///nohost", "no host"),
        ("http://127.0.0.1:8080/admin", "127.0.0.1 is loopback"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is link-local"),
        ("http://[::1]/", "::1 is loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://0.0.0.0:80/", "unspecified"),
        ("http://localhost/", "host localhost resolves to"),
        ("http://2130706433/", "resolves to 127.0.0.1"),  # decimal spelling of 127.0.0.1
        ("http://127.1/", "resolves to 127.0.0.1"),  # short spelling
        ("http://host.invalid/", "cannot resolve host"),
        ("http://[not-an-ip/", "malformed URL"),
    ],
)
async def test_refuses_urls_by_default(url, message):
    with pytest.raises(BlockedURLError, match="refused") as info:
        await EgressPolicy().check_url(url)
    assert message in str(info.value)


@pytest.mark.anyio
async def test_allowlist_and_allow_private_open_exactly_what_they_name():
    allow_one = EgressPolicy.from_env({"MEMENTO_CRAWL_ALLOWLIST": "127.0.0.2"})
    assert await allow_one.check_url("http://127.0.0.2:9/") == ["127.0.0.2"]
    with pytest.raises(BlockedURLError):
        await allow_one.check_url("http://127.0.0.1:9/")
    by_name = EgressPolicy.from_env({"MEMENTO_CRAWL_ALLOWLIST": "localhost"})
    assert "127.0.0.1" in await by_name.check_url("http://localhost:9/")
    everything = EgressPolicy.from_env({"MEMENTO_CRAWL_ALLOW_PRIVATE": "1"})
    assert await everything.check_url("http://169.254.169.254/") == ["169.254.169.254"]
    with pytest.raises(BlockedURLError, match="only http and https"):
        await everything.check_url("file:///etc/passwd")  # schemes stay refused


class _Redirector(BaseHTTPRequestHandler):
    target = ""

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/ok":
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
            return
        self.send_response(302)
        self.send_header("Location", self.target if self.path == "/away" else "/ok")
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("target", "message"),
    [("http://127.0.0.1:{port}/ok", "127.0.0.1 is loopback"), ("http://localhost:{port}/ok", "localhost resolves to")],
)
async def test_an_aiohttp_session_with_the_guard_refuses_redirects_to_private_targets(target, message):
    server = ThreadingHTTPServer(("127.0.0.2", 0), _Redirector)
    port = server.server_address[1]
    _Redirector.target = target.format(port=port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    policy = EgressPolicy.from_env({"MEMENTO_CRAWL_ALLOWLIST": "127.0.0.2"})
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=GuardedResolver(policy)), trace_configs=[redirect_guard(policy)]
        ) as session:
            async with session.get(f"http://127.0.0.2:{port}/home") as response:  # same-host redirect: fine
                assert await response.text() == "ok"
            with pytest.raises(BlockedURLError, match=message):
                await session.get(f"http://127.0.0.2:{port}/away")
    finally:
        server.shutdown()
        server.server_close()
