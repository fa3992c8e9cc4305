"""`search` MCP server: web search through a configured backend, results as ``[{title, url, snippet}]``.

Backends (``MEMENTO_SEARCH_BACKEND`` picks one; unset, the first configured one in this order):

- ``searxng``: ``SEARXNG_URL`` (your instance; JSON output enabled) ->
  ``GET {url}/search?q=…&format=json``
- ``tavily``: ``TAVILY_API_KEY`` -> ``POST https://api.tavily.com/search`` (Bearer key)
- ``brave``: ``BRAVE_SEARCH_API_KEY`` (or ``BRAVE_API_KEY``) ->
  ``GET https://api.search.brave.com/res/v1/web/search`` (``X-Subscription-Token`` header)
- ``serpapi``: ``SERPAPI_API_KEY`` (or ``SERPAPI_KEY``) ->
  ``GET https://serpapi.com/search.json?engine=google&api_key=…``

The hosted APIs' base URLs can be overridden (``TAVILY_BASE_URL``, ``BRAVE_SEARCH_BASE_URL``,
``SERPAPI_BASE_URL``), which is how the tests point them at a local stand-in. Requests time out
after ``MEMENTO_SEARCH_TIMEOUT`` seconds (default 15); timeouts, connection failures, HTTP 429 and
5xx are retried ``MEMENTO_SEARCH_RETRIES`` times (default 2) with exponential backoff starting at
``MEMENTO_SEARCH_BACKOFF`` seconds (default 0.5). Other 4xx answers (a bad key, a disabled JSON
format) fail at once with the backend's own explanation.
"""

from __future__ import annotations

import html
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from mcp.server.fastmcp import FastMCP
from pydantic import BaseModel, Field
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from mcp_servers.config import ServerConfig
from mcp_servers.serving import run_server

mcp = FastMCP("search")

# httpx logs every request URL at INFO, and SerpAPI's URL carries the API key.
logging.getLogger("httpx").setLevel(logging.WARNING)

_TAG = re.compile(r"<[^>]+>")


class SearchError(RuntimeError):
    """A search could not be made; the message says why and what to configure."""


class TransientSearchError(SearchError):
    """A failure worth retrying (HTTP 429 or 5xx)."""


class SearchResult(BaseModel):
    """One normalised web result."""

    title: str
    url: str
    snippet: str = ""


class SearchResponse(BaseModel):
    """What the ``web_search`` tool returns."""

    backend: str = Field(description="The backend that answered.")
    query: str
    results: list[SearchResult]


def _clean(text: Any) -> str:
    # Brave marks matches with <strong>; snippets are for reading, not rendering.
    return html.unescape(_TAG.sub("", str(text or ""))).strip()


@dataclass(frozen=True)
class Request:
    """An HTTP request to a search API."""

    method: str
    url: str
    params: dict[str, Any] | None = None
    json: dict[str, Any] | None = None
    headers: dict[str, str] | None = None


@dataclass(frozen=True)
class Backend:
    """A search API: how to ask it, how to read its answer, how to explain its refusals.

    Attributes:
        name: Backend name (the value of ``MEMENTO_SEARCH_BACKEND``).
        config_hint: The environment variables that configure it, for error messages.
        build: ``(query, max_results) -> Request``.
        parse: Response JSON -> normalised results.
        error_detail: Response JSON of a failed request -> the API's own explanation.

    """

    name: str
    config_hint: str
    build: Callable[[str, int], Request]
    parse: Callable[[Any], list[SearchResult]]
    error_detail: Callable[[Any], str]


def _env(*names: str) -> str:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return ""


def _searxng() -> Backend:
    base = _env("SEARXNG_URL").rstrip("/")

    def build(query: str, max_results: int) -> Request:
        # SearxNG returns one page (about 20 results) whatever is asked; the tool trims it.
        return Request("GET", f"{base}/search", params={"q": query, "format": "json", "pageno": 1})

    def parse(data: Any) -> list[SearchResult]:
        return [
            SearchResult(title=_clean(r.get("title")), url=r["url"], snippet=_clean(r.get("content")))
            for r in data.get("results", [])
            if r.get("url")
        ]

    def error_detail(data: Any) -> str:
        return str(data.get("error") or data) if isinstance(data, dict) else str(data)

    return Backend(
        "searxng",
        "SEARXNG_URL (and search.formats: [html, json] in the instance's settings.yml)",
        build,
        parse,
        error_detail,
    )


