"""A local OpenAI-compatible server for worker integration tests (the real ``openai`` SDK talks to it).

- ``POST /v1/audio/transcriptions`` (multipart, a WAV ``file``): answers ``{"text": ...}``. The text comes
  from the first :class:`TranscriptRule` whose duration range holds the upload's duration, else from the
  ``transcripts`` queue, else ``default_transcript``.
- ``POST /v1/chat/completions``: streams SSE ``chat.completion.chunk`` objects (or one JSON completion), with
  the text from ``replies`` (queue) or ``default_reply``; each chunk after ``chunk_delay_s``. A
  :class:`ToolCallReply` in ``replies`` answers with that tool call instead (``finish_reason: tool_calls``).
  The ``image_url`` parts of each request are recorded in ``images`` (request index, data URL).
- ``POST /v1/audio/speech``: PCM16 24 kHz mono (``response_format=pcm``) or WAV: a voiced tone of
  ``speech_ms_per_char`` per input character, streamed in pieces.

Every request is recorded (``chat_requests``, ``transcriptions``, ``speech_requests``) for assertions.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import time
import wave
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import web

SPEECH_RATE = 24000


@dataclass
class TranscriptRule:
    min_s: float
    max_s: float
    text: str


@dataclass
class ToolCallReply:
    """A scripted answer that calls a tool (put it in ``OpenAIFake.replies``)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    call_id: str = "call_1"


@dataclass
class Transcription:
    duration_s: float
    model: str
    text: str
    at: float


@dataclass
class OpenAIFake:
    """The server's behaviour and its record of requests. Use :meth:`start` / :meth:`stop`."""

    default_transcript: str = ""
    rules: list[TranscriptRule] = field(default_factory=list)
    transcripts: deque[str] = field(default_factory=deque)
    default_reply: str = "Sure, happy to help."
    replies: deque[str | ToolCallReply] = field(default_factory=deque)
    chunk_delay_s: float = 0.0
    speech_ms_per_char: float = 55.0
    chat_requests: list[dict[str, Any]] = field(default_factory=list)
    transcriptions: list[Transcription] = field(default_factory=list)
    speech_requests: list[dict[str, Any]] = field(default_factory=list)
    images: list[tuple[int, str]] = field(default_factory=list)
    """``(index in chat_requests, data URL)`` of every ``image_url`` part received, in order."""
    host: str = "127.0.0.1"
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> OpenAIFake:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/v1/audio/transcriptions", self._transcribe)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/audio/speech", self._speech)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------------------------------ handlers

    async def _transcribe(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            return _error(400, "file is required")
        data = upload.file.read()
        try:
            with wave.open(io.BytesIO(data)) as wav:
                duration = wav.getnframes() / wav.getframerate()
        except (wave.Error, EOFError):
            return _error(400, "could not decode the audio file")
        text = self._pick_transcript(duration)
        self.transcriptions.append(
            Transcription(duration, str(form.get("model", "")), text, time.monotonic())
        )
        fmt = str(form.get("response_format", "json"))
        if fmt == "text":
            return web.Response(text=text)
        if fmt == "verbose_json":
            return web.json_response(
                {
                    "task": "transcribe",
                    "language": "english",
                    "duration": duration,
                    "text": text,
                    "segments": [],
                }
            )
        return web.json_response({"text": text})

    def _pick_transcript(self, duration: float) -> str:
        for rule in self.rules:
            if rule.min_s <= duration < rule.max_s:
                return rule.text
        if self.transcripts:
            return self.transcripts.popleft()
        return self.default_transcript

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.chat_requests.append(body)
        for message in body.get("messages", []):
            for part in message.get("content") if isinstance(message.get("content"), list) else []:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    self.images.append((len(self.chat_requests) - 1, str(part["image_url"]["url"])))
        reply = self.replies.popleft() if self.replies else self.default_reply
        model = body.get("model", "gpt-test")
        if isinstance(reply, ToolCallReply):
            return await self._tool_call(request, body, reply, model)
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            obj = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(obj)}\n\n".encode()

        await resp.write(chunk({"role": "assistant", "content": ""}))
        for piece in _pieces(reply):
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            await resp.write(chunk({"content": piece}))
        await resp.write(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):  # as OpenAI: a last chunk, no choices
            words = sum(len(str(m.get("content") or "").split()) for m in body.get("messages", []))
            usage = {"prompt_tokens": words, "completion_tokens": len(reply.split())}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            last = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [],
                "usage": usage,
            }
            await resp.write(f"data: {json.dumps(last)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _tool_call(
        self, request: web.Request, body: dict[str, Any], reply: ToolCallReply, model: str
    ) -> web.StreamResponse:
        call = {
            "id": reply.call_id,
            "type": "function",
            "function": {"name": reply.name, "arguments": json.dumps(reply.arguments)},
        }
        if not body.get("stream"):
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
            return web.json_response(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [choice],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        deltas: list[tuple[dict[str, Any], str | None]] = [
            ({"role": "assistant", "content": None, "tool_calls": [{"index": 0, **call}]}, None),
            ({}, "tool_calls"),
        ]
        for delta, finish in deltas:
            obj = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            await resp.write(f"data: {json.dumps(obj)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.speech_requests.append(body)
        text = str(body.get("input", ""))
        if not text.strip():
            return _error(400, "input must not be empty")
        pcm = voiced_tone(max(0.2, len(text) * self.speech_ms_per_char / 1000.0))
        fmt = body.get("response_format", "mp3")
        if fmt == "wav":
            out = io.BytesIO()
            with wave.open(out, "wb") as wav:
                wav.setnchannels(1)
                wav.setsampwidth(2)
                wav.setframerate(SPEECH_RATE)
                wav.writeframes(pcm)
            payload, ctype = out.getvalue(), "audio/wav"
        elif fmt == "pcm":
            payload, ctype = pcm, "audio/pcm"
        else:
            return _error(400, f"this test server only produces pcm or wav, not {fmt!r}")
        resp = web.StreamResponse(headers={"Content-Type": ctype})
        await resp.prepare(request)
        step = SPEECH_RATE * 2 // 10  # 100 ms pieces
        for i in range(0, len(payload), step):
            await resp.write(payload[i : i + step])
        await resp.write_eof()
        return resp


def voiced_tone(duration_s: float, rate: int = SPEECH_RATE) -> bytes:
    """A loud, speech-like tone (200 Hz with harmonics, syllable-rate envelope) as PCM16 mono."""
    t = np.arange(int(duration_s * rate)) / rate
    wave_ = (
        np.sin(2 * math.pi * 200 * t)
        + 0.5 * np.sin(2 * math.pi * 400 * t)
        + 0.25 * np.sin(2 * math.pi * 800 * t)
    )
    envelope = 0.6 + 0.4 * np.abs(np.sin(2 * math.pi * 2.5 * t))
    samples = (wave_ / 1.75 * envelope * 0.6 * 32767).astype(np.int16)
    return samples.tobytes()


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


def _error(status: int, message: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": "invalid_request_error", "code": None}}, status=status
    )


__all__ = ["OpenAIFake", "ToolCallReply", "TranscriptRule", "Transcription", "voiced_tone"]
