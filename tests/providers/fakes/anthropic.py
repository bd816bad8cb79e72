"""A local Anthropic Messages API (``POST /v1/messages``) speaking the real wire format.

Tests script semantic turns (:class:`Turn`, :class:`Failure`); the server renders each one as the real API
would: a JSON ``message`` object, or with ``"stream": true`` the SSE event sequence (``message_start``,
``content_block_start``/``_delta``/``_stop``, ``message_delta``, ``message_stop``, with ``ping``). Every
request is recorded for payload assertions.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.providers.fakes._base import Failure, Recorded, ScriptedServer, ToolUse, sse, stream, word_pieces

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


class FakeAnthropic(ScriptedServer[Turn | Failure]):
    """An aiohttp server on an ephemeral port; ``base_url`` is set once started."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Recorded] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(Recorded.of(request, body))
        reply = self.next_reply(Turn(text="ok"))
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
            return await stream(
                request,
                (sse(data, event=name) for name, data in _events(body, reply)),
                content_type="text/event-stream",
                headers={"request-id": "req_fake"},
                cut_after=reply.cut_after,
            )
        return web.json_response(_message_json(body, reply), headers={"request-id": "req_fake"})


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
        for i, piece in enumerate(word_pieces(turn.text)):
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
