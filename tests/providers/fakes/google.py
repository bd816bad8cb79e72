"""A local Gemini API (``generativelanguage`` v1beta REST) speaking the real wire format.

``POST /v1beta/models/{model}:generateContent`` answers one ``GenerateContentResponse`` JSON;
``:streamGenerateContent?alt=sse`` answers an SSE stream of them (``data: {...}`` per chunk). Errors are the
Google JSON error envelope (``{"error": {"code", "message", "status"}}``). Requests are recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.providers.fakes._base import (
    Failure,
    Recorded,
    ScriptedServer,
    retry_after_headers,
    sse,
    stream,
    word_pieces,
)

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
class ApiError(Failure):
    """A Google error with ``details`` (``google.rpc.RetryInfo``, ``google.rpc.ErrorInfo``, ...)."""

    details: list[dict[str, Any]] = field(default_factory=list)


def retry_info(delay: str) -> dict[str, Any]:
    """The ``google.rpc.RetryInfo`` detail Gemini puts in a 429 body (``delay`` like ``"0.05s"``)."""
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


def error_info(reason: str) -> dict[str, Any]:
    """The ``google.rpc.ErrorInfo`` detail, e.g. ``API_KEY_INVALID`` on a 400."""
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"},
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
    stall_after: int | None = None
    """Stop sending (without closing) after this many SSE chunks, for ``stall_s``."""
    stall_s: float = 1.5


@dataclass
class Blocked:
    """A prompt the safety filter refuses: no candidates, only ``promptFeedback.blockReason``."""

    reason: str = "SAFETY"


class FakeGemini(ScriptedServer[Turn | Failure | Blocked]):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Recorded] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/{version}/models/{target}", self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(Recorded.of(request, body))
        model, _, method = request.match_info["target"].partition(":")
        reply = self.next_reply(Turn(text="ok"))
        if isinstance(reply, Failure):
            headers = retry_after_headers(reply.retry_after, "retry-after")
            error = {
                "code": reply.status,
                "message": reply.message,
                "status": _STATUS_NAMES.get(reply.status, "UNKNOWN"),
            }
            if isinstance(reply, ApiError) and reply.details:
                error["details"] = reply.details
            return web.json_response({"error": error}, status=reply.status, headers=headers)
        if isinstance(reply, Blocked):
            blocked = {
                "promptFeedback": {"blockReason": reply.reason},
                "usageMetadata": {"promptTokenCount": 4},
            }
            if method == "generateContent":
                return web.json_response(blocked)
            return await stream(request, [sse(blocked, newline="\r\n")], content_type="text/event-stream")
        if method == "generateContent":
            return web.json_response(_response(model, reply, reply.text, reply.function_calls, final=True))
        if method != "streamGenerateContent" or request.query.get("alt") != "sse":
            return web.json_response({"error": {"code": 404, "message": "no such method"}}, status=404)
        return await stream(
            request,
            (sse(chunk, newline="\r\n") for chunk in _chunks(model, reply)),
            content_type="text/event-stream",
            cut_after=reply.cut_after,
            stall_after=reply.stall_after,
            stall_s=reply.stall_s,
        )


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
    pieces = word_pieces(turn.text)
    chunks: list[dict[str, Any]] = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1 and not turn.function_calls
        chunks.append(_response(model, turn, piece, [], final=last))
    if turn.function_calls or not pieces:
        chunks.append(_response(model, turn, "", turn.function_calls, final=True))
    return chunks
