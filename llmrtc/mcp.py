"""Tools from MCP servers: connect to stdio and streamable-HTTP servers with the official ``mcp`` package and
expose their tools as :class:`llmrtc.tools.Tool` objects, JSON schemas included.

.. code-block:: python

    specs = parse_mcp_servers(os.environ.get("MCP_SERVERS"))
    async with MCPToolset(specs) as toolset:
        toolset.register_into(registry)          # a ToolRegistry
        ...                                      # run the agent; calls go to the servers

Each server runs its client in a task of its own (so the toolset may be opened and closed from different
tasks). A tool call has a timeout (the spec's ``timeout_s``, also set as the tool's ``timeout_s`` for the
executor); a timeout, an error the server answers, a tool result flagged ``isError`` or a dead server raise
:class:`~llmrtc.errors.ToolError` subclasses, which :class:`~llmrtc.tools.ToolExecutor` turns into error
results for the LLM, so a turn never crashes. A server that dropped is reconnected on the next call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llmrtc.errors import ConfigError, ToolExecutionError, ToolTimeoutError
from llmrtc.tools import Tool, ToolRegistry
from llmrtc.types import ToolDefinition

if TYPE_CHECKING:
    from mcp import Client

log = logging.getLogger("llmrtc.mcp")

_CONNECTION_CLOSED = -32000
"""The JSON-RPC error code the ``mcp`` client raises for a request on a closed connection."""
_INVALID = re.compile(r"[^A-Za-z0-9_-]")


class MCPServerSpec(BaseModel):
    """One MCP server: ``command`` (+ ``args``, ``env``, ``cwd``) for stdio, or ``url`` (+ ``headers``) for
    streamable HTTP.

    ``tool_prefix`` is put before every tool name (to keep servers apart); ``tools`` keeps only the tools
    named; ``timeout_s`` bounds each call, ``connect_timeout_s`` the start and handshake; a ``required``
    server that cannot be reached fails :meth:`MCPToolset.start` instead of being skipped with a warning.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] | None = None
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    tool_prefix: str = ""
    tools: list[str] | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    connect_timeout_s: float = Field(default=20.0, gt=0)
    required: bool = False

    @model_validator(mode="after")
    def _one_transport(self) -> MCPServerSpec:
        if not self.name.strip():
            raise ValueError("an MCP server needs a name")
        if bool(self.command) == bool(self.url):
            raise ValueError(
                f"MCP server {self.name!r} needs exactly one of 'command' (stdio) or 'url' (HTTP)"
            )
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"MCP server {self.name!r}: url must be http(s)://, got {self.url!r}")
        if self.tool_prefix and _INVALID.search(self.tool_prefix):
            raise ValueError(
                f"MCP server {self.name!r}: tool_prefix may hold only letters, digits, '_' and '-'"
            )
        return self

    @property
    def transport(self) -> str:
        return "stdio" if self.command else "http"


def parse_mcp_servers(value: str | Sequence[Mapping[str, Any]] | None) -> list[MCPServerSpec]:
    """Server specs from a JSON string (e.g. ``MCP_SERVERS``) or a list of mappings; blank gives ``[]``.

    ``'[{"name":"x","command":"python","args":["srv.py"]},{"name":"y","url":"http://host/mcp"}]'``.
    Raises :class:`ConfigError` naming what is wrong.
    """
    if value is None:
        return []
    items: Any = value
    if isinstance(value, str):
        if not value.strip():
            return []
        try:
            items = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"MCP_SERVERS is not valid JSON: {exc}") from exc
    if isinstance(items, Mapping):
        items = [items]
    if not isinstance(items, list):
        raise ConfigError("MCP_SERVERS must be a JSON list of server objects")
    specs: list[MCPServerSpec] = []
    for index, item in enumerate(items):
        try:
            specs.append(MCPServerSpec.model_validate(item))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'server'}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"MCP server #{index + 1} is invalid: {problems}") from exc
    names = [spec.name for spec in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"MCP server names must be unique; repeated: {', '.join(duplicates)}")
    return specs


def tool_name(prefix: str, name: str) -> str:
    """The LLM-safe tool name for MCP tool ``name``: invalid characters become ``_``, at most 64 characters."""
    return _INVALID.sub("_", f"{prefix}{name}")[:64]


def _schema(input_schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """The tool's input schema, checked: an object schema valid as JSON Schema (draft 2020-12)."""
    import jsonschema

    schema = dict(input_schema or {})
    schema.setdefault("type", "object")
    if schema["type"] != "object":
        raise ValueError(f"input schema of type {schema['type']!r} (tools take an object)")
    schema.setdefault("properties", {})
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"invalid input schema: {exc.message}") from exc
    return schema


def _content(result: Any) -> Any:
    """What the LLM gets from a ``CallToolResult``: its structured content, else its text (other blocks
    are named)."""
    if result.structured_content is not None:
        return result.structured_content
    parts: list[str] = []
    for block in result.content:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind in ("image", "audio"):
            parts.append(f"[{kind}: {getattr(block, 'mime_type', '')}]")
        elif kind == "resource_link":
            parts.append(f"[resource: {block.uri}]")
        elif kind == "resource":
            resource = block.resource
            parts.append(getattr(resource, "text", None) or f"[resource: {resource.uri}]")
        else:
            parts.append(f"[{kind}]")
    return "\n".join(parts)


