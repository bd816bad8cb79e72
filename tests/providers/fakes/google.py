"""A local Gemini API (``generativelanguage`` v1beta REST) speaking the real wire format.

``POST /v1beta/models/{model}:generateContent`` answers one ``GenerateContentResponse`` JSON;
``:streamGenerateContent?alt=sse`` answers an SSE stream of them (``data: {...}`` per chunk). Errors are the
Google JSON error envelope (``{"error": {"code", "message", "status"}}``). Requests are recorded.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


@dataclass
class FunctionCall:
    name: str
    args: dict[str, Any]
    id: str | None = None


@dataclass
class Turn:
    """One model answer; streamed as one chunk per word, then the function calls, then the finish."""

    text: str = ""
    function_calls: list[FunctionCall] = field(default_factory=list)
    finish_reason: str = "STOP"
    prompt_tokens: int = 11
    output_tokens: int = 5
    cut_after: int | None = None
    """Drop the connection after this many SSE chunks."""


@dataclass
class Blocked:
    """A prompt the safety filter refuses: no candidates, only ``promptFeedback.blockReason``."""

    reason: str = "SAFETY"


@dataclass
class Failure:
    status: int
    message: str = "failure"
    retry_after: str | None = None


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any]


class FakeGemini:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.script: deque[Turn | Failure | Blocked] = deque()
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    def push(self, *replies: Turn | Failure | Blocked) -> None:
        self.script.extend(replies)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/{version}/models/{target}", self._handle)
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

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(
            Recorded(request.method, request.path, dict(request.query), dict(request.headers), body)
        )
        model, _, method = request.match_info["target"].partition(":")
        reply = self.script.popleft() if self.script else Turn(text="ok")
        if isinstance(reply, Failure):
            headers = {"retry-after": reply.retry_after} if reply.retry_after is not None else {}
            error = {
                "code": reply.status,
                "message": reply.message,
                "status": _STATUS_NAMES.get(reply.status, "UNKNOWN"),
            }
            return web.json_response({"error": error}, status=reply.status, headers=headers)
        if isinstance(reply, Blocked):
            blocked = {
                "promptFeedback": {"blockReason": reply.reason},
                "usageMetadata": {"promptTokenCount": 4},
            }
            if method == "generateContent":
                return web.json_response(blocked)
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(b"data: " + json.dumps(blocked).encode() + b"\r\n\r\n")
            await resp.write_eof()
            return resp
        if method == "generateContent":
            return web.json_response(_response(model, reply, reply.text, reply.function_calls, final=True))
        if method != "streamGenerateContent" or request.query.get("alt") != "sse":
            return web.json_response({"error": {"code": 404, "message": "no such method"}}, status=404)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for count, chunk in enumerate(_chunks(model, reply)):
            if reply.cut_after is not None and count >= reply.cut_after:
                assert request.transport is not None
                request.transport.close()
                return resp
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n")
            await asyncio.sleep(0)
        await resp.write_eof()
        return resp


def _response(model: str, turn: Turn, text: str, calls: list[FunctionCall], *, final: bool) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if text:
        parts.append({"text": text})
    for call in calls:
        fc: dict[str, Any] = {"name": call.name, "args": call.args}
        if call.id:
            fc["id"] = call.id
        parts.append({"functionCall": fc})
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if final:
        candidate["finishReason"] = turn.finish_reason
    usage: dict[str, Any] = {"promptTokenCount": turn.prompt_tokens}
    if final:
        usage.update(
            candidatesTokenCount=turn.output_tokens, totalTokenCount=turn.prompt_tokens + turn.output_tokens
        )
    return {
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": "resp-fake",
    }


def _chunks(model: str, turn: Turn) -> list[dict[str, Any]]:
    words = turn.text.split(" ") if turn.text else []
    pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
    chunks: list[dict[str, Any]] = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1 and not turn.function_calls
        chunks.append(_response(model, turn, piece, [], final=last))
    if turn.function_calls or not pieces:
        chunks.append(_response(model, turn, "", turn.function_calls, final=True))
    return chunks
