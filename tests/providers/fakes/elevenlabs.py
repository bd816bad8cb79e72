"""A local ElevenLabs API: HTTP streaming TTS and the realtime ``stream-input`` WebSocket, on the real wire.

* ``POST /v1/text-to-speech/{voice_id}/stream?output_format=...`` answers chunked audio in the asked format
  (``pcm_<rate>``: raw PCM16; ``mp3_<rate>_<kbps>``: a real MP3 encoded with PyAV). Errors use the
  ``{"detail": {"status", "message"}}`` body.
* ``GET /v1/text-to-speech/{voice_id}/stream-input`` is the realtime socket: the first message (``text": " "``)
  carries ``voice_settings`` and ``xi-api-key``; text messages are synthesised as they arrive when they ask for
  generation (``try_trigger_generation``/``flush``); ``{"text": ""}`` ends the input; the server answers
  ``{"audio": <base64>, "isFinal": null, "normalizedAlignment": ...}`` messages and ``{"isFinal": true}``.
  A bad key closes the socket with 1008 as the service does.

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
    """``"text:<piece>"`` for each text message received and ``"audio"`` for each audio message sent."""
    closed_by_client: bool = False


class FakeElevenLabs(ScriptedServer[Speech | Failure]):
    def __init__(self, api_key: str = "xi-test-key", chunk_bytes: int = 777) -> None:
        super().__init__()
        self.api_key = api_key
        self.chunk_bytes = chunk_bytes
        self.requests: list[Recorded] = []
        self.sessions: list[SocketSession] = []
        self.ws_cut_after_audio: int | None = None
        """Drop the realtime connection (no close frame) after this many audio messages."""
        self.ws_stall_after_eos = False
        """Never answer the end of input (a stuck service)."""
        self.ws_reject_status: int | None = None
        """Refuse the WebSocket handshake with this HTTP status."""
        self.ws_base_url = ""

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/text-to-speech/{voice_id}/stream", self._http_stream)
        app.router.add_get("/v1/text-to-speech/{voice_id}/stream-input", self._stream_input)

    async def start(self) -> str:
        base_url = await super().start()
        self.ws_base_url = "ws://" + base_url.removeprefix("http://")
        return base_url

    # ------------------------------------------------------------------------------------------ HTTP

    async def _http_stream(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(Recorded.of(request, body))
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

    async def _stream_input(self, request: web.Request) -> web.StreamResponse:
        if self.ws_reject_status is not None:
            detail = {"status": "rejected", "message": f"handshake refused with {self.ws_reject_status}"}
            return web.json_response({"detail": detail}, status=self.ws_reject_status)
        session = SocketSession(request.path, dict(request.query), dict(request.headers))
        self.sessions.append(session)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        output_format = request.query.get("output_format", "mp3_44100_128")
        pending = ""
        audio_sent = 0

        async def speak(text: str) -> bool:
            nonlocal audio_sent
            audio = render(text, output_format)
            chars = list(text)
            alignment = {
                "chars": chars,
                "charStartTimesMs": [i * MS_PER_CHAR for i in range(len(chars))],
                "charDurationsMs": [MS_PER_CHAR] * len(chars),
            }
            message = {
                "audio": base64.b64encode(audio).decode(),
                "isFinal": None,
                "normalizedAlignment": alignment,
                "alignment": alignment,
            }
            await ws.send_str(json.dumps(message))
            session.log.append("audio")
            audio_sent += 1
            if self.ws_cut_after_audio is not None and audio_sent >= self.ws_cut_after_audio:
                await cut(request)
                return False
            return True

        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            session.received.append(data)
            text = data.get("text")
            if len(session.received) == 1:
                key = data.get("xi-api-key") or request.headers.get("xi-api-key")
                if text != " " or key != self.api_key:
                    await ws.close(code=1008, message=b"invalid_api_key: Invalid API key")
                    return ws
                continue
            if text == "":
                if self.ws_stall_after_eos:
                    continue
                if pending.strip() and not await speak(pending):
                    return ws
                await ws.send_str(json.dumps({"isFinal": True}))
                await ws.close()
                return ws
            session.log.append(f"text:{text}")
            pending += text
            if (data.get("try_trigger_generation") or data.get("flush")) and pending.strip():
                if not await speak(pending):
                    return ws
                pending = ""
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
