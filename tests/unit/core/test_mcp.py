"""MCP tools: real ``mcp`` servers the tests start (stdio subprocess and streamable HTTP), the real client."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from llmrtc.errors import ConfigError
from llmrtc.mcp import MCPServerSpec, MCPToolset, load_mcp_tools, parse_mcp_servers, tool_name
from llmrtc.tools import ToolExecutor, ToolRegistry
from llmrtc.types import ToolCallRequest, ToolResult

SERVER = str(Path(__file__).with_name("mcp_test_server.py"))


def stdio(name: str = "local", **kw: Any) -> dict[str, Any]:
    return {"name": name, "command": sys.executable, "args": [SERVER, "stdio"], **kw}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, SERVER, "http", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the MCP HTTP test server did not start")
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(10)


async def run(registry: ToolRegistry, tool: str, **arguments: Any) -> ToolResult:
    executor = ToolExecutor(registry, timeout_s=30)
    return await executor.execute_one(ToolCallRequest(call_id=f"call-{tool}", name=tool, arguments=arguments))


@pytest.fixture
async def local() -> AsyncIterator[tuple[MCPToolset, ToolRegistry]]:
    registry = ToolRegistry()
    async with MCPToolset([stdio(timeout_s=2.0)]) as toolset:
        toolset.register_into(registry)
        yield toolset, registry


def test_parse_servers_from_an_env_json_string() -> None:
    specs = parse_mcp_servers(
        '[{"name":"x","command":"python","args":["srv.py"]},'
        '{"name":"y","url":"http://127.0.0.1:9/mcp","headers":{"Authorization":"Bearer t"},"timeout_s":5}]'
    )
    assert [(s.name, s.transport) for s in specs] == [("x", "stdio"), ("y", "http")]
    assert specs[0].args == ["srv.py"] and specs[1].headers == {"Authorization": "Bearer t"}
    assert specs[1].timeout_s == 5
    assert parse_mcp_servers("") == [] and parse_mcp_servers(None) == []
    for bad, why in [
        ("[{", "not valid JSON"),
        ('{"name":"x"}', "exactly one of 'command'"),
        ('[{"name":"x","command":"a","url":"http://h"}]', "exactly one of 'command'"),
        ('[{"name":"x","command":"a"},{"name":"x","command":"b"}]', "repeated: x"),
        ('[{"name":"x","url":"ftp://h"}]', "must be http"),
        ('[{"name":"x","command":"a","timeout_s":0}]', "timeout_s"),
        ('"x"', "JSON list"),
    ]:
        with pytest.raises(ConfigError, match=why):
            parse_mcp_servers(bad)


def test_tool_names_are_made_llm_safe() -> None:
    assert tool_name("", "weather.lookup") == "weather_lookup"
    assert tool_name("srv_", "a/b c") == "srv_a_b_c"
    assert len(tool_name("", "x" * 100)) == 64


async def test_stdio_server_tools_registered_with_their_schemas(
    local: tuple[MCPToolset, ToolRegistry],
) -> None:
    _, registry = local
    assert set(registry.names()) == {"add", "weather_lookup", "slow", "fail", "crash", "pid", "header"}
    add = registry.get("add")
    assert add is not None
    assert add.definition.description == "Add two integers."
    params = add.definition.parameters
    assert params["type"] == "object" and set(params["required"]) == {"a", "b"}
    assert params["properties"]["a"]["type"] == "integer"
    weather = registry.get("weather_lookup")
    assert weather is not None and weather.definition.description == "Weather for a city"
    assert weather.definition.parameters["required"] == ["city"]

    result = await run(registry, "add", a=2, b=3)
    assert result.success, result.error
    assert result.result == {"result": 5}
    result = await run(registry, "weather_lookup", city="Oslo")  # the original name reaches the server
    assert result.success and "Sunny in Oslo, 21 degrees celsius" in str(result.result)


async def test_timeouts_and_server_errors_become_error_results(
    local: tuple[MCPToolset, ToolRegistry],
) -> None:
    _, registry = local
    started = time.monotonic()
    result = await run(registry, "slow", seconds=10)
    assert not result.success and result.error_code == "tool_timeout"
    assert "local" in (result.error or "") and time.monotonic() - started < 5

    result = await run(registry, "fail", message="the database is down")
    assert not result.success and result.error_code == "tool_execution_failed"
    assert "the database is down" in (result.error or "")

    invalid = await run(registry, "add", a="two", b=3)  # rejected by the tool's JSON schema before the call
    assert not invalid.success and invalid.error_code == "tool_invalid_arguments"

    assert (await run(registry, "add", a=1, b=1)).success  # the server is still fine


async def test_dead_server_becomes_an_error_result_then_reconnects(
    local: tuple[MCPToolset, ToolRegistry],
) -> None:
    _, registry = local
    first_pid = (await run(registry, "pid")).result
    crashed = await run(registry, "crash")
    assert not crashed.success and crashed.error_code in ("tool_execution_failed", "tool_timeout")
    again = await run(registry, "pid")
    assert again.success, again.error
    assert again.result != first_pid


async def test_streamable_http_server_with_prefix_and_headers(http_url: str) -> None:
    registry = ToolRegistry()
    spec = {"name": "remote", "url": http_url, "tool_prefix": "remote_", "headers": {"X-Test": "1"}}
    async with MCPToolset([spec]) as toolset:
        toolset.register_into(registry)
        assert "remote_add" in registry and "remote_weather_lookup" in registry
        result = await run(registry, "remote_add", a=20, b=22)
        assert result.success and result.result == {"result": 42}
        failed = await run(registry, "remote_fail", message="nope")
        assert not failed.success and "nope" in (failed.error or "")
        sent = await run(registry, "remote_header", key="X-Test")
        assert sent.result == {"result": "1"}  # the spec's headers reach the server


async def test_unreachable_server_is_skipped_unless_required(http_url: str) -> None:
    dead = {"name": "gone", "url": f"http://127.0.0.1:{free_port()}/mcp", "connect_timeout_s": 3}
    only = {"name": "remote", "url": http_url, "tools": ["add"]}
    async with MCPToolset([dead, only]) as toolset:
        assert [t.name for t in toolset.tools] == ["add"]
        assert "gone" in toolset.failed
    with pytest.raises(ConfigError, match="'gone' could not be started"):
        await MCPToolset([{**dead, "required": True}, only]).start()


async def test_same_tool_names_on_two_servers_need_a_prefix(http_url: str) -> None:
    def remote(name: str, **kw: Any) -> dict[str, Any]:
        return {"name": name, "url": http_url, "tools": ["add"], **kw}

    with pytest.raises(ConfigError, match="tool_prefix"):
        await MCPToolset([remote("a"), remote("b")]).start()
    registry = ToolRegistry()
    toolset = await load_mcp_tools(registry, [remote("a"), remote("b", tool_prefix="b_")])
    try:
        assert sorted(registry.names()) == ["add", "b_add"]
        results = await asyncio.gather(run(registry, "add", a=1, b=2), run(registry, "b_add", a=3, b=4))
        assert [r.result for r in results] == [{"result": 3}, {"result": 7}]
    finally:
        await toolset.aclose()


async def test_close_stops_the_stdio_server_process() -> None:
    registry = ToolRegistry()
    toolset = MCPToolset([MCPServerSpec.model_validate(stdio())])
    await toolset.start()
    toolset.register_into(registry)
    pid_result = (await run(registry, "pid")).result
    pid = pid_result["result"]
    await toolset.aclose()
    await toolset.aclose()  # twice is fine
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the stdio MCP server outlived the toolset")


def test_tools_with_unusable_schemas_are_left_out(caplog: pytest.LogCaptureFixture) -> None:
    from mcp_types import Tool as MCPTool

    from llmrtc.mcp import _Server

    server = _Server(MCPServerSpec.model_validate(stdio(timeout_s=4)))
    bad_type = MCPTool(name="bad", input_schema={"type": "object", "properties": {"x": {"type": "nonsense"}}})
    not_object = MCPTool(name="scalar", input_schema={"type": "string"})
    good = MCPTool(name="ns/ok", description="fine", input_schema={"type": "object"})
    assert MCPToolset._tool(server, bad_type) is None
    assert MCPToolset._tool(server, not_object) is None
    assert "left out" in caplog.text
    tool = MCPToolset._tool(server, good)
    assert (
        tool is not None
        and tool.name == "ns_ok"
        and tool.definition.parameters == {"type": "object", "properties": {}}
    )
    assert tool.definition.timeout_s == 5.0  # the call's own 4 s timeout answers first
