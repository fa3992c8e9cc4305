"""The `crawl` MCP server over a real stdio MCP session, crawling pages from a local HTTP server.

The page server listens on 127.0.0.2 and only that address is allowlisted, so 127.0.0.1 stays a
forbidden loopback target: a redirect from the allowed server to 127.0.0.1 must be refused.
"""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.tools import load_mcp_tools

from tests.fakes.mcp_helpers import call

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PAGE_HOST = "127.0.0.2"
MAX_BYTES = 100_000

HOME_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Widget Co</title></head><body>
<nav><a href="/">Home</a> <a href="/careers">Careers</a> NAVIGATION-LINKS</nav>
<h1>Widget Co</h1>
<p>We build widgets in Zürich — naïve café prices, since 1901.</p>
<h2>Pricing</h2>
<p>The <strong>Pro plan</strong> costs 42 dollars per month. See the <a href="/plans">plan details</a>.</p>
<ul><li>Unlimited widgets</li><li>Priority support</li></ul>
<table><tr><th>Plan</th><th>Price</th></tr><tr><td>Free</td><td>0</td></tr><tr><td>Pro</td><td>42</td></tr></table>
<h2>Install</h2>
<pre><code>pip install widgets</code></pre>
<footer>FOOTER-COPYRIGHT Widget Co</footer>
</body></html>"""

TOPICS = ["gardening", "weather", "football", "cooking", "astronomy", "sailing", "chess", "poetry"]
LONG_PAGE = (
    "<html><head><title>Almanac</title></head><body><h1>The Almanac</h1>"
    + "".join(
        f"<h2>About {t}</h2>"
        + "".join(f"<p>Paragraph {i} on {t}: {t} lore and more {t} trivia for readers.</p>" for i in range(12))
        for t in TOPICS[:4]
    )
    + "<h2>Lighthouse keeper</h2><p>The lighthouse keeper of Skerry Point is Ada Quill, appointed in 1887.</p>"
    + "".join(
        f"<h2>About {t}</h2>"
        + "".join(f"<p>Paragraph {i} on {t}: {t} lore and more {t} trivia for readers.</p>" for i in range(12))
        for t in TOPICS[4:]
    )
    + "</body></html>"
)


class PageHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    loopback_port = 0

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/":
            self._send(200, HOME_PAGE)
        elif self.path == "/long":
            self._send(200, LONG_PAGE)
        elif self.path == "/redirect-to-loopback":
            self._redirect(f"http://127.0.0.1:{self.loopback_port}/secret")
        elif self.path == "/redirect-to-localhost":
            self._redirect(f"http://localhost:{self.loopback_port}/secret")
        elif self.path == "/redirect-to-file":
            self._redirect("file:///etc/passwd")
        elif self.path == "/redirect-home":
            self._redirect("/")
        elif self.path == "/big":
            self._send(200, "<html><body><p>" + "x" * (MAX_BYTES * 3) + "</p></body></html>")
        elif self.path == "/big-unannounced":
            # No Content-Length: only counting while streaming can stop this one.
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html><body><p>" + b"y" * (MAX_BYTES * 3) + b"</p></body></html>")
        else:
            self._send(404, "<html><body>not found</body></html>")

    def _redirect(self, location):
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class SecretHandler(BaseHTTPRequestHandler):
    hits = 0

    def log_message(self, *args):
        pass

    def do_GET(self):
        type(self).hits += 1
        data = b"<html><body>INTERNAL-SECRET</body></html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _serve(server):
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def servers():
    secret = _serve(ThreadingHTTPServer(("127.0.0.1", 0), SecretHandler))
    PageHandler.loopback_port = secret.server_address[1]
    pages = _serve(ThreadingHTTPServer((PAGE_HOST, 0), PageHandler))
    yield f"http://{PAGE_HOST}:{pages.server_address[1]}", secret.server_address[1]
    for server in (pages, secret):
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def crawl_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("crawl4ai")


def client(crawl_dir, **env) -> MultiServerMCPClient:
    return MultiServerMCPClient(
        {
            "crawl": {
                "command": sys.executable,
                "args": ["-m", "mcp_servers.crawl"],
                "transport": "stdio",
                "cwd": str(REPO),
                "env": {
                    "CRAWL4_AI_BASE_DIRECTORY": str(crawl_dir),
                    "MEMENTO_CRAWL_ALLOWLIST": PAGE_HOST,
                    "MEMENTO_CRAWL_MAX_BYTES": str(MAX_BYTES),
                    "MEMENTO_CRAWL_TIMEOUT": "10",
                    **env,
                },
            }
        }
    )


@pytest.mark.anyio
async def test_crawls_a_page_to_clean_markdown_and_compresses_long_pages(servers, crawl_dir):
    base, _ = servers
    async with client(crawl_dir).session("crawl") as session:
        tools = {t.name: t for t in await load_mcp_tools(session)}
        status, text = await call(tools["fetch_page"], url=f"{base}/")
        assert status == "success", text
        assert text.startswith(f"URL: {base}/\nTitle: Widget Co")
        assert "# Widget Co" in text and "## Pricing" in text and "## Install" in text
        assert "Zürich — naïve café" in text  # decoded as UTF-8
        assert "**Pro plan** costs 42 dollars per month" in text
        assert "[plan details](" in text
        assert "Unlimited widgets" in text and "Priority support" in text
        assert "| Pro" in text and "---" in text  # the table is a markdown table
        assert "```" in text and "pip install widgets" in text
        assert "NAVIGATION-LINKS" not in text and "FOOTER-COPYRIGHT" not in text
        assert "Note:" not in text  # short enough: not compressed

        status, text = await call(
            tools["fetch_page"],
            url=f"{base}/long",
            query="Who is the lighthouse keeper of Skerry Point?",
            max_tokens=300,
        )
        assert status == "success", text
        assert "Ada Quill, appointed in 1887" in text
        assert "kept the parts most relevant" in text and "[…]" in text
        body = text.split("\n\n", 1)[1]
        assert len(body) <= 300 * 4
        assert "sailing" not in body and "football" not in body

        # Redirects within the allowed host are followed and the final URL reported.
        status, text = await call(tools["fetch_page"], url=f"{base}/redirect-home")
        assert status == "success" and text.startswith(f"URL: {base}/\n")


@pytest.mark.anyio
async def test_refuses_private_targets_redirects_and_oversized_pages_and_keeps_serving(servers, crawl_dir):
    base, loopback_port = servers
    refused = {
        "file:///etc/passwd": "only http and https",
        f"http://127.0.0.1:{loopback_port}/secret": "127.0.0.1 is loopback",
        "http://169.254.169.254/latest/meta-data/": "169.254.169.254 is link-local",
        "http://[::1]/": "::1 is loopback",
        f"http://localhost:{loopback_port}/secret": "resolves to",
        f"{base}/redirect-to-loopback": "127.0.0.1 is loopback",
        f"{base}/redirect-to-localhost": "localhost resolves to",
        f"{base}/redirect-to-file": "only http and https",
        f"{base}/big": f"over the {MAX_BYTES}-byte limit",
        f"{base}/big-unannounced": f"more than {MAX_BYTES} bytes",
    }
    async with client(crawl_dir).session("crawl") as session:
        tools = {t.name: t for t in await load_mcp_tools(session)}
        for url, reason in refused.items():
            status, text = await call(tools["fetch_page"], url=url)
            assert status == "error", (url, text)
            assert reason in text, (url, text)
            assert "INTERNAL-SECRET" not in text
            # The server is still there and still crawls allowed pages.
            status, text = await call(tools["fetch_page"], url=f"{base}/")
            assert status == "success" and "## Pricing" in text, text

        status, text = await call(tools["fetch_page"], url=f"{base}/missing")
        assert status == "error" and "404" in text
    assert SecretHandler.hits == 0  # nothing ever reached the loopback-only server


@pytest.mark.anyio
async def test_browser_mode_is_configurable_and_explains_a_missing_browser(servers, crawl_dir, monkeypatch):
    monkeypatch.setenv("CRAWL4_AI_BASE_DIRECTORY", str(crawl_dir))
    from mcp_servers.crawl import CrawlSettings, fetch_markdown

    monkeypatch.setenv("MEMENTO_CRAWL_BROWSER", "firefox")
    with pytest.raises(ValueError, match="MEMENTO_CRAWL_BROWSER must be"):
        CrawlSettings.from_env()
    monkeypatch.setenv("MEMENTO_CRAWL_BROWSER", "cdp")
    with pytest.raises(ValueError, match="needs MEMENTO_CRAWL_CDP_URL"):
        CrawlSettings.from_env()

    monkeypatch.setenv("MEMENTO_CRAWL_BROWSER", "managed")
    monkeypatch.setenv("MEMENTO_CRAWL_BROWSER_PATH", str(crawl_dir / "no-such-chromium"))
    monkeypatch.setenv("MEMENTO_CRAWL_ALLOWLIST", PAGE_HOST)
    settings = CrawlSettings.from_env()
    assert settings.browser == "managed"
    with pytest.raises(RuntimeError, match=r"no browser at .*no-such-chromium"):
        await fetch_markdown(f"{servers[0]}/", settings)
    # The egress guard runs before any browser is involved.
    with pytest.raises(ValueError, match="is link-local"):
        await fetch_markdown("http://169.254.169.254/", settings)
