"""`crawl` MCP server: fetch a web page as markdown, compressed to what matters for a question.

Fetching and HTML-to-markdown conversion are crawl4ai's. By default its HTTP strategy
(``AsyncHTTPCrawlerStrategy``) fetches the page: no browser, tens of milliseconds a page. Pages that
need JavaScript can go through a real browser instead (``MEMENTO_CRAWL_BROWSER``):

- ``managed``: crawl4ai launches a local Chromium; ``MEMENTO_CRAWL_BROWSER_PATH`` names the
  binary (default Debian's ``/usr/lib/chromium/chromium``; Playwright's own browser cannot be
  downloaded here). crawl4ai reads the path from ``chromium.path`` in its base directory, which
  this server writes.
- ``cdp``: connect to a running browser at ``MEMENTO_CRAWL_CDP_URL`` (e.g. ``http://127.0.0.1:9222``).

Every fetch passes the egress guard (`mcp_servers.netguard`): only http(s), and no private,
loopback or link-local targets, redirects included, unless ``MEMENTO_CRAWL_ALLOW_PRIVATE=1`` or
``MEMENTO_CRAWL_ALLOWLIST`` says otherwise. Responses are capped at ``MEMENTO_CRAWL_MAX_BYTES``
(default 5 MB) and crawls at ``MEMENTO_CRAWL_TIMEOUT`` seconds (default 20).

Long pages are cut down to ``max_tokens`` with query-aware compression (`mcp_servers.compress`):
BM25 by default, BM25 fused with MiniLM embeddings when ``MEMENTO_CRAWL_RERANK=minilm``.

crawl4ai writes a cache folder on import; ``CRAWL4_AI_BASE_DIRECTORY`` (default: a folder in the
system temp directory) keeps it out of the home directory.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Must be set before crawl4ai is imported: it creates its folders at import time. An empty value
# (a config passing through an unset variable) would make it write into the working directory.
if not os.environ.get("CRAWL4_AI_BASE_DIRECTORY"):
    os.environ["CRAWL4_AI_BASE_DIRECTORY"] = str(Path(tempfile.gettempdir()) / f"memento-crawl4ai-{os.getuid()}")
# Its advertising banner is noise in a tool server's log.
os.environ.setdefault("CRAWL4AI_NO_CLOUD_NOTICE", "1")

import aiohttp
import anyio
from mcp.server.fastmcp import FastMCP

from mcp_servers.compress import approx_tokens, compress
from mcp_servers.netguard import (
    BlockedURLError,
    EgressPolicy,
    GuardedResolver,
    redirect_guard,
)
from mcp_servers.serving import run_server

DEFAULT_BROWSER_PATH = "/usr/lib/chromium/chromium"
# Content that is neither navigation nor page furniture; the query-aware compression does the rest.
EXCLUDED_TAGS = ["nav", "footer", "aside", "script", "style", "noscript", "form"]

mcp = FastMCP("crawl")


class ResponseTooLargeError(ValueError):
    """The response body exceeded the configured byte limit."""


@dataclass(frozen=True)
class CrawlSettings:
    """How the server fetches pages; read from the environment.

    Attributes:
        policy: The egress policy.
        max_bytes: Largest response body accepted.
        timeout_s: Time limit for one crawl, redirects and conversion included.
        browser: ``""`` (HTTP only), ``"managed"`` or ``"cdp"``.
        browser_path: Chromium binary for ``managed``.
        cdp_url: Browser endpoint for ``cdp``.
        rerank: ``"bm25"`` or ``"minilm"`` (hybrid BM25 + embeddings).

    """

    policy: EgressPolicy = field(default_factory=EgressPolicy)
    max_bytes: int = 5_000_000
    timeout_s: float = 20.0
    browser: str = ""
    browser_path: str = DEFAULT_BROWSER_PATH
    cdp_url: str = ""
    rerank: str = "bm25"

    @classmethod
    def from_env(cls) -> CrawlSettings:
        """Read the ``MEMENTO_CRAWL_*`` variables.

        Raises:
            ValueError: A variable has an invalid value.

        """
        env = os.environ
        browser = env.get("MEMENTO_CRAWL_BROWSER", "").strip().lower()
        if browser in {"", "0", "none", "http", "false"}:
            browser = ""
        if browser not in {"", "managed", "cdp"}:
            raise ValueError(f"MEMENTO_CRAWL_BROWSER must be empty, 'managed' or 'cdp', not {browser!r}")
        rerank = (env.get("MEMENTO_CRAWL_RERANK") or "bm25").strip().lower()
        if rerank not in {"bm25", "minilm"}:
            raise ValueError(f"MEMENTO_CRAWL_RERANK must be 'bm25' or 'minilm', not {rerank!r}")
        cdp_url = env.get("MEMENTO_CRAWL_CDP_URL", "")
        if browser == "cdp" and not cdp_url:
            raise ValueError("MEMENTO_CRAWL_BROWSER=cdp needs MEMENTO_CRAWL_CDP_URL")
        return cls(
            policy=EgressPolicy.from_env(),
            max_bytes=int(env.get("MEMENTO_CRAWL_MAX_BYTES") or 5_000_000),
            timeout_s=float(env.get("MEMENTO_CRAWL_TIMEOUT") or 20),
            browser=browser,
            browser_path=env.get("MEMENTO_CRAWL_BROWSER_PATH") or DEFAULT_BROWSER_PATH,
            cdp_url=cdp_url,
            rerank=rerank,
        )


def _capped_response_class(max_bytes: int) -> type[aiohttp.ClientResponse]:
    """An aiohttp response class whose ``read()`` stops at ``max_bytes`` instead of buffering all."""

    class CappedResponse(aiohttp.ClientResponse):
        async def read(self) -> bytes:
            if self._body is not None:
                return await super().read()
            declared = self.content_length
            try:
                if declared is not None and declared > max_bytes:
                    raise ResponseTooLargeError(
                        f"refused: {self.url} declares {declared} bytes, over the {max_bytes}-byte limit (MEMENTO_CRAWL_MAX_BYTES)"
                    )
                body = bytearray()
                # Chunked or lying servers are caught while streaming, before the memory is spent.
                async for chunk in self.content.iter_chunked(64 * 1024):
                    body.extend(chunk)
                    if len(body) > max_bytes:
                        raise ResponseTooLargeError(
                            f"refused: {self.url} sent more than {max_bytes} bytes (MEMENTO_CRAWL_MAX_BYTES)"
                        )
            except BaseException:
                self.close()
                raise
            self._body = bytes(body)
            # What the base class does after reading: wait until the connection is released.
            protocol = self._connection and self._connection.protocol
            if protocol is None or not protocol.upgraded:
                await self._wait_released()
            return self._body

    return CappedResponse


def _http_strategy(settings: CrawlSettings):
    """crawl4ai's HTTP strategy, on an aiohttp session that enforces the egress policy and size cap."""
    from crawl4ai import HTTPCrawlerConfig
    from crawl4ai.async_crawler_strategy import AsyncHTTPCrawlerStrategy

    class GuardedHTTPCrawlerStrategy(AsyncHTTPCrawlerStrategy):
        """Same fetching and decoding as crawl4ai's, through a guarded session."""

        async def start(self) -> None:
            if not self._session:  # type: ignore[has-type]  # crawl4ai sets it untyped in __init__
                self._session = aiohttp.ClientSession(
                    headers=dict(self._BASE_HEADERS),
                    # The resolver checks every address of every host, redirect hops included, and
                    # aiohttp dials exactly the addresses it returned.
                    connector=aiohttp.TCPConnector(resolver=GuardedResolver(settings.policy), limit=8),
                    timeout=aiohttp.ClientTimeout(total=settings.timeout_s),
                    trace_configs=[redirect_guard(settings.policy)],
                    response_class=_capped_response_class(settings.max_bytes),
                )

    downloads = Path(os.environ["CRAWL4_AI_BASE_DIRECTORY"]) / "downloads"
    return GuardedHTTPCrawlerStrategy(browser_config=HTTPCrawlerConfig(downloads_path=str(downloads)))


