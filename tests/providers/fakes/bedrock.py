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
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

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
class ToolUse:
    id: str
    name: str
    input: dict[str, Any]


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
class Failure:
    status: int
    message: str = "failure"
    retry_after: str | None = None


@dataclass
class Recorded:
    method: str
    path: str
    model_id: str
    headers: dict[str, str]
    body: dict[str, Any]


class FakeBedrock:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.script: deque[Turn | Failure] = deque()
        self.endpoint_url = ""
        self._runner: web.AppRunner | None = None

    def push(self, *replies: Turn | Failure) -> None:
        self.script.extend(replies)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/model/{model_id}/converse", self._converse)
        app.router.add_post("/model/{model_id}/converse-stream", self._converse_stream)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.endpoint_url = f"http://127.0.0.1:{port}"
        return self.endpoint_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _next(self, request: web.Request) -> Turn | Failure:
        body = await request.json()
        self.requests.append(
            Recorded(
                request.method, request.path, request.match_info["model_id"], dict(request.headers), body
            )
        )
        reply = self.script.popleft() if self.script else Turn(text="ok")
        if isinstance(reply, Turn) and reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        return reply

    @staticmethod
    def _failure(reply: Failure) -> web.Response:
        kind = _ERROR_TYPES.get(reply.status, "InternalServerException")
        headers = {"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"}
        if reply.retry_after is not None:
            headers["Retry-After"] = reply.retry_after
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
        resp = web.StreamResponse(headers={"Content-Type": "application/vnd.amazon.eventstream"})
        await resp.prepare(request)
        for count, frame in enumerate(_frames(reply)):
            if reply.cut_after is not None and count >= reply.cut_after:
                assert request.transport is not None
                request.transport.close()
                return resp
            await resp.write(frame)
            await asyncio.sleep(0)
        await resp.write_eof()
        return resp


def _stop_reason(turn: Turn) -> str:
    return turn.stop_reason or ("tool_use" if turn.tool_uses else "end_turn")


def _frames(turn: Turn) -> list[bytes]:
    frames = [event("messageStart", {"role": "assistant"})]
    index = 0
    if turn.text:
        words = turn.text.split(" ")
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
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
