"""A local Piper HTTP server (``python -m piper.http_server``'s API) answering WAV files.

``POST /synthesize`` takes JSON (``text``, ``voice``, ``speaker_id``, ``length_scale``) as piper-tts 1.3+
does; with ``legacy=True`` only the older ``POST /`` (raw text body) exists and ``/synthesize`` is a 404.
The WAV is sent in small pieces so clients must parse it incrementally. Requests are recorded.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import struct
import wave
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict


def tone_wav(seconds: float = 0.5, rate: int = 22050, channels: int = 1) -> bytes:
    n = int(seconds * rate)
    frames = b"".join(
        struct.pack("<h", int(6000 * math.sin(2 * math.pi * 220 * i / rate))) * channels for i in range(n)
    )
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return buf.getvalue()


@dataclass
class PiperReply:
    wav: bytes = field(default_factory=tone_wav)
    chunk_size: int = 501
    cut_after: int | None = None


@dataclass
class PiperFailure:
    status: int
    message: str = "failure"


@dataclass
class Recorded:
    path: str
    headers: Mapping[str, str]
    body: dict[str, Any] | str


class FakePiper:
    def __init__(self, *, legacy: bool = False) -> None:
        self.legacy = legacy
        self.requests: list[Recorded] = []
        self.script: deque[PiperReply | PiperFailure] = deque()
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    def push(self, *replies: PiperReply | PiperFailure) -> None:
        self.script.extend(replies)

    async def start(self) -> str:
        app = web.Application()
        if not self.legacy:
            app.router.add_post("/synthesize", self._synthesize)
        app.router.add_post("/", self._legacy)
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

    async def _synthesize(self, request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        self.requests.append(Recorded(request.path, CIMultiDict(request.headers), body))
        if not str(body.get("text", "")).strip():
            return web.Response(status=500, text="ValueError: No text provided")
        return await self._answer(request)

    async def _legacy(self, request: web.Request) -> web.StreamResponse:
        text = (await request.read()).decode()
        self.requests.append(Recorded(request.path, CIMultiDict(request.headers), text))
        return await self._answer(request)

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        reply = self.script.popleft() if self.script else PiperReply()
        if isinstance(reply, PiperFailure):
            return web.Response(status=reply.status, text=reply.message)
        resp = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i, start in enumerate(range(0, len(reply.wav), reply.chunk_size)):
            if reply.cut_after is not None and i >= reply.cut_after:
                await asyncio.sleep(0.01)
                if request.transport is not None:
                    request.transport.close()
                return resp
            await resp.write(reply.wav[start : start + reply.chunk_size])
        await resp.write_eof()
        return resp


__all__ = ["FakePiper", "PiperFailure", "PiperReply", "Recorded", "tone_wav"]
