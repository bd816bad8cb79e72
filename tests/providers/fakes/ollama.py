"""A local Ollama server speaking its native API: ``POST /api/chat`` with NDJSON streaming.

Each streamed line is a JSON object (``message`` with a ``content`` piece, or whole ``tool_calls`` with
arguments as objects); the last has ``done: true``, ``done_reason`` and the token counts. Errors are
``{"error": "..."}`` with the HTTP status, or an ``error`` line mid-stream. Requests are recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.providers.fakes._base import (
    Failure,
    Recorded,
    ScriptedServer,
    even_pieces,
    ndjson,
    retry_after_headers,
    stream,
)


@dataclass
class OllamaToolCall:
    name: str
    arguments: dict[str, Any]
    id: str | None = None


@dataclass
class OllamaTurn:
    """One answer. ``cut_after`` drops the connection after that many lines; ``error_after`` sends an
    ``{"error": ...}`` line after that many lines."""

    text: str = ""
    tool_calls: list[OllamaToolCall] = field(default_factory=list)
    done_reason: str = "stop"
    text_pieces: int = 3
    prompt_eval_count: int = 20
    eval_count: int = 8
    cut_after: int | None = None
    error_after: int | None = None
    stall_after: int | None = None
    """Stop sending (without closing) after that many lines, for 1.5 s, then hang up."""


OllamaFailure = Failure
"""An HTTP error answer: ``{"error": message}`` with the status."""


class FakeOllama(ScriptedServer[OllamaTurn | OllamaFailure]):
    """An aiohttp server on an ephemeral port; ``base_url`` is set once started."""

    client_max_size = 64 * 1024 * 1024

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Recorded] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/chat", self._chat)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(Recorded.of(request, body))
        reply = self.next_reply(OllamaTurn(text="Hello from Ollama."))
        if isinstance(reply, OllamaFailure):
            headers = retry_after_headers(reply.retry_after)
            return web.json_response({"error": reply.message}, status=reply.status, headers=headers)
        model = body.get("model", "llama3.2")
        if body.get("stream", True) is False:
            return web.json_response(_whole(reply, model))
        frames = [ndjson(line) for line in _lines(reply, model)]
        if reply.error_after is not None and reply.error_after < len(frames):
            frames = [
                *frames[: reply.error_after],
                ndjson({"error": "model runner has unexpectedly stopped"}),
            ]
        return await stream(
            request,
            frames,
            content_type="application/x-ndjson",
            chunked=True,
            cut_after=reply.cut_after,
            stall_after=reply.stall_after,
        )


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _tool_calls(turn: OllamaTurn) -> list[dict[str, Any]]:
    out = []
    for i, tc in enumerate(turn.tool_calls):
        call: dict[str, Any] = {"function": {"index": i, "name": tc.name, "arguments": tc.arguments}}
        if tc.id:
            call["id"] = tc.id
        out.append(call)
    return out


def _final(turn: OllamaTurn, model: str, message: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": model,
        "created_at": _now(),
        "message": message,
        "done": True,
        "done_reason": turn.done_reason,
        "total_duration": 4883583458,
        "load_duration": 1334875,
        "prompt_eval_count": turn.prompt_eval_count,
        "prompt_eval_duration": 342546000,
        "eval_count": turn.eval_count,
        "eval_duration": 4535599000,
    }


def _lines(turn: OllamaTurn, model: str) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for piece in even_pieces(turn.text, turn.text_pieces):
        lines.append(
            {
                "model": model,
                "created_at": _now(),
                "message": {"role": "assistant", "content": piece},
                "done": False,
            }
        )
    if turn.tool_calls:
        lines.append(
            {
                "model": model,
                "created_at": _now(),
                "message": {"role": "assistant", "content": "", "tool_calls": _tool_calls(turn)},
                "done": False,
            }
        )
    lines.append(_final(turn, model, {"role": "assistant", "content": ""}))
    return lines


def _whole(turn: OllamaTurn, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": turn.text}
    if turn.tool_calls:
        message["tool_calls"] = _tool_calls(turn)
    return _final(turn, model, message)


__all__ = ["FakeOllama", "OllamaFailure", "OllamaToolCall", "OllamaTurn", "Recorded"]