def _serpapi() -> Backend:
    base = _env("SERPAPI_BASE_URL") or "https://serpapi.com"
    key = _env("SERPAPI_API_KEY", "SERPAPI_KEY")

    def build(query: str, max_results: int) -> Request:
        params = {"engine": "google", "q": query, "api_key": key, "num": max_results}
        return Request("GET", f"{base.rstrip('/')}/search.json", params=params)

    def parse(data: Any) -> list[SearchResult]:
        # A query without results is a success carrying an "error" string, not a failure.
        return [
            SearchResult(title=_clean(r.get("title")), url=r["link"], snippet=_clean(r.get("snippet")))
            for r in data.get("organic_results", [])
            if r.get("link")
        ]

    def error_detail(data: Any) -> str:
        return str(data.get("error") or data) if isinstance(data, dict) else str(data)

    return Backend("serpapi", "SERPAPI_API_KEY", build, parse, error_detail)


def _brave() -> Backend:
    base = _env("BRAVE_SEARCH_BASE_URL") or "https://api.search.brave.com"
    key = _env("BRAVE_SEARCH_API_KEY", "BRAVE_API_KEY")

    def build(query: str, max_results: int) -> Request:
        headers = {"Accept": "application/json", "X-Subscription-Token": key}
        # The API rejects count above 20 (HTTP 422).
        params = {"q": query, "count": min(max_results, 20)}
        return Request("GET", f"{base.rstrip('/')}/res/v1/web/search", params=params, headers=headers)

    def parse(data: Any) -> list[SearchResult]:
        results = (data.get("web") or {}).get("results", [])
        return [
            SearchResult(title=_clean(r.get("title")), url=r["url"], snippet=_clean(r.get("description")))
            for r in results
            if r.get("url")
        ]

    def error_detail(data: Any) -> str:
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            err = data["error"]
            return f"{err.get('code', '')}: {err.get('detail', '')}".strip(": ")
        return str(data)

    return Backend("brave", "BRAVE_SEARCH_API_KEY", build, parse, error_detail)


def _tavily() -> Backend:
    base = _env("TAVILY_BASE_URL") or "https://api.tavily.com"
    key = _env("TAVILY_API_KEY")

    def build(query: str, max_results: int) -> Request:
        body = {"query": query, "max_results": min(max_results, 20), "search_depth": "basic"}
        return Request("POST", f"{base.rstrip('/')}/search", json=body, headers={"Authorization": f"Bearer {key}"})

    def parse(data: Any) -> list[SearchResult]:
        return [
            SearchResult(title=_clean(r.get("title")), url=r["url"], snippet=_clean(r.get("content")))
            for r in data.get("results", [])
            if r.get("url")
        ]

    def error_detail(data: Any) -> str:
        if isinstance(data, dict):
            detail = data.get("detail", data)
            if isinstance(detail, dict):
                return str(detail.get("error") or detail)
            return str(detail)
        return str(data)

    return Backend("tavily", "TAVILY_API_KEY", build, parse, error_detail)


BACKENDS: dict[str, Callable[[], Backend]] = {
    "searxng": _searxng,
    "tavily": _tavily,
    "brave": _brave,
    "serpapi": _serpapi,
}
# Which variable makes a backend "configured", in auto-pick order.
_CONFIGURED_BY = {
    "searxng": ("SEARXNG_URL",),
    "tavily": ("TAVILY_API_KEY",),
    "brave": ("BRAVE_SEARCH_API_KEY", "BRAVE_API_KEY"),
    "serpapi": ("SERPAPI_API_KEY", "SERPAPI_KEY"),
}


