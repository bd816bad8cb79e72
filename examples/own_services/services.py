"""Stand-ins for "your own services at :3456" of the reference's integration guide.

One HTTP server with the three endpoints the guide's providers call (``python services.py --port 3456``):

- ``POST /api/v1/audio/transcriptions``: multipart form with a WAV ``file`` (and ``model``); answers
  ``{"text": ...}``. This demo has no speech model: it answers the ``--transcript`` sentence for any speech
  (and ``""`` for audio under 0.2 s). Put your Whisper service here.
- ``POST /api/v1/chat/completions``: the OpenAI chat format, streamed as SSE with ``"stream": true``. This
  demo answers from a few rules about the last user message. Put your LangGraph (or any) service here.
- ``POST /api/v1/audio/speech``: ``{"text", "voice", "speed"}`` (not OpenAI's ``input``/``model``), answers
  a WAV (24 kHz mono PCM16), streamed as it is made. This demo voices a tone, ``ms_per_char`` per character
  divided by ``speed``. Put your Kokoro service here.

Every request body is kept in :attr:`Services.requests` (for tests).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import struct
import time
import wave
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import web

RATE = 24000


@dataclass
class Services:
    """The three demo services and what they were asked."""

    transcript: str = "What can you do for me?"
    ms_per_char: float = 55.0
    chunk_delay_s: float = 0.0
    requests: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"stt": [], "llm": [], "tts": []}
    )

    def app(self) -> web.Application:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/api/v1/audio/transcriptions", self.transcribe)
        app.router.add_post("/api/v1/chat/completions", self.chat)
        app.router.add_post("/api/v1/audio/speech", self.speech)
        return app

    # ------------------------------------------------------------------------------------------ STT

    async def transcribe(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            return _error(400, "a WAV 'file' is required")
        data = upload.file.read()
        try:
            with wave.open(io.BytesIO(data)) as wav:
                duration = wav.getnframes() / wav.getframerate()
        except (wave.Error, EOFError):
            return _error(400, "could not read the WAV file")
        text = self.transcript if duration >= 0.2 else ""
        self.requests["stt"].append(
            {"model": str(form.get("model", "")), "duration_s": duration, "text": text}
        )
        return web.json_response({"text": text})

    # ------------------------------------------------------------------------------------------ LLM

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests["llm"].append(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "messages must be a non-empty list")
        reply = answer([m for m in messages if isinstance(m, dict)])
        if not body.get("stream"):
            return web.json_response(
                {
                    "object": "chat.completion",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}}],
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        words = reply.split(" ")
        for i, word in enumerate(words):
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            piece = word + (" " if i < len(words) - 1 else "")
            delta = {
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": piece}}],
            }
            await resp.write(f"data: {json.dumps(delta)}\n\n".encode())
        done = {
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
        await resp.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
        await resp.write_eof()
        return resp

    # ------------------------------------------------------------------------------------------ TTS

    async def speech(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests["tts"].append(body)
        if not isinstance(body, dict) or "input" in body:
            return _error(400, 'this service takes {"text", "voice", "speed"}')
        text = str(body.get("text", ""))
        speed = float(body.get("speed") or 1.0)
        if not text.strip() or not 0.25 <= speed <= 4.0:
            return _error(400, "text must not be empty and speed must be within 0.25..4")
        pcm = voiced(len(text) * self.ms_per_char / 1000.0 / speed)
        resp = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        await resp.prepare(request)
        await resp.write(wav_header(len(pcm), RATE))
        step = RATE * 2 // 10  # 100 ms pieces, as a streaming synthesizer sends them
        for start in range(0, len(pcm), step):
            await resp.write(pcm[start : start + step])
        await resp.write_eof()
        return resp


def answer(messages: list[dict[str, Any]]) -> str:
    """The demo LLM: a few rules about the last user message."""
    last = next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")
    lowered = last.lower()
    if "capital of france" in lowered:
        return "The capital of France is Paris."
    if "what can you do" in lowered:
        return "I answer questions through your own speech, language and voice services."
    if "time" in lowered:
        return f"It is {time.strftime('%H:%M')} here."
    return f"You said: {last.strip()}" if last.strip() else "I did not catch that."


def voiced(duration_s: float, rate: int = RATE) -> bytes:
    """A speech-like tone (200 Hz with harmonics, syllable-rate envelope) as PCM16 mono."""
    t = np.arange(max(1, int(duration_s * rate))) / rate
    tone = (
        np.sin(2 * math.pi * 200 * t)
        + 0.5 * np.sin(2 * math.pi * 400 * t)
        + 0.25 * np.sin(2 * math.pi * 800 * t)
    )
    envelope = 0.6 + 0.4 * np.abs(np.sin(2 * math.pi * 2.5 * t))
    return (tone / 1.75 * envelope * 0.6 * 32767).astype("<i2").tobytes()


def wav_header(data_bytes: int, rate: int) -> bytes:
    """The 44-byte header of a PCM16 mono WAV holding ``data_bytes`` of samples."""
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message}}, status=status)


def main() -> None:
    parser = argparse.ArgumentParser(description="Demo STT, LLM and TTS services for examples/own_services")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3456)
    parser.add_argument("--transcript", default=Services.transcript, help="what the demo STT hears")
    args = parser.parse_args()
    print(f"services on http://{args.host}:{args.port}/api/v1 (STT, LLM, TTS)", flush=True)
    web.run_app(Services(transcript=args.transcript).app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
