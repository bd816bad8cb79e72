"""A local Bedrock runtime (``POST /model/{modelId}/converse`` and ``/converse-stream``) on the real wire.

``converse`` answers the Converse JSON; ``converse-stream`` answers the AWS event stream
(``application/vnd.amazon.eventstream``) with ``:event-type`` headers ``messageStart``, ``contentBlockStart``,
``contentBlockDelta``, ``contentBlockStop``, ``messageStop`` and ``metadata``. HTTP errors use the
``x-amzn-ErrorType`` header and a ``{"message"}`` body as the service does. Requests (with their SigV4
headers) are recorded.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.providers.fakes._base import (
    Failure,
    ScriptedServer,
    ToolUse,
    retry_after_headers,
    stream,
    word_pieces,
)
from tests.providers.fakes._base import Recorded as BaseRecorded
from tests.providers.fakes.aws_eventstream import event, exception

_ERROR_TYPES = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}


@dataclass
class Turn:
    text: str = ""
    tool_uses: list[ToolUse] = field(default_factory=list)
    stop_reason: str | None = None
    input_tokens: int = 14
    output_tokens: int = 6
    cut_after: int | None = None
    """Drop the connection after this many event-stream messages."""
    delay_s: float = 0.0
    """Wait this long before answering (to trip the client's read timeout)."""
    stream_exception: str | None = None
    """Send this modelled exception (e.g. ``throttlingException``) after the first text delta."""


@dataclass
class Recorded(BaseRecorded):
    model_id: str = ""


class FakeBedrock(ScriptedServer[Turn | Failure]):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Recorded] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/model/{model_id}/converse", self._converse)
        app.router.add_post("/model/{model_id}/converse-stream", self._converse_stream)

    @property
    def endpoint_url(self) -> str:
        """What boto's ``endpoint_url`` takes (set once started)."""
        return self.base_url

    async def _next(self, request: web.Request) -> Turn | Failure:
        body = await request.json()
        base = BaseRecorded.of(request, body)
        self.requests.append(Recorded(**vars(base), model_id=request.match_info["model_id"]))
        reply = self.next_reply(Turn(text="ok"))
        if isinstance(reply, Turn) and reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        return reply

    @staticmethod
    def _failure(reply: Failure) -> web.Response:
        kind = _ERROR_TYPES.get(reply.status, "InternalServerException")
        headers = {
            "x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            **retry_after_headers(reply.retry_after),
        }
        return web.json_response({"message": reply.message}, status=reply.status, headers=headers)

    async def _converse(self, request: web.Request) -> web.Response:
        reply = await self._next(request)
        if isinstance(reply, Failure):
            return self._failure(reply)
        content: list[dict[str, Any]] = []
        if reply.text:
            content.append({"text": reply.text})
        for use in reply.tool_uses:
            content.append({"toolUse": {"toolUseId": use.id, "name": use.name, "input": use.input}})
        return web.json_response(
            {
                "output": {"message": {"role": "assistant", "content": content}},
                "stopReason": _stop_reason(reply),
                "usage": {
                    "inputTokens": reply.input_tokens,
                    "outputTokens": reply.output_tokens,
                    "totalTokens": reply.input_tokens + reply.output_tokens,
                },
                "metrics": {"latencyMs": 42},
            }
        )

    async def _converse_stream(self, request: web.Request) -> web.StreamResponse:
        reply = await self._next(request)
        if isinstance(reply, Failure):
            return self._failure(reply)
        return await stream(
            request,
            _frames(reply),
            content_type="application/vnd.amazon.eventstream",
            cut_after=reply.cut_after,
        )


def _stop_reason(turn: Turn) -> str:
    return turn.stop_reason or ("tool_use" if turn.tool_uses else "end_turn")


def _frames(turn: Turn) -> list[bytes]:
    frames = [event("messageStart", {"role": "assistant"})]
    index = 0
    if turn.text:
        for i, piece in enumerate(word_pieces(turn.text)):
            frames.append(event("contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": piece}}))
            if i == 0 and turn.stream_exception:
                frames.append(exception(turn.stream_exception, "Too many requests, please wait."))
        frames.append(event("contentBlockStop", {"contentBlockIndex": index}))
        index += 1
    for use in turn.tool_uses:
        frames.append(
            event(
                "contentBlockStart",
                {"contentBlockIndex": index, "start": {"toolUse": {"toolUseId": use.id, "name": use.name}}},
            )
        )
        raw = json.dumps(use.input)
        for i in range(0, len(raw), 6):
            frames.append(
                event(
                    "contentBlockDelta",
                    {"contentBlockIndex": index, "delta": {"toolUse": {"input": raw[i : i + 6]}}},
                )
            )
        frames.append(event("contentBlockStop", {"contentBlockIndex": index}))
        index += 1
    frames.append(event("messageStop", {"stopReason": _stop_reason(turn)}))
    frames.append(
        event(
            "metadata",
            {
                "usage": {
                    "inputTokens": turn.input_tokens,
                    "outputTokens": turn.output_tokens,
                    "totalTokens": turn.input_tokens + turn.output_tokens,
                },
                "metrics": {"latencyMs": 42},
            },
        )
    )
    return frames
