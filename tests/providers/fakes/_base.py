"""What every wire fake shares: an aiohttp server on an ephemeral port, a reply script, stream writers.

Vendor formats (paths, JSON shapes, error envelopes) stay in each fake; this module only holds the plumbing
that is the same for all of them: listening on ``127.0.0.1:0``, popping scripted replies, writing a streamed
body frame by frame with the scripted misbehaviours (drop the connection after N frames, stall), and the SSE
and NDJSON framings.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aiohttp import web
from multidict import CIMultiDict

R = TypeVar("R")


@dataclass
class Failure:
    """An HTTP error answer; each fake renders it in its vendor's error envelope."""

    status: int
    message: str = "failure"
    retry_after: str | None = None


@dataclass
class Raw:
    """Any answer at all, sent as is: the "200 OK" that is not what was asked for (an HTML page from a proxy,
    a JSON error object, plain text) and other off-script bodies."""

    body: bytes
    content_type: str = "text/html; charset=utf-8"
    status: int = 200

    def response(self) -> web.Response:
        return web.Response(body=self.body, status=self.status, headers={"Content-Type": self.content_type})


HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    b"<body><h1>Bad Gateway</h1><p>The proxy could not reach the upstream server.</p></body></html>"
)
"""The page a proxy or captive portal answers with a 200 instead of the vendor's answer."""


@dataclass
class ToolUse:
    """A tool call the model makes: id, name, JSON arguments (Anthropic ``tool_use``, Bedrock ``toolUse``)."""

    id: str
    name: str
    input: dict[str, Any]


@dataclass
class Recorded:
    """One request a fake received: headers (looked up case-insensitively), parsed body, query, uploads."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    query: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def of(cls, request: web.Request, body: Any, files: dict[str, bytes] | None = None) -> Recorded:
        return cls(
            request.method, request.path, CIMultiDict(request.headers), body, dict(request.query), files or {}
        )


class FakeServer:
    """An aiohttp application listening on ``127.0.0.1`` at a port the OS picks.

    Subclasses add their routes in :meth:`routes`; once started, ``base_url`` is ``root_url`` plus
    ``base_path``.
    """

    client_max_size = 1024**2
    base_path = ""

    def __init__(self) -> None:
        self.root_url = ""
        self.base_url = ""
        self._runner: web.AppRunner | None = None
        self.raw: deque[Raw] = deque()
        """Off-script answers served, in order, before any route runs (whatever the request)."""
        self.raw_served = 0

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    @web.middleware
    async def _raw_first(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not self.raw:
            response: web.StreamResponse = await handler(request)
            return response
        await request.read()
        self.raw_served += 1
        return self.raw.popleft().response()

    async def start(self) -> str:
        """Serve on a port the OS picks; sets ``root_url`` and returns ``base_url``."""
        app = web.Application(client_max_size=self.client_max_size, middlewares=[self._raw_first])
        self.routes(app)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.root_url = f"http://127.0.0.1:{port}"
        self.base_url = self.root_url + self.base_path
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def stop(self) -> None:
        await self.close()


class ScriptedServer(FakeServer, Generic[R]):
    """A fake answering requests from a queue of scripted replies (a default once it runs dry)."""

    def __init__(self) -> None:
        super().__init__()
        self.script: deque[R] = deque()

    def push(self, *replies: R) -> None:
        self.script.extend(replies)

    def next_reply(self, default: R) -> R:
        return self.script.popleft() if self.script else default


def retry_after_headers(retry_after: str | None, name: str = "Retry-After") -> dict[str, str]:
    """The ``Retry-After`` header (under the vendor's spelling of its name) when one is scripted."""
    return {name: retry_after} if retry_after is not None else {}


def sse(data: Any, *, event: str | None = None, newline: str = "\n") -> bytes:
    """One server-sent event carrying ``data`` as JSON (a string is sent as is)."""
    payload = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}{newline}" if event is not None else ""
    return f"{head}data: {payload}{newline}{newline}".encode()


def ndjson(data: Any) -> bytes:
    """One newline-delimited JSON line."""
    return json.dumps(data).encode() + b"\n"


def word_pieces(text: str) -> list[str]:
    """``text`` split at spaces, each piece after the first keeping its leading space."""
    if not text:
        return []
    return [word if i == 0 else " " + word for i, word in enumerate(text.split(" "))]


def even_pieces(text: str, pieces: int) -> list[str]:
    """``text`` cut into at most ``pieces`` slices of equal length (the last may be shorter)."""
    if not text:
        return []
    step = max(1, -(-len(text) // max(1, pieces)))
    return [text[i : i + step] for i in range(0, len(text), step)]


def byte_pieces(data: bytes, size: int) -> list[bytes]:
    """``data`` in slices of ``size`` bytes."""
    return [data[i : i + size] for i in range(0, len(data), size)]


async def cut(request: web.Request) -> None:
    """Drop the connection without finishing the body: a truncated stream."""
    await asyncio.sleep(0.01)
    if request.transport is not None:
        request.transport.close()


async def stream(
    request: web.Request,
    frames: Iterable[bytes],
    *,
    content_type: str,
    headers: Mapping[str, str] | None = None,
    chunked: bool = False,
    cut_after: int | None = None,
    stall_after: int | None = None,
    stall_s: float = 1.5,
    trailer: bytes = b"",
) -> web.StreamResponse:
    """Answer ``frames`` one write each; ``cut_after`` frames drops the connection, ``stall_after`` frames
    stops sending (without closing) for ``stall_s``; otherwise ``trailer`` and the end of the body follow."""
    resp = web.StreamResponse(headers={"Content-Type": content_type, **(headers or {})})
    if chunked:
        resp.enable_chunked_encoding()
    await resp.prepare(request)
    for i, frame in enumerate(frames):
        if cut_after is not None and i >= cut_after:
            await cut(request)
            return resp
        if stall_after is not None and i >= stall_after:
            await asyncio.sleep(stall_s)
            return resp
        await resp.write(frame)
        await asyncio.sleep(0)
    if trailer:
        await resp.write(trailer)
    await resp.write_eof()
    return resp
