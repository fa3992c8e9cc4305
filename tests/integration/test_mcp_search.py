"""The `search` MCP server over real MCP sessions, against local stand-ins of the real search APIs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.tools import load_mcp_tools

from tests.fakes.mcp_helpers import call, serve_http
from tests.fakes.search_apis import DEFAULT_KEYS, SearchAPIs

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def apis():
    with SearchAPIs() as server:
        yield server


def stdio_client(env: dict[str, str]) -> MultiServerMCPClient:
    base = {"MEMENTO_SEARCH_BACKOFF": "0.01", "MEMENTO_SEARCH_TIMEOUT": "5"}
    return MultiServerMCPClient(
        {
            "search": {
                "command": sys.executable,
                "args": ["-m", "mcp_servers.search"],
                "transport": "stdio",
                "cwd": str(REPO),
                "env": {**base, **env},
            }
        }
    )


BACKEND_ENV = {
    "searxng": lambda url: {"SEARXNG_URL": url},
    "serpapi": lambda url: {"SERPAPI_API_KEY": DEFAULT_KEYS["serpapi"], "SERPAPI_BASE_URL": url},
    "brave": lambda url: {"BRAVE_SEARCH_API_KEY": DEFAULT_KEYS["brave"], "BRAVE_SEARCH_BASE_URL": url},
    "tavily": lambda url: {"TAVILY_API_KEY": DEFAULT_KEYS["tavily"], "TAVILY_BASE_URL": url},
}


@pytest.mark.anyio
@pytest.mark.parametrize("backend", ["searxng", "serpapi", "brave", "tavily"])
async def test_each_backend_speaks_its_api_and_results_are_normalised(apis, backend):
    apis.add_results(
        "memento agents",
        [
            {
                "title": "Memento: Fine-tuning LLM Agents without Fine-tuning LLMs",
                "url": "https://arxiv.org/abs/2508.16153",
                "snippet": "Case-based memory for agents.",
            },
            {"title": "Memento &amp; co", "url": "https://example.com/m", "snippet": "Second memento agents hit."},
        ],
    )
    async with stdio_client(BACKEND_ENV[backend](apis.url)).session("search") as session:
        tools = {t.name: t for t in await load_mcp_tools(session)}
        status, text = await call(tools["web_search"], query="memento agents", max_results=5)

    assert status == "success", text
    payload = json.loads(text)
    assert payload["backend"] == backend
    assert payload["results"][0] == {
        "title": "Memento: Fine-tuning LLM Agents without Fine-tuning LLMs",
        "url": "https://arxiv.org/abs/2508.16153",
        "snippet": "Case-based memory for agents.",
    }
    # HTML entities and Brave's <strong> highlighting are gone from what the model reads.
    assert payload["results"][1]["title"] == "Memento & co"
    assert "<strong>" not in payload["results"][1]["snippet"]
    assert payload["results"][1]["snippet"] == "Second memento agents hit."

    (request,) = apis.requests_to(backend)
    if backend == "searxng":
        assert request["query"] == {"q": "memento agents", "format": "json", "pageno": "1"}
    elif backend == "serpapi":
        assert request["query"]["engine"] == "google" and request["query"]["api_key"] == DEFAULT_KEYS["serpapi"]
    elif backend == "brave":
        assert request["headers"]["X-Subscription-Token"] == DEFAULT_KEYS["brave"]
        assert request["query"] == {"q": "memento agents", "count": "5"}
    else:
        assert request["headers"]["Authorization"] == f"Bearer {DEFAULT_KEYS['tavily']}"
        assert request["body"]["query"] == "memento agents" and request["body"]["max_results"] == 5


@pytest.mark.anyio
async def test_retries_transient_failures_then_gives_a_clear_error(apis):
    env = {**BACKEND_ENV["brave"](apis.url), "MEMENTO_SEARCH_RETRIES": "2"}
    async with stdio_client(env).session("search") as session:
        tools = {t.name: t for t in await load_mcp_tools(session)}
        search = tools["web_search"]

        apis.fail_next(2, status=503)
        status, text = await call(search, query="retry me", max_results=2)
        assert status == "success", text
        assert len(json.loads(text)["results"]) == 2
        assert len(apis.requests_to("brave")) == 3

        apis.fail_next(3, status=502)
        status, text = await call(search, query="still down", max_results=2)
        assert status == "error"
        assert "HTTP 502" in text and "gave up after 3 attempts" in text

        # A rate limit is transient too.
        apis.fail_next(1, status=429)
        status, text = await call(search, query="rate limited", max_results=1)
        assert status == "success", text

        # Results beyond the stand-in's page are not invented.
        status, text = await call(search, query="five", max_results=5)
        assert [r["url"] for r in json.loads(text)["results"]] == [f"https://example.org/five/{i}" for i in range(1, 6)]


@pytest.mark.anyio
async def test_bad_key_is_a_clear_error_without_retries_and_without_the_key(apis):
    env = {"SERPAPI_API_KEY": "wrong-key", "SERPAPI_BASE_URL": apis.url}
    async with stdio_client(env).session("search") as session:
        tools = {t.name: t for t in await load_mcp_tools(session)}
        status, text = await call(tools["web_search"], query="anything")
        assert status == "error"
        assert "HTTP 401" in text and "Invalid API key" in text and "SERPAPI_API_KEY" in text
        assert "wrong-key" not in text
        assert len(apis.requests_to("serpapi")) == 1  # a 4xx is not retried

        # The session still serves after an error.
        status, text = await call(tools["web_search"], query="")
        assert status == "error" and "empty" in text


@pytest.mark.anyio
async def test_brave_rejected_token_reports_the_api_code(apis):
    env = {"BRAVE_SEARCH_API_KEY": "not-a-token", "BRAVE_SEARCH_BASE_URL": apis.url}
    async with stdio_client(env).session("search") as session:
        tools = {t.name: t for t in await load_mcp_tools(session)}
        status, text = await call(tools["web_search"], query="x")
    assert status == "error"
    assert "HTTP 422" in text and "SUBSCRIPTION_TOKEN_INVALID" in text and "BRAVE_SEARCH_API_KEY" in text


@pytest.mark.anyio
async def test_searxng_without_json_format_and_timeouts_are_explained(apis):
    env = {**BACKEND_ENV["searxng"](apis.url), "MEMENTO_SEARCH_TIMEOUT": "0.3", "MEMENTO_SEARCH_RETRIES": "1"}
    async with stdio_client(env).session("search") as session:
        tools = {t.name: t for t in await load_mcp_tools(session)}
        apis.fail_next(1, status=403)
        status, text = await call(tools["web_search"], query="x")
        assert status == "error" and "HTTP 403" in text and "search.formats" in text

        apis.delay = 0.6
        status, text = await call(tools["web_search"], query="slow")
        assert status == "error"
        assert "did not answer within 0.3 s" in text and "2 attempts" in text
        apis.delay = 0.0


@pytest.mark.anyio
async def test_no_backend_configured_is_a_clear_error():
    async with stdio_client({}).session("search") as session:
        tools = {t.name: t for t in await load_mcp_tools(session)}
        status, text = await call(tools["web_search"], query="anything")
    assert status == "error"
    assert "no search backend is configured" in text and "SEARXNG_URL" in text and "TAVILY_API_KEY" in text


@pytest.mark.anyio
async def test_search_over_streamable_http(apis):
    env = {
        "PATH": "/usr/bin:/bin",
        "TAVILY_API_KEY": DEFAULT_KEYS["tavily"],
        "TAVILY_BASE_URL": apis.url,
    }
    with serve_http("search", env=env, timeout=20) as url:
        client = MultiServerMCPClient({"search": {"transport": "streamable_http", "url": url}})
        async with client.session("search") as session:
            tools = {t.name: t for t in await load_mcp_tools(session)}
            status, text = await call(tools["web_search"], query="over http", max_results=2)
        assert status == "success", text
        payload = json.loads(text)
        assert payload["backend"] == "tavily" and len(payload["results"]) == 2