def _browser_config(settings: CrawlSettings):
    from crawl4ai import BrowserConfig

    if settings.browser == "cdp":
        return BrowserConfig(browser_mode="custom", cdp_url=settings.cdp_url, headless=True, verbose=False)
    if not Path(settings.browser_path).exists():
        raise RuntimeError(
            f"MEMENTO_CRAWL_BROWSER=managed but no browser at {settings.browser_path} "
            "(install Debian's chromium or set MEMENTO_CRAWL_BROWSER_PATH)"
        )
    # crawl4ai asks Playwright for its browser unless this file names one.
    home = Path(os.environ["CRAWL4_AI_BASE_DIRECTORY"]) / ".crawl4ai"
    home.mkdir(parents=True, exist_ok=True)
    (home / "chromium.path").write_text(settings.browser_path)
    return BrowserConfig(use_managed_browser=True, headless=True, verbose=False)


def _browser_route_guard(settings: CrawlSettings):
    """A crawl4ai hook that aborts every browser request (navigations, redirects, subresources) the policy forbids."""

    async def on_page_context_created(page, context, **_: Any):
        async def route(route_obj, request):
            try:
                await settings.policy.check_url(request.url)
            except BlockedURLError:
                await route_obj.abort("blockedbyclient")
                return
            await route_obj.continue_()

        await context.route("**/*", route)
        return page

    return on_page_context_created


