"""A local Piper HTTP server (``python -m piper.http_server``'s API) answering WAV files.

``POST /synthesize`` takes JSON (``text``, ``voice``, ``speaker_id``, ``length_scale``) as piper-tts 1.3+
does; with ``legacy=True`` only the older ``POST /`` (raw text body) exists and ``/synthesize`` is a 404.
The WAV is sent in small pieces so clients must parse it incrementally. Requests are recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from aiohttp import web

from tests.providers.fakes._audio import sine_wav
from tests.providers.fakes._base import Recorded, ScriptedServer, byte_pieces, stream


def tone_wav(seconds: float = 0.5, rate: int = 22050, channels: int = 1) -> bytes:
    return sine_wav(seconds, rate, freq=220, amplitude=6000, channels=channels)


@dataclass
class PiperReply:
    wav: bytes = field(default_factory=tone_wav)
    chunk_size: int = 501
    cut_after: int | None = None


@dataclass
class PiperFailure:
    status: int
    message: str = "failure"


class FakePiper(ScriptedServer[PiperReply | PiperFailure]):
    def __init__(self, *, legacy: bool = False) -> None:
        super().__init__()
        self.legacy = legacy
        self.requests: list[Recorded] = []

    def routes(self, app: web.Application) -> None:
        if not self.legacy:
            app.router.add_post("/synthesize", self._synthesize)
        app.router.add_post("/", self._legacy)

    async def _synthesize(self, request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        self.requests.append(Recorded.of(request, body))
        if not str(body.get("text", "")).strip():
            return web.Response(status=500, text="ValueError: No text provided")
        return await self._answer(request)

    async def _legacy(self, request: web.Request) -> web.StreamResponse:
        text = (await request.read()).decode()
        self.requests.append(Recorded.of(request, text))
        return await self._answer(request)

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        reply = self.next_reply(PiperReply())
        if isinstance(reply, PiperFailure):
            return web.Response(status=reply.status, text=reply.message)
        return await stream(
            request,
            byte_pieces(reply.wav, reply.chunk_size),
            content_type="audio/wav",
            chunked=True,
            cut_after=reply.cut_after,
        )


__all__ = ["FakePiper", "PiperFailure", "PiperReply", "Recorded", "tone_wav"]
