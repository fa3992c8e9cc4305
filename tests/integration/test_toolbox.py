"""The client-side toolbox: one held session per server, recovery from a crashed server."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mcp_servers.toolbox import Toolbox

pytestmark = pytest.mark.anyio
FAKES = Path(__file__).resolve().parents[1] / "fakes"


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "servers.json"
    path.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "crashy": {"command": sys.executable, "args": [str(FAKES / "crashy_mcp_server.py")]},
                    "broken": {"command": sys.executable, "args": ["-c", "import sys; sys.exit(3)"]},
                }
            }
        )
    )
    return str(path)


async def test_one_session_per_server_and_recovery_after_a_crash(config):
    box = Toolbox(config, start_timeout=20)
    try:
        names = {t.name for t in await box.tools()}
        assert names == {"crashy_crash", "crashy_echo"}
        assert "broken" in box.errors  # a server that cannot start is reported, not fatal

        first = await box.call("crashy_echo", {"text": "a"}, "c1")
        second = await box.call("crashy_echo", {"text": "b"}, "c2")
        pid = first.content.split()[-1]
        assert second.content.split()[-1] == pid  # the same process served both calls

        died = await box.call("crashy_crash", {}, "c3")
        assert died.status == "error" and "crashed during this call" in died.content
        assert "Call again only if" in died.content  # not silently re-run: it may have side effects

        after = await box.call("crashy_echo", {"text": "c"}, "c4")
        assert after.status != "error", after.content
        assert after.content.startswith("c from") and after.content.split()[-1] != pid
    finally:
        await box.aclose()


async def test_unknown_tool_lists_the_real_ones(config):
    box = Toolbox(config, start_timeout=20)
    try:
        msg = await box.call("crashy_nope", {}, "c1")
        assert msg.status == "error" and "crashy_echo" in msg.content
        msg = await box.call("nowhere_tool", {}, "c2")
        assert msg.status == "error" and "unknown tool 'nowhere_tool'" in msg.content
    finally:
        await box.aclose()
