"""A small MCP server for the MCP tool tests, on the official ``mcp`` package (stdio or streamable HTTP).

Run: ``python mcp_test_server.py stdio`` or ``python mcp_test_server.py http PORT``.
"""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("llmrtc-test-server")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool(name="weather.lookup", description="Weather for a city")
def weather(city: str, unit: str = "celsius") -> str:
    return f"Sunny in {city}, 21 degrees {unit}"


@server.tool()
async def slow(seconds: float) -> str:
    """Wait, then answer."""
    await asyncio.sleep(seconds)
    return "finally"


@server.tool()
def fail(message: str) -> str:
    """Always fails with the message (a tool error the server reports as ``isError``)."""
    raise ToolError(message)


@server.tool()
def crash() -> str:
    """Kill the server process (a dead server)."""
    os._exit(3)


@server.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@server.tool()
def header(key: str, ctx: Context) -> str:
    """A header of the HTTP request that carried this call ("" on stdio or when absent)."""
    headers = ctx.headers or {}
    return str(headers.get(key.lower(), ""))


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
