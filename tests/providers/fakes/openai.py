"""A local OpenAI-compatible API speaking the real wire format.

Routes (under ``/v1``): ``POST /chat/completions`` (JSON, or SSE ``chat.completion.chunk`` events ending in
``data: [DONE]`` when ``"stream": true``), ``POST /audio/transcriptions`` (multipart form; ``json``, ``text``
or ``verbose_json``) and ``POST /audio/speech`` (the audio body, chunked). Tests script semantic replies
(:class:`ChatTurn`, :class:`Transcript`, :class:`Speech`, :class:`Failure`) per route; every request is
recorded (headers, JSON body or form fields) for payload assertions. The same server stands in for
OpenRouter, LM Studio, faster-whisper-server and any OpenAI-compatible endpoint.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.providers.fakes._base import (
    Failure,
    FakeServer,
    Raw,
    Recorded,
    byte_pieces,
    even_pieces,
    retry_after_headers,
    sse,
    stream,
)

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_denied",
    404: "invalid_request_error",
    429: "rate_limit_exceeded",
    500: "server_error",
    503: "server_error",
}


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]
    pieces: int = 3
    """Stream the JSON arguments in this many pieces."""


@dataclass
class ChatTurn:
    """One assistant answer. ``cut_after`` drops the connection after that many SSE events."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 11
    completion_tokens: int = 5
    cut_after: int | None = None
    text_pieces: int = 3
    stall_s: float = 0.0
    """Wait this long before answering (to trigger client timeouts)."""
    stream_error: dict[str, Any] | None = None
    """Inside the 200 stream, after ``error_after`` events, send this ``{"error": {...}}`` data event (as
    OpenAI and OpenRouter do) and end the stream."""
    error_after: int = 1


@dataclass
class Transcript:
    text: str
    language: str = "english"
    duration: float = 1.5


@dataclass
class Speech:
    """An audio body streamed in ``chunk_size`` pieces; ``cut_after`` drops the connection after that many."""

    audio: bytes
    content_type: str = "application/octet-stream"
    chunk_size: int = 1000
    cut_after: int | None = None


Reply = ChatTurn | Transcript | Speech | Failure | Raw


