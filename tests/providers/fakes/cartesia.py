"""A local Cartesia TTS WebSocket (``GET /tts/websocket``) on the real wire.

Authentication is ``Authorization: Bearer <key>`` with a ``Cartesia-Version`` header (what the SDK sends); a
bad key is refused at the handshake with 401. Each client message is a generation request (``context_id``,
``model_id``, ``transcript``, ``voice: {"mode": "id", "id"}``, ``output_format`` ``raw``/``pcm_s16le``,
``continue``, ``add_timestamps``, ...) or ``{"context_id", "cancel": true}``. Transcripts of one context are
concatenated verbatim (continuation); the fake speaks each new piece at once as ``chunk`` messages (base64
PCM, ``status_code`` 206, ``step_time``) and, with ``add_timestamps``, a ``timestamps`` message whose
``word_timestamps`` ``{words, start, end}`` count seconds from the start of the context. ``continue: false``
ends the context with ``{"type": "done", "done": true, "status_code": 206}``. Errors are ``{"type": "error",
"done": true, "status_code", "title", "message", "error_code", "context_id"}``.

The audio for a piece is a 440 Hz tone of 10 ms per character, so tests can check it exactly.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from multidict import CIMultiDict

from tests.providers.fakes._audio import sine_pcm16
from tests.providers.fakes._base import FakeServer, byte_pieces, cut

MS_PER_CHAR = 10


def tone(n_chars: int, rate: int) -> bytes:
    """The PCM16 the fake speaks for ``n_chars`` characters at ``rate``."""
    return sine_pcm16(n_chars * MS_PER_CHAR * rate // 1000, rate, freq=440, amplitude=8000)


@dataclass
class Context:
    context_id: str
    transcript: str = ""
    seconds: float = 0.0
    cancelled: bool = False
    done: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Connection:
    headers: CIMultiDict[str]
    query: dict[str, str]
    contexts: dict[str, Context] = field(default_factory=dict)
    closed_by_client: bool = False


class FakeCartesia(FakeServer):
    def __init__(self, api_key: str = "sk_car_test", chunk_bytes: int = 2400) -> None:
        super().__init__()
        self.api_key = api_key
        self.chunk_bytes = chunk_bytes
        self.connections: list[Connection] = []
        self.reject_status: list[int] = []
        """Refuse the next handshakes with these HTTP statuses (one per connection)."""
        self.error_for: dict[str, tuple[int, str, str]] = {}
        """A transcript containing the key is answered with this (status, title, message) error."""
        self.drop_after_chunks: int | None = None
        """Drop the connection (no close frame) after this many chunk messages on it."""
        self.close_with: tuple[int, str] | None = None
        """Close the socket with (code, reason) instead of answering the next request."""
        self.stall = False
        """Take requests but never answer (a stuck service)."""
        self.ws_base_url = ""

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/tts/websocket", self._socket)

    async def start(self) -> str:
        base_url = await super().start()
        self.ws_base_url = "ws://" + base_url.removeprefix("http://")
        return base_url

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        if self.reject_status:
            status = self.reject_status.pop(0)
            return web.json_response({"error": f"refused with {status}"}, status=status)
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": "Invalid API key"}, status=401)
        if not request.headers.get("Cartesia-Version"):
            return web.json_response({"error": "Cartesia-Version header is required"}, status=400)
        connection = Connection(CIMultiDict(request.headers), dict(request.query))
        self.connections.append(connection)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        chunks_sent = 0

        async def send(message: dict[str, Any]) -> None:
            await ws.send_str(json.dumps(message))

        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            context_id = data.get("context_id", "")
            context = connection.contexts.setdefault(context_id, Context(context_id))
            context.requests.append(data)
            if data.get("cancel"):
                context.cancelled = True
                continue
            if self.stall:
                continue
            if self.close_with is not None:
                code, reason = self.close_with
                await ws.close(code=code, message=reason.encode())
                return ws
            piece = data.get("transcript", "")
            for key, (status, title, message) in self.error_for.items():
                if key in piece:
                    await send(
                        {
                            "type": "error",
                            "done": True,
                            "status_code": status,
                            "title": title,
                            "message": message,
                            "error_code": title.lower().replace(" ", "_"),
                            "context_id": context_id,
                        }
                    )
                    piece = ""
                    context.done = True
            if context.done:
                continue
            context.transcript += piece
            rate = data["output_format"]["sample_rate"]
            if piece:
                if data.get("add_timestamps"):
                    await send(_timestamps(context_id, piece, context.seconds))
                for audio in byte_pieces(tone(len(piece), rate), self.chunk_bytes):
                    if context.cancelled:
                        break
                    await send(
                        {
                            "type": "chunk",
                            "data": base64.b64encode(audio).decode(),
                            "done": False,
                            "status_code": 206,
                            "step_time": 12.5,
                            "context_id": context_id,
                        }
                    )
                    chunks_sent += 1
                    if self.drop_after_chunks is not None and chunks_sent >= self.drop_after_chunks:
                        await cut(request)
                        return ws
                context.seconds += len(piece) * MS_PER_CHAR / 1000
            if data.get("continue") is False:
                context.done = True
                await send({"type": "done", "done": True, "status_code": 206, "context_id": context_id})
        connection.closed_by_client = True
        return ws


def _timestamps(context_id: str, piece: str, offset: float) -> dict[str, Any]:
    words: list[str] = []
    starts: list[float] = []
    ends: list[float] = []
    position = 0
    for word in piece.split():
        index = piece.index(word, position)
        position = index + len(word)
        words.append(word)
        starts.append(round(offset + index * MS_PER_CHAR / 1000, 3))
        ends.append(round(offset + position * MS_PER_CHAR / 1000, 3))
    return {
        "type": "timestamps",
        "done": False,
        "status_code": 206,
        "context_id": context_id,
        "word_timestamps": {"words": words, "start": starts, "end": ends},
    }
