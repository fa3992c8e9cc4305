"""The `math` MCP server over stdio and streamable HTTP: answers, refusals, and it keeps serving."""

from __future__ import annotations

import sys
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.tools import load_mcp_tools

from tests.fakes.mcp_helpers import serve_http

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


class Session:
    def __init__(self, tools):
        self.tools = {t.name: t for t in tools}

    async def call(self, name: str, **args) -> tuple[str, str]:
        """Returns (status, text) of one tool call."""
        msg = await self.tools[name].ainvoke({"type": "tool_call", "id": "1", "name": name, "args": args})
        text = "".join(block["text"] for block in msg.content if block.get("type") == "text")
        return msg.status, text

    async def ok(self, name: str, **args) -> str:
        status, text = await self.call(name, **args)
        assert status == "success", text
        return text

    async def refused(self, name: str, **args) -> str:
        status, text = await self.call(name, **args)
        assert status == "error", text
        # The same session still answers.
        assert "numeric: 3" in await self.ok("evaluate", expression="1+2")
        return text


@asynccontextmanager
async def open_session(connection: dict):
    client = MultiServerMCPClient({"math": connection})
    async with client.session("math") as s:
        yield Session(await load_mcp_tools(s))


@pytest.fixture(scope="module")
async def s():
    connection = {
        "transport": "stdio",
        "command": sys.executable,
        "args": ["-m", "mcp_servers.math"],
        "cwd": str(REPO),
        "env": {"MEMENTO_MATH_TIMEOUT_S": "1"},
    }
    async with open_session(connection) as session:
        yield session


async def test_tools_compute(s):
    assert await s.ok("evaluate", expression="2^10 + sqrt(2)") == "exact: sqrt(2) + 1024\nnumeric: 1025.41421356237"
    assert await s.ok("solve", equation="x^2 = 4") == "[-2, 2]"
    assert await s.ok("solve", equation="a*y + 1", variable="y") == "[-1/a]"
    assert await s.ok("simplify", expression="sin(x)^2 + cos(x)^2") == "1"
    assert await s.ok("differentiate", expression="x^3", order=2) == "6*x"
    assert await s.ok("integrate", expression="x^2", lower="0", upper="3") == "9"
    assert await s.ok("integrate", expression="exp(-t^2)", variable="t", lower="-oo", upper="oo") == "sqrt(pi)"
    assert float(await s.ok("add", a=1.5, b=2)) == 3.5


async def test_hostile_and_huge_expressions_are_refused(s):
    assert "digits" in await s.refused("evaluate", expression="9^9^9^9")
    assert "digits" in await s.refused("evaluate", expression="x + 10^10^7")
    assert "double underscores" in await s.refused("evaluate", expression="(1).__class__.__bases__")
    assert "attribute access" in await s.refused("evaluate", expression="Integer(1).func")
    assert "quotes" in await s.refused("evaluate", expression="open('/etc/passwd')")
    assert "lambda" in await s.refused("evaluate", expression="(lambda: 1)()")
    assert "cannot parse" in await s.refused("evaluate", expression="1/")
    assert "over the 2000 limit" in await s.refused("evaluate", expression="x" * 3000)
    assert "free symbols" in await s.refused("solve", equation="x + y = 1")
    assert "between" in await s.refused("differentiate", expression="x", order=99)


async def test_undefined_and_infinite_values_are_errors_not_answers(s):
    # sympy answers 1/0 with ``zoo`` (complex infinity): a model would read that as a result.
    assert "division by zero" in await s.refused("evaluate", expression="1/0")
    assert "division by zero" in await s.refused("evaluate", expression="log(0)")
    assert "undefined" in await s.refused("evaluate", expression="0/0")
    assert "infinite" in await s.refused("evaluate", expression="oo")
    assert "infinite" in await s.refused("evaluate", expression="-oo + 1")
    assert await s.ok("evaluate", expression="1/2") == "exact: 1/2\nnumeric: 0.500000000000000"


async def test_slow_computation_is_stopped_and_server_keeps_serving(s):
    # 10^3000 passes the size guard; finding the next prime after it takes far beyond 1 s.
    assert "longer than 1s" in await s.refused("evaluate", expression="nextprime(10^3000)")


async def test_streamable_http_transport():
    with serve_http("math") as url:
        async with open_session({"transport": "streamable_http", "url": url}) as http:
            assert await http.ok("evaluate", expression="6*7") == "exact: 42\nnumeric: 42.0000000000000"
            assert "digits" in await http.refused("evaluate", expression="9^9^9^9")
