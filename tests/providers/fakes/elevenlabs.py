"""A local ElevenLabs API: HTTP streaming TTS and the realtime ``stream-input`` WebSocket, on the real wire.

* ``POST /v1/text-to-speech/{voice_id}/stream?output_format=...`` answers chunked audio in the asked format
  (``pcm_<rate>``: raw PCM16; ``mp3_<rate>_<kbps>``: a real MP3 encoded with PyAV). Errors use the
  ``{"detail": {"status", "message"}}`` body.
* ``GET /v1/text-to-speech/{voice_id}/multi-stream-input`` is the multi-context realtime socket (key in the
  ``xi-api-key`` header): ``{"text": " ", "context_id", "voice_settings"}`` opens a context; text messages add
  to it and are synthesised on ``flush`` (or once ``generate_at`` characters are pending); ``{"text": "",
  "context_id"}`` is the keep-alive; ``{"context_id", "close_context": true}`` speaks what is left and answers
  ``{"isFinal": true, "contextId"}``; ``{"close_socket": true}`` ends the connection. Audio messages are
  ``{"audio": <base64>, "alignment", "normalizedAlignment", "contextId"}``. A bad key closes with 1008; with
  no message for ``inactivity_timeout`` seconds the service sends an ``input_timeout_exceeded`` error and
  closes with 1008, as the real one does.

The audio for a text is a deterministic 440 Hz tone of 10 ms per character, so tests can check it exactly.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.providers.fakes._audio import encode_pcm16, sine_pcm16
from tests.providers.fakes._base import (
    Raw,
    Recorded,
    ScriptedServer,
    byte_pieces,
    cut,
    retry_after_headers,
    stream,
)

MS_PER_CHAR = 10


def tone(n_chars: int, rate: int) -> bytes:
    """The PCM16 the fake speaks for ``n_chars`` characters at ``rate``."""
    return sine_pcm16(n_chars * MS_PER_CHAR * rate // 1000, rate, freq=440, amplitude=8000)


def encode_mp3(pcm: bytes, rate: int, kbps: int) -> bytes:
    return encode_pcm16(pcm, rate, container="mp3", codec="libmp3lame", bit_rate=kbps * 1000)


def render(text: str, output_format: str) -> bytes:
    codec, rate, *rest = output_format.split("_")
    pcm = tone(len(text), int(rate))
    if codec == "pcm":
        return pcm
    if codec == "mp3":
        return encode_mp3(pcm, int(rate), int(rest[0]) if rest else 128)
    raise ValueError(f"the fake does not speak {output_format}")


@dataclass
class Failure:
    status: int
    detail_status: str = "error"
    message: str = "failure"
    retry_after: str | None = None


@dataclass
class Speech:
    """A normal HTTP answer; ``cut_after`` bytes drops the connection mid-body."""

    cut_after: int | None = None


@dataclass
class SocketSession:
    """What one realtime connection received and sent, in order."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    received: list[dict[str, Any]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    """``"text:<ctx>:<piece>"`` per text received, ``"audio:<ctx>"`` per audio sent, ``"final:<ctx>"``,
    ``"keepalive:<ctx>"``, ``"close_context:<ctx>"``."""
    closed_by_client: bool = False
    close: tuple[int, str] | None = None
    """The close code and reason the fake sent, if it closed the socket."""

    def texts(self, context_id: str | None = None) -> list[str]:
        """The text pieces received (for one context, or all), keep-alives and opening spaces left out."""
        return [
            m["text"]
            for m in self.received
            if m.get("text", "").strip() and (context_id is None or m.get("context_id") == context_id)
        ]

    def contexts(self) -> list[str]:
        """Context ids in the order they were opened."""
        return [m["context_id"] for m in self.received if m.get("text") == " " and "context_id" in m]


@dataclass
class CloseAfter:
    """Close the socket with ``code``/``reason`` once ``messages`` messages arrived on it (0: at once)."""

    messages: int
    code: int = 1008
    reason: str = "something went wrong"


class FakeElevenLabs(ScriptedServer[Speech | Failure]):
    def __init__(self, api_key: str = "xi-test-key", chunk_bytes: int = 777) -> None:
        super().__init__()
        self.api_key = api_key
        self.chunk_bytes = chunk_bytes
        self.requests: list[Recorded] = []
        self.sessions: list[SocketSession] = []
        self.http_raw: list[Raw] = []
        """Off-script HTTP answers, used first (a 200 that is not audio)."""
        self.ws_cut_after_audio: int | None = None
        """Drop the realtime connection (no close frame) after this many audio messages."""
        self.ws_stall_after_close: bool = False
        """Never answer a context's close (a stuck service)."""
        self.ws_reject_status: int | None = None
        """Refuse the WebSocket handshake with this HTTP status."""
        self.ws_close: list[CloseAfter] = []
        """Scripted closes, one per connection in order (connections after them behave)."""
        self.inactivity_s: float | None = None
        """Close idle sockets after this many seconds whatever the client asked (a service with a shorter
        timeout, or one that was restarted)."""
        self.generate_at = 50
        """Synthesise pending text once this many characters wait, as the service's chunk schedule does."""
        self.ws_base_url = ""

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/text-to-speech/{voice_id}/stream", self._http_stream)
        app.router.add_get("/v1/text-to-speech/{voice_id}/multi-stream-input", self._multi_stream_input)

    async def start(self) -> str:
        base_url = await super().start()
        self.ws_base_url = "ws://" + base_url.removeprefix("http://")
        return base_url

    # ------------------------------------------------------------------------------------------ HTTP

    async def _http_stream(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(Recorded.of(request, body))
        if self.http_raw:
            return self.http_raw.pop(0).response()
        reply = self.next_reply(Speech())
        if isinstance(reply, Failure):
            headers = retry_after_headers(reply.retry_after, "retry-after")
            detail = {"status": reply.detail_status, "message": reply.message}
            return web.json_response({"detail": detail}, status=reply.status, headers=headers)
        if request.headers.get("xi-api-key") != self.api_key:
            detail = {"status": "invalid_api_key", "message": "Invalid API key"}
            return web.json_response({"detail": detail}, status=401)
        output_format = request.query.get("output_format", "mp3_44100_128")
        audio = render(body["text"], output_format)
        content_type = "audio/mpeg" if output_format.startswith("mp3") else "audio/pcm"
        pieces = byte_pieces(audio, self.chunk_bytes)
        return await stream(
            request,
            pieces,
            content_type=content_type,
            headers={"request-id": "req-fake"},
            cut_after=_whole_pieces_within(pieces, reply.cut_after),
        )

    # ------------------------------------------------------------------------------------------ WebSocket

    async def _multi_stream_input(self, request: web.Request) -> web.StreamResponse:
        if self.ws_reject_status is not None:
            detail = {"status": "rejected", "message": f"handshake refused with {self.ws_reject_status}"}
            return web.json_response({"detail": detail}, status=self.ws_reject_status)
        session = SocketSession(request.path, dict(request.query), dict(request.headers))
        self.sessions.append(session)
        closer = self.ws_close.pop(0) if self.ws_close else None
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        output_format = request.query.get("output_format", "mp3_44100_128")
        inactivity = self.inactivity_s or float(request.query.get("inactivity_timeout", "20"))
        pending: dict[str, str] = {}
        audio_sent = 0

        async def close(code: int, reason: str) -> web.WebSocketResponse:
            session.close = (code, reason)
            await ws.close(code=code, message=reason.encode())
            return ws

        async def speak(context_id: str) -> bool:
            nonlocal audio_sent
            text = pending.get(context_id, "")
            pending[context_id] = ""
            if not text.strip():
                return True
            chars = list(text)
            alignment = {
                "chars": chars,
                "charStartTimesMs": [i * MS_PER_CHAR for i in range(len(chars))],
                "charDurationsMs": [MS_PER_CHAR] * len(chars),
            }
            message = {
                "audio": base64.b64encode(render(text, output_format)).decode(),
                "normalizedAlignment": alignment,
                "alignment": alignment,
                "contextId": context_id,
            }
            await ws.send_str(json.dumps(message))
            session.log.append(f"audio:{context_id}")
            audio_sent += 1
            if self.ws_cut_after_audio is not None and audio_sent >= self.ws_cut_after_audio:
                await cut(request)
                return False
            return True

        if request.headers.get("xi-api-key") != self.api_key:
            return await close(1008, "invalid_api_key: Invalid API key")
        if closer is not None and closer.messages == 0:
            return await close(closer.code, closer.reason)
        while True:
            try:
                msg = await ws.receive(timeout=inactivity)
            except TimeoutError:
                reason = f"Have not received new text in the last {inactivity:g} seconds. Closing the socket."
                error = {"message": reason, "error": "input_timeout_exceeded", "code": 1008}
                await ws.send_str(json.dumps(error))
                return await close(1008, reason)
            if msg.type != WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            session.received.append(data)
            if closer is not None and len(session.received) >= closer.messages:
                return await close(closer.code, closer.reason)
            if data.get("close_socket"):
                for context_id in list(pending):
                    await speak(context_id)
                    await ws.send_str(json.dumps({"isFinal": True, "contextId": context_id}))
                await ws.close()
                return ws
            context_id = data.get("context_id", "default")
            text = data.get("text")
            if text == " ":
                pending[context_id] = ""
                continue
            if text == "":
                session.log.append(f"keepalive:{context_id}")
                continue
            if context_id not in pending:
                error = {"message": f"context {context_id} does not exist", "error": "invalid_context"}
                await ws.send_str(json.dumps({**error, "contextId": context_id}))
                continue
            if text:
                session.log.append(f"text:{context_id}:{text}")
                pending[context_id] += text
            ready = data.get("flush") or len(pending[context_id]) >= self.generate_at
            if ready and not await speak(context_id):
                return ws
            if data.get("close_context"):
                session.log.append(f"close_context:{context_id}")
                if self.ws_stall_after_close:
                    continue
                if not await speak(context_id):
                    return ws
                pending.pop(context_id, None)
                await ws.send_str(json.dumps({"isFinal": True, "contextId": context_id}))
                session.log.append(f"final:{context_id}")
        session.closed_by_client = True
        return ws


def _whole_pieces_within(pieces: list[bytes], limit: int | None) -> int | None:
    """How many whole pieces fit in ``limit`` bytes (``None``: no limit)."""
    if limit is None:
        return None
    sent = 0
    for count, piece in enumerate(pieces):
        if sent + len(piece) > limit:
            return count
        sent += len(piece)
    return None