@contextlib.asynccontextmanager
async def _http_with_headers(url: str, headers: Mapping[str, str]) -> AsyncIterator[Any]:
    """A streamable-HTTP transport whose requests carry ``headers`` (e.g. ``Authorization``); its HTTP
    client is closed with it."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    timeout = httpx2.Timeout(
        30.0, read=300.0
    )  # the mcp package's defaults: the server may hold a stream open
    async with (
        httpx2.AsyncClient(headers=dict(headers), timeout=timeout, follow_redirects=False) as http,
        streamable_http_client(url, http_client=http) as streams,
    ):
        yield streams


class _Server:
    """One connected MCP server; its ``mcp.Client`` lives in a task of its own."""

    def __init__(self, spec: MCPServerSpec) -> None:
        self.spec = spec
        self.client: Client | None = None
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._reconnect = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self.client is not None and self._task is not None and not self._task.done()

    def _make_client(self) -> Client:
        from mcp import Client, StdioServerParameters

        server: Any
        if self.spec.command:
            server = StdioServerParameters(
                command=self.spec.command, args=self.spec.args, env=self.spec.env, cwd=self.spec.cwd
            )
        else:
            assert self.spec.url is not None
            server = self.spec.url
            if self.spec.headers:
                server = _http_with_headers(self.spec.url, self.spec.headers)
        return Client(server, read_timeout_seconds=self.spec.timeout_s, cache=None)

    async def start(self) -> None:
        """Connect (within ``connect_timeout_s``); raises :class:`ConfigError` saying why it could not."""
        ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run(ready), name=f"mcp-{self.spec.name}")
        try:
            self.client = await asyncio.wait_for(asyncio.shield(ready), self.spec.connect_timeout_s)
            self.error = None
        except BaseException as exc:
            await self.stop()
            if isinstance(exc, asyncio.CancelledError):
                raise
            reason = (
                f"no answer within {self.spec.connect_timeout_s:g}s"
                if isinstance(exc, TimeoutError)
                else f"{type(exc).__name__}: {exc}"
            )
            self.error = reason
            raise ConfigError(f"MCP server {self.spec.name!r} could not be started: {reason}") from exc

    async def _run(self, ready: asyncio.Future[Client]) -> None:
        try:
            async with self._make_client() as client:
                if not ready.done():
                    ready.set_result(client)
                await self._stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
            if isinstance(exc, asyncio.CancelledError):
                raise
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("MCP server connection ended: %s", self.error, extra={"mcp_server": self.spec.name})
        finally:
            self.client = None

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        done, _ = await asyncio.wait({task}, timeout=5.0)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=5.0)
        if task.done() and not task.cancelled():
            task.exception()  # seen: the failure was logged by the task
        self.client = None

    async def list_tools(self) -> list[Any]:
        assert self.client is not None
        tools: list[Any] = []
        cursor: str | None = None
        while True:
            page = await asyncio.wait_for(self.client.list_tools(cursor=cursor), self.spec.timeout_s)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                return tools

    async def call(self, tool: str, arguments: dict[str, Any], exposed: str) -> Any:
        client = await self._client_for_call(exposed)
        from mcp.shared.exceptions import MCPError

        try:
            result = await asyncio.wait_for(
                client.call_tool(tool, arguments, read_timeout_seconds=self.spec.timeout_s),
                self.spec.timeout_s,
            )
        except TimeoutError as exc:
            raise ToolTimeoutError(
                f"MCP server {self.spec.name!r} did not answer {tool!r} within {self.spec.timeout_s:g}s",
                tool_name=exposed,
            ) from exc
        except MCPError as exc:
            if exc.code == _CONNECTION_CLOSED:
                self._lost(exc)
                raise ToolExecutionError(
                    f"MCP server {self.spec.name!r} closed the connection during {tool!r}", tool_name=exposed
                ) from exc
            raise ToolExecutionError(
                f"MCP server {self.spec.name!r} refused {tool!r}: {exc.error.message}", tool_name=exposed
            ) from exc
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._lost(exc)
            raise ToolExecutionError(
                f"MCP server {self.spec.name!r} failed on {tool!r}: {type(exc).__name__}: {exc}",
                tool_name=exposed,
            ) from exc
        if result.is_error:
            raise ToolExecutionError(f"{tool} failed: {_content(result)}", tool_name=exposed)
        return _content(result)

    def _lost(self, exc: BaseException) -> None:
        """The connection is gone (the server died or dropped): the next call connects again."""
        log.warning(
            "MCP server connection lost: %s: %s",
            type(exc).__name__,
            exc,
            extra={"mcp_server": self.spec.name},
        )
        self.error = f"{type(exc).__name__}: {exc}"
        self.client = None
        self._stop.set()

    async def _client_for_call(self, exposed: str) -> Client:
        if self.connected and self.client is not None:
            return self.client
        async with self._reconnect:
            if not (self.connected and self.client is not None):
                log.info("reconnecting to MCP server", extra={"mcp_server": self.spec.name})
                await self.stop()
                try:
                    await self.start()
                except ConfigError as exc:
                    raise ToolExecutionError(
                        f"MCP server {self.spec.name!r} is unavailable: {self.error}", tool_name=exposed
                    ) from exc
            assert self.client is not None
            return self.client


class MCPToolset:
    """The tools of several MCP servers; an async context manager (or :meth:`start` / :meth:`aclose`)."""

    def __init__(self, specs: Iterable[MCPServerSpec | Mapping[str, Any]] | str | None) -> None:
        if specs is None or isinstance(specs, str):
            parsed = parse_mcp_servers(specs)
        else:
            parsed = parse_mcp_servers([s.model_dump() if isinstance(s, MCPServerSpec) else s for s in specs])
        self.specs = parsed
        self.tools: list[Tool] = []
        self.failed: dict[str, str] = {}
        """Servers that could not be reached at start, with the reason (their tools are missing)."""
        self._servers = [_Server(spec) for spec in parsed]

    async def __aenter__(self) -> MCPToolset:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> list[Tool]:
        """Connect to every server at once and collect their tools.

        A server that cannot be reached is skipped with a warning (listed in :attr:`failed`), unless it is
        ``required``; then :class:`ConfigError` is raised after everything opened is closed again.
        """
        outcomes = await asyncio.gather(*(self._start_one(s) for s in self._servers), return_exceptions=True)
        tools: list[Tool] = []
        names: list[str] = []
        try:
            for server, outcome in zip(self._servers, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    if server.spec.required or not isinstance(outcome, ConfigError):
                        raise outcome
                    self.failed[server.spec.name] = str(outcome)
                    log.warning("%s; its tools are left out", outcome, extra={"mcp_server": server.spec.name})
                    continue
                tools.extend(outcome)
            names = [tool.name for tool in tools]
            clashes = sorted({n for n in names if names.count(n) > 1})
            if clashes:
                raise ConfigError(
                    f"MCP tools with the same name on several servers: {', '.join(clashes)}; "
                    "give the servers a tool_prefix"
                )
        except BaseException:
            await self.aclose()
            raise
        self.tools = tools
        log.info("MCP tools ready", extra={"tools": names, "servers": len(self._servers) - len(self.failed)})
        return tools

    async def _start_one(self, server: _Server) -> list[Tool]:
        await server.start()
        try:
            listed = await server.list_tools()
        except Exception as exc:
            await server.stop()
            raise ConfigError(f"MCP server {server.spec.name!r} could not list its tools: {exc}") from exc
        wanted = set(server.spec.tools) if server.spec.tools is not None else None
        tools: list[Tool] = []
        for mcp_tool in listed:
            if wanted is not None and mcp_tool.name not in wanted:
                continue
            tool = self._tool(server, mcp_tool)
            if tool is not None:
                tools.append(tool)
        return tools

    @staticmethod
    def _tool(server: _Server, mcp_tool: Any) -> Tool | None:
        exposed = tool_name(server.spec.tool_prefix, mcp_tool.name)
        try:
            definition = ToolDefinition(
                name=exposed,
                description=mcp_tool.description or mcp_tool.title or "",
                parameters=_schema(mcp_tool.input_schema),
                timeout_s=server.spec.timeout_s
                + 1.0,  # the call's own timeout answers first, naming the server
            )
        except (ValidationError, ValueError) as exc:
            log.warning(
                "MCP tool %r left out: %s", mcp_tool.name, exc, extra={"mcp_server": server.spec.name}
            )
            return None
        original = mcp_tool.name

        async def call(**arguments: Any) -> Any:
            return await server.call(original, arguments, exposed)

        call.__name__ = exposed
        return Tool(definition, call)

    def register_into(self, registry: ToolRegistry, *, replace: bool = False) -> list[Tool]:
        """Add every tool to ``registry`` (a name already there raises unless ``replace``)."""
        for tool in self.tools:
            registry.register(tool, replace=replace)
        return list(self.tools)

    async def aclose(self) -> None:
        """Close every connection (stdio servers are stopped); safe to call twice."""
        await asyncio.gather(*(server.stop() for server in self._servers), return_exceptions=True)
        self.tools = []


async def load_mcp_tools(
    registry: ToolRegistry, specs: Iterable[MCPServerSpec | Mapping[str, Any]] | str | None
) -> MCPToolset:
    """Start an :class:`MCPToolset` for ``specs`` and register its tools into ``registry``; close it when done."""
    toolset = MCPToolset(specs)
    await toolset.start()
    try:
        toolset.register_into(registry)
    except BaseException:
        await toolset.aclose()
        raise
    return toolset


__all__ = ["MCPServerSpec", "MCPToolset", "load_mcp_tools", "parse_mcp_servers", "tool_name"]
