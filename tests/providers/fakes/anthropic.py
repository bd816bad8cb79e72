"""A local Anthropic Messages API (``POST /v1/messages``) speaking the real wire format.

Tests script semantic turns (:class:`Turn`, :class:`Failure`); the server renders each one as the real API
would: a JSON ``message`` object, or with ``"stream": true`` the SSE event sequence (``message_start``,
``content_block_start``/``_delta``/``_stop``, ``message_delta``, ``message_stop``, with ``ping``). Every
request is recorded for payload assertions.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass
class ToolUse:
    id: str
    name: str
    input: dict[str, Any]


@dataclass
class Turn:
    """One assistant answer. ``cut_after`` drops the connection after that many SSE events."""

    text: str = ""
    tool_uses: list[ToolUse] = field(default_factory=list)
    stop_reason: str | None = None
    input_tokens: int = 12
    output_tokens: int = 7
    cut_after: int | None = None
    delay_s: float = 0.0
    """Wait this long before answering (to trip the client's timeout)."""
    error_event: str | None = None
    """Send an SSE ``error`` event of this type (e.g. ``overloaded_error``) after the first text delta."""


@dataclass
class Failure:
    """An HTTP error answer as the API sends it."""

    status: int
    message: str = "failure"
    retry_after: str | None = None


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class FakeAnthropic:
    """An aiohttp server on an ephemeral port; ``base_url`` is set once started."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.script: deque[Turn | Failure] = deque()
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    def push(self, *replies: Turn | Failure) -> None:
        self.script.extend(replies)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(Recorded(request.method, request.path, dict(request.headers), body))
        reply = self.script.popleft() if self.script else Turn(text="ok")
        if isinstance(reply, Failure):
            headers = {"request-id": "req_fake"}
            if reply.retry_after is not None:
                headers["retry-after"] = reply.retry_after
            payload = {
                "type": "error",
                "error": {"type": _ERROR_TYPES.get(reply.status, "api_error"), "message": reply.message},
            }
            return web.json_response(payload, status=reply.status, headers=headers)
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if body.get("stream"):
            return await self._stream(request, body, reply)
        return web.json_response(_message_json(body, reply), headers={"request-id": "req_fake"})

    async def _stream(self, request: web.Request, body: dict[str, Any], turn: Turn) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "request-id": "req_fake"})
        await resp.prepare(request)
        for count, (name, data) in enumerate(_events(body, turn)):
            if turn.cut_after is not None and count >= turn.cut_after:
                # Drop the connection without the terminating chunk: a truncated stream.
                assert request.transport is not None
                request.transport.close()
                return resp
            await resp.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
            await asyncio.sleep(0)
        await resp.write_eof()
        return resp


def _stop_reason(turn: Turn) -> str:
    return turn.stop_reason or ("tool_use" if turn.tool_uses else "end_turn")


def _message_json(body: dict[str, Any], turn: Turn) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if turn.text:
        content.append({"type": "text", "text": turn.text})
    for use in turn.tool_uses:
        content.append({"type": "tool_use", "id": use.id, "name": use.name, "input": use.input})
    return {
        "id": "msg_fake01",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", ""),
        "content": content,
        "stop_reason": _stop_reason(turn),
        "stop_sequence": None,
        "usage": {"input_tokens": turn.input_tokens, "output_tokens": turn.output_tokens},
    }


def _events(body: dict[str, Any], turn: Turn) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    **_message_json(body, Turn()),
                    "content": [],
                    "stop_reason": None,
                    "usage": {"input_tokens": turn.input_tokens, "output_tokens": 1},
                },
            },
        ),
        ("ping", {"type": "ping"}),
    ]
    index = 0
    if turn.text:
        events.append(
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                },
            )
        )
        words = turn.text.split(" ")
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            events.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": piece},
                    },
                )
            )
            if i == 0 and turn.error_event:
                events.append(
                    ("error", {"type": "error", "error": {"type": turn.error_event, "message": "Overloaded"}})
                )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    for use in turn.tool_uses:
        events.append(
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "tool_use", "id": use.id, "name": use.name, "input": {}},
                },
            )
        )
        raw = json.dumps(use.input)
        pieces = [""] + [raw[i : i + 7] for i in range(0, len(raw), 7)]
        for piece in pieces:
            events.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    },
                )
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": _stop_reason(turn), "stop_sequence": None},
                "usage": {"output_tokens": turn.output_tokens},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events