def pick_backend() -> Backend:
    """The backend named by ``MEMENTO_SEARCH_BACKEND``, or the first configured one.

    Raises:
        SearchError: None is configured, or the named one is unknown or lacks its key.

    """
    name = ServerConfig.from_env().search_backend
    if name:
        if name not in BACKENDS:
            raise SearchError(f"MEMENTO_SEARCH_BACKEND={name!r} is not one of {', '.join(BACKENDS)}")
        if not _env(*_CONFIGURED_BY[name]):
            raise SearchError(f"search backend {name!r} is selected but {' or '.join(_CONFIGURED_BY[name])} is not set")
        return BACKENDS[name]()
    for candidate, variables in _CONFIGURED_BY.items():
        if _env(*variables):
            return BACKENDS[candidate]()
    raise SearchError(
        "no search backend is configured: set SEARXNG_URL (a SearxNG instance), TAVILY_API_KEY, "
        "BRAVE_SEARCH_API_KEY or SERPAPI_API_KEY (MEMENTO_SEARCH_BACKEND picks one when several are set)"
    )


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, TransientSearchError | httpx.TransportError)


def _read_json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:300]


async def _send(client: httpx.AsyncClient, backend: Backend, request: Request) -> Any:
    response = await client.request(
        request.method, request.url, params=request.params, json=request.json, headers=request.headers
    )
    if response.status_code == 429 or response.status_code >= 500:
        detail = backend.error_detail(_read_json(response))
        raise TransientSearchError(f"{backend.name} answered HTTP {response.status_code}: {detail}")
    if response.status_code >= 400:
        detail = backend.error_detail(_read_json(response))
        raise SearchError(
            f"{backend.name} refused the search (HTTP {response.status_code}): {detail}. Check {backend.config_hint}."
        )
    data = _read_json(response)
    if not isinstance(data, dict):
        raise SearchError(f"{backend.name} answered with something that is not a JSON object: {str(data)[:200]!r}")
    return data


async def search(query: str, max_results: int = 8) -> SearchResponse:
    """Run one search on the configured backend.

    Args:
        query: The search terms.
        max_results: Most results to return.

    Raises:
        SearchError: Not configured, refused (4xx), or still failing after the retries.

    """
    if not query.strip():
        raise SearchError("the query is empty")
    if not 1 <= max_results <= 50:
        raise SearchError("max_results must be between 1 and 50")
    backend = pick_backend()
    # Empty values (a config passing through an unset variable) mean the default.
    config = ServerConfig.from_env()
    timeout, retries, backoff = config.search_timeout, config.search_retries, config.search_backoff
    request = backend.build(query, max_results)
    attempts = retries + 1
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=True) as client:
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(attempts),
                wait=wait_exponential(multiplier=backoff, max=max(backoff * 8, 0.01)),
                retry=retry_if_exception(_transient),
                reraise=True,
            ):
                with attempt:
                    data = await _send(client, backend, request)
        except TransientSearchError as exc:
            raise SearchError(f"{exc} (gave up after {attempts} attempts)") from None
        except httpx.TimeoutException:
            raise SearchError(
                f"{backend.name} did not answer within {timeout:g} s (gave up after {attempts} attempts; MEMENTO_SEARCH_TIMEOUT)"
            ) from None
        except httpx.TransportError as exc:
            # The message names the host only: the request URL may carry an API key (SerpAPI).
            host = httpx.URL(request.url).host
            raise SearchError(
                f"cannot reach {backend.name} at {host} ({type(exc).__name__}: {exc}; gave up after {attempts} attempts)"
            ) from None
    results = backend.parse(data)[:max_results]
    return SearchResponse(backend=backend.name, query=query, results=results)


@mcp.tool()
async def web_search(query: str, max_results: int = 8) -> SearchResponse:
    """Search the web; returns results as ``{title, url, snippet}``.

    Args:
        query: What to search for (keywords work better than questions).
        max_results: Most results to return (1-50).

    """
    return await search(query, max_results)


if __name__ == "__main__":
    run_server(mcp)