class FakeOpenAI(FakeServer):
    """An aiohttp server on an ephemeral port; ``base_url`` (ending in ``/v1``) is set once started."""

    client_max_size = 64 * 1024 * 1024

    def __init__(self, *, api_key: str | None = None, prefix: str = "/v1") -> None:
        super().__init__()
        self.requests: list[Recorded] = []
        self.scripts: dict[str, deque[Reply]] = {"chat": deque(), "transcribe": deque(), "speech": deque()}
        self.api_key = api_key
        self.prefix = prefix
        self.base_path = prefix

    def push_chat(self, *replies: ChatTurn | Failure | Raw) -> None:
        self.scripts["chat"].extend(replies)

    def push_transcript(self, *replies: Transcript | Failure | Raw) -> None:
        self.scripts["transcribe"].extend(replies)

    def push_speech(self, *replies: Speech | Failure | Raw) -> None:
        self.scripts["speech"].extend(replies)

    def routes(self, app: web.Application) -> None:
        app.router.add_post(self.prefix + "/chat/completions", self._chat)
        app.router.add_post(self.prefix + "/audio/transcriptions", self._transcribe)
        app.router.add_post(self.prefix + "/audio/speech", self._speech)

    # ------------------------------------------------------------------------------------------ helpers

    def _next(self, route: str, default: Reply) -> Reply:
        script = self.scripts[route]
        return script.popleft() if script else default

    def _auth_failure(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(Failure(401, "Incorrect API key provided."))
        return None

    # ------------------------------------------------------------------------------------------ routes

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(Recorded.of(request, body))
        denied = self._auth_failure(request)
        if denied is not None:
            return denied
        reply = self._next("chat", ChatTurn(text="Hello there!"))
        if isinstance(reply, Failure):
            return _error(reply)
        if isinstance(reply, Raw):
            return reply.response()
        assert isinstance(reply, ChatTurn)
        if reply.stall_s:
            await asyncio.sleep(reply.stall_s)
        model = body.get("model", "gpt-test")
        if not body.get("stream"):
            return web.json_response(_completion(reply, model))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        events = [sse(event) for event in _chunks(reply, model, include_usage)]
        if reply.stream_error is not None:
            events = [*events[: reply.error_after], sse(reply.stream_error)]
        return await stream(
            request,
            events,
            content_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
            cut_after=reply.cut_after,
            trailer=sse("[DONE]"),
        )

    async def _transcribe(self, request: web.Request) -> web.Response:
        form: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        reader = await request.multipart()
        async for part in reader:
            if part.filename:  # type: ignore[union-attr]
                files[part.name or "file"] = bytes(await part.read())  # type: ignore[union-attr]
            else:
                form[part.name or ""] = await part.text()  # type: ignore[union-attr]
        self.requests.append(Recorded.of(request, form, files))
        denied = self._auth_failure(request)
        if denied is not None:
            return denied
        reply = self._next("transcribe", Transcript("hello world"))
        if isinstance(reply, Failure):
            return _error(reply)
        if isinstance(reply, Raw):
            return reply.response()
        assert isinstance(reply, Transcript)
        fmt = form.get("response_format", "json")
        if fmt == "text":
            return web.Response(text=reply.text + "\n", content_type="text/plain")
        if fmt == "verbose_json":
            return web.json_response(
                {
                    "task": "transcribe",
                    "language": reply.language,
                    "duration": reply.duration,
                    "text": reply.text,
                    "segments": [],
                }
            )
        return web.json_response({"text": reply.text})

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(Recorded.of(request, body))
        denied = self._auth_failure(request)
        if denied is not None:
            return denied
        reply = self._next("speech", Speech(b"\x01\x00" * 2400))
        if isinstance(reply, Failure):
            return _error(reply)
        if isinstance(reply, Raw):
            return reply.response()
        assert isinstance(reply, Speech)
        return await stream(
            request,
            byte_pieces(reply.audio, reply.chunk_size),
            content_type=reply.content_type,
            chunked=True,
            cut_after=reply.cut_after,
        )


# ---------------------------------------------------------------------------------------------- rendering


def _error(failure: Failure) -> web.Response:
    headers = retry_after_headers(failure.retry_after)
    payload = {
        "error": {
            "message": failure.message,
            "type": _ERROR_TYPES.get(failure.status, "server_error"),
            "param": None,
            "code": None,
        }
    }
    return web.json_response(payload, status=failure.status, headers=headers)


def _finish(turn: ChatTurn) -> str:
    return turn.finish_reason or ("tool_calls" if turn.tool_calls else "stop")


def _completion(turn: ChatTurn, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": turn.text or None, "refusal": None}
    if turn.tool_calls:
        message["tool_calls"] = [
            {
                "id": tc.id,
                "type": "function",
                "function": {"name": tc.name, "arguments": json.dumps(tc.arguments)},
            }
            for tc in turn.tool_calls
        ]
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": _finish(turn)}],
        "usage": {
            "prompt_tokens": turn.prompt_tokens,
            "completion_tokens": turn.completion_tokens,
            "total_tokens": turn.prompt_tokens + turn.completion_tokens,
        },
    }


def _chunks(turn: ChatTurn, model: str, include_usage: bool) -> list[dict[str, Any]]:
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            out["usage"] = None
        return out

    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": piece}) for piece in even_pieces(turn.text, turn.text_pieces)]
    for index, tc in enumerate(turn.tool_calls):
        events.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": tc.id,
                            "type": "function",
                            "function": {"name": tc.name, "arguments": ""},
                        }
                    ]
                }
            )
        )
        for piece in even_pieces(json.dumps(tc.arguments), tc.pieces):
            events.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
    events.append(chunk({}, _finish(turn)))
    if include_usage:
        events.append(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": {
                    "prompt_tokens": turn.prompt_tokens,
                    "completion_tokens": turn.completion_tokens,
                    "total_tokens": turn.prompt_tokens + turn.completion_tokens,
                },
            }
        )
    return events


__all__ = ["ChatTurn", "Failure", "FakeOpenAI", "Raw", "Recorded", "Speech", "ToolCall", "Transcript"]