async def fetch_markdown(url: str, settings: CrawlSettings) -> tuple[str, str, str]:
    """Crawl one page.

    Args:
        url: The page.
        settings: Fetch settings.

    Returns:
        The final URL (after redirects), the page title and the page as markdown.

    Raises:
        BlockedURLError: The URL, or a redirect, targets something the policy refuses.
        ResponseTooLargeError: The page is over the size limit.
        RuntimeError: The fetch failed (HTTP error, timeout, unreachable host).

    """
    from crawl4ai import (
        AsyncWebCrawler,
        BrowserConfig,
        CacheMode,
        CrawlerRunConfig,
        DefaultMarkdownGenerator,
    )

    await settings.policy.check_url(url)
    failures: list[BaseException] = []

    async def record_error(error: BaseException, *_: Any, **__: Any) -> None:
        failures.append(error)

    if settings.browser:
        browser_config = _browser_config(settings)
        crawler = AsyncWebCrawler(config=browser_config)
        crawler.crawler_strategy.set_hook("on_page_context_created", _browser_route_guard(settings))
    else:
        strategy = _http_strategy(settings)
        strategy.set_hook("on_error", record_error)
        crawler = AsyncWebCrawler(crawler_strategy=strategy, config=BrowserConfig(verbose=False))

    run_config = CrawlerRunConfig(
        cache_mode=CacheMode.BYPASS,
        excluded_tags=EXCLUDED_TAGS,
        word_count_threshold=1,
        page_timeout=int(settings.timeout_s * 1000),
        markdown_generator=DefaultMarkdownGenerator(options={"body_width": 0}),
        verbose=False,
    )
    # crawl4ai logs through its own console; over stdio, stdout is the protocol channel.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            with anyio.fail_after(settings.timeout_s + 5):
                async with crawler:
                    result = await crawler.arun(url, config=run_config)
        except TimeoutError:
            raise RuntimeError(
                f"crawl of {url} timed out after {settings.timeout_s:g} s (MEMENTO_CRAWL_TIMEOUT)"
            ) from None
    for failure in failures:
        if isinstance(failure, BlockedURLError | ResponseTooLargeError):
            raise failure
    if not result.success:
        # The strategy's own exception says it in one line; crawl4ai's message adds a code listing.
        reason = str(failures[0]) if failures else (result.error_message or "unknown error")
        raise RuntimeError(f"crawl of {url} failed: {reason}")
    final_url = result.redirected_url or url
    # The browser follows redirects itself; its route guard blocks forbidden hops, this catches the rest.
    await settings.policy.check_url(final_url)
    html_size = len((result.html or "").encode())
    if html_size > settings.max_bytes:
        raise ResponseTooLargeError(f"refused: {url} is {html_size} bytes, over the {settings.max_bytes}-byte limit")
    markdown = result.markdown.raw_markdown if result.markdown is not None else ""
    title = (result.metadata or {}).get("title") or ""
    return final_url, title, markdown.strip()


class CrawlServerResources:
    """What this server process loads once: the MiniLM embedder that reranks a page's sections.

    The server's composition root (like `mcp_servers.memory.MemoryServerResources`); the model
    loads on the first fetch that reranks, and concurrent first fetches load it once.
    """

    def __init__(self) -> None:
        """Load nothing yet."""
        self._lock = threading.Lock()
        self._embedder: Any = None

    def embedder(self) -> Any:
        """The reranking embedder (all-MiniLM-L6-v2), loaded on first use."""
        with self._lock:
            if self._embedder is None:
                from memory.embeddings import load_embedder

                self._embedder = load_embedder("minilm")
            return self._embedder


# This module is the server process's entry point; its tools share this one owner.
resources = CrawlServerResources()


@mcp.tool()
async def fetch_page(url: str, query: str = "", max_tokens: int = 2000) -> str:
    """Fetch a web page and return it as markdown, keeping the parts relevant to ``query``.

    Args:
        url: An http(s) URL of a public web page.
        query: What you are looking for on the page; long pages are cut down to the sections that
            match it (empty keeps the beginning of the page).
        max_tokens: Rough size limit of the returned markdown in tokens (about 4 characters each).

    """
    if max_tokens < 50:
        raise ValueError("max_tokens must be at least 50")
    settings = CrawlSettings.from_env()
    final_url, title, markdown = await fetch_markdown(url, settings)
    if not markdown:
        return f"URL: {final_url}\nTitle: {title}\n\n(the page has no readable text)"
    total = approx_tokens(markdown)
    embedder = None
    if settings.rerank == "minilm" and query.strip():
        # Loaded off the event loop: the first load takes seconds, and other sessions keep being served.
        embedder = await anyio.to_thread.run_sync(resources.embedder)
    body = await anyio.to_thread.run_sync(lambda: compress(markdown, query, max_tokens=max_tokens, embedder=embedder))
    header = f"URL: {final_url}\nTitle: {title}"
    if body != markdown:
        how = f"kept the parts most relevant to {query!r}" if query.strip() else "kept the beginning"
        header += f"\nNote: page is ~{total} tokens; {how} (~{approx_tokens(body)} tokens); […] marks cuts"
    return f"{header}\n\n{body}"


if __name__ == "__main__":
    run_server(mcp)
