"""An MCP server whose `crash` tool kills its own process, to test recovery from a dead server."""

import os

from mcp.server.fastmcp import FastMCP

mcp = FastMCP("crashy", log_level="WARNING")


@mcp.tool()
def crash() -> str:
    """Die mid-call, as a segfaulting or OOM-killed server would."""
    os._exit(1)


@mcp.tool()
def echo(text: str) -> str:
    """Return the text and this process's pid."""
    return f"{text} from {os.getpid()}"


if __name__ == "__main__":
    mcp.run(transport="stdio")
