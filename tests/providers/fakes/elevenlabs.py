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

import asyncio
import base64
import io
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

MS_PER_CHAR = 10


def tone(n_chars: int, rate: int) -> bytes:
    """The PCM16 the fake speaks for ``n_chars`` characters at ``rate``."""
    n = n_chars * MS_PER_CHAR * rate // 1000
    t = np.arange(n) / rate
    return bytes((np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes())


def encode_mp3(pcm: bytes, rate: int, kbps: int) -> bytes:
    import av

    out = io.BytesIO()
    with av.open(out, mode="w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=rate)
        stream.bit_rate = kbps * 1000
        stream.layout = "mono"
        samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


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
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any]


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


class FakeElevenLabs:
    def __init__(self, api_key: str = "xi-test-key", chunk_bytes: int = 777) -> None:
        self.api_key = api_key
        self.chunk_bytes = chunk_bytes
        self.requests: list[Recorded] = []
        self.sessions: list[SocketSession] = []
        self.script: deque[Speech | Failure] = deque()
        self.ws_cut_after_audio: int | None = None
        """Drop the realtime connection (no close frame) after this many audio messages."""
        self.ws_stall_after_eos = False
        """Never answer the end of input (a stuck service)."""
        self.ws_reject_status: int | None = None
        """Refuse the WebSocket handshake with this HTTP status."""
        self.base_url = ""
        self.ws_base_url = ""
        self._runner: web.AppRunner | None = None

    def push(self, *replies: Speech | Failure) -> None:
        self.script.extend(replies)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/text-to-speech/{voice_id}/stream", self._http_stream)
        app.router.add_get("/v1/text-to-speech/{voice_id}/stream-input", self._stream_input)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        self.ws_base_url = f"ws://127.0.0.1:{port}"
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------------------------------ HTTP

    async def _http_stream(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(
            Recorded(request.method, request.path, dict(request.query), dict(request.headers), body)
        )
        reply = self.script.popleft() if self.script else Speech()
        if isinstance(reply, Failure):
            headers = {"retry-after": reply.retry_after} if reply.retry_after is not None else {}
            detail = {"status": reply.detail_status, "message": reply.message}
            return web.json_response({"detail": detail}, status=reply.status, headers=headers)
        if request.headers.get("xi-api-key") != self.api_key:
            detail = {"status": "invalid_api_key", "message": "Invalid API key"}
            return web.json_response({"detail": detail}, status=401)
        output_format = request.query.get("output_format", "mp3_44100_128")
        audio = render(body["text"], output_format)
        content_type = "audio/mpeg" if output_format.startswith("mp3") else "audio/pcm"
        resp = web.StreamResponse(headers={"Content-Type": content_type, "request-id": "req-fake"})
        await resp.prepare(request)
        sent = 0
        for i in range(0, len(audio), self.chunk_bytes):
            piece = audio[i : i + self.chunk_bytes]
            if reply.cut_after is not None and sent + len(piece) > reply.cut_after:
                assert request.transport is not None
                request.transport.close()
                return resp
            await resp.write(piece)
            sent += len(piece)
            await asyncio.sleep(0)
        await resp.write_eof()
        return resp

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
                assert request.transport is not None
                request.transport.close()
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
