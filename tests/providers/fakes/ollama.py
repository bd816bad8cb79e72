"""A local Ollama server speaking its native API: ``POST /api/chat`` with NDJSON streaming.

Each streamed line is a JSON object (``message`` with a ``content`` piece, or whole ``tool_calls`` with
arguments as objects); the last has ``done: true``, ``done_reason`` and the token counts. Errors are
``{"error": "..."}`` with the HTTP status, or an ``error`` line mid-stream. Requests are recorded.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from multidict import CIMultiDict


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


@dataclass
class OllamaFailure:
    status: int
    message: str = "failure"
    retry_after: str | None = None


@dataclass
class Recorded:
    method: str
    path: str
    headers: Mapping[str, str]
    body: dict[str, Any]


class FakeOllama:
    """An aiohttp server on an ephemeral port; ``base_url`` is set once started."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.script: deque[OllamaTurn | OllamaFailure] = deque()
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    def push(self, *replies: OllamaTurn | OllamaFailure) -> None:
        self.script.extend(replies)

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/api/chat", self._chat)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(Recorded(request.method, request.path, CIMultiDict(request.headers), body))
        reply = self.script.popleft() if self.script else OllamaTurn(text="Hello from Ollama.")
        if isinstance(reply, OllamaFailure):
            headers = {"Retry-After": reply.retry_after} if reply.retry_after is not None else {}
            return web.json_response({"error": reply.message}, status=reply.status, headers=headers)
        model = body.get("model", "llama3.2")
        lines = _lines(reply, model)
        if body.get("stream", True) is False:
            return web.json_response(_whole(reply, model))
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i, line in enumerate(lines):
            if reply.cut_after is not None and i >= reply.cut_after:
                await asyncio.sleep(0.01)
                if request.transport is not None:
                    request.transport.close()
                return resp
            if reply.stall_after is not None and i >= reply.stall_after:
                await asyncio.sleep(1.5)
                return resp
            if reply.error_after is not None and i >= reply.error_after:
                await resp.write(
                    json.dumps({"error": "model runner has unexpectedly stopped"}).encode() + b"\n"
                )
                await resp.write_eof()
                return resp
            await resp.write(json.dumps(line).encode() + b"\n")
            await asyncio.sleep(0)
        await resp.write_eof()
        return resp


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
    text = turn.text
    if text:
        step = max(1, -(-len(text) // max(1, turn.text_pieces)))
        for i in range(0, len(text), step):
            lines.append(
                {
                    "model": model,
                    "created_at": _now(),
                    "message": {"role": "assistant", "content": text[i : i + step]},
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
