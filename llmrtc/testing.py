"""Scripted fake providers for testing agents without vendors, keys or network.

- :class:`ScriptedLLM` answers from a script (text, tool calls, errors) and streams it like a real model:
  a set time to first token, then tokens at a set rate, then tool-call deltas.
- :class:`FakeSTT` returns scripted transcripts for WAV input (it parses the WAV, so bad audio fails as it
  would with a real engine).
- :class:`FakeTTS` yields real PCM16 (a tone with an envelope, never silent) lasting
  ``len(text) / chars_per_second`` seconds, optionally paced against real time.
- :class:`FakeVision` returns scripted descriptions.

Each fake records what it was asked (``requests`` / ``calls``) so tests can assert on it.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmrtc.audio.wav import wav_to_pcm16
from llmrtc.errors import InvalidRequestError, LLMRTCError, ProviderServerError
from llmrtc.providers.base import (
    LLMCapabilities,
    LLMProvider,
    STTProvider,
    TTSCapabilities,
    TTSProvider,
    VisionProvider,
)
from llmrtc.types import (
    LLMChunk,
    LLMRequest,
    LLMResult,
    StopReason,
    STTConfig,
    STTResult,
    ToolCallDelta,
    ToolCallRequest,
    TTSChunk,
    TTSConfig,
    Usage,
    VisionRequest,
    VisionResult,
)

_TOKEN = re.compile(r"\s*[^\s]{1,6}|\s+")


def tokenize(text: str) -> list[str]:
    """Split text into token-like pieces (words, long words in pieces of at most 6 characters)."""
    return _TOKEN.findall(text)


@dataclass(slots=True)
class ScriptedReply:
    """One scripted LLM answer.

    ``tool_calls`` are :class:`ToolCallRequest` or dicts ``{"name": ..., "arguments": {...}, "call_id": ...}``.
    ``error`` is raised: before the first token, or after ``error_after_chars`` characters were streamed.
    """

    text: str = ""
    tool_calls: list[ToolCallRequest | dict[str, Any]] = field(default_factory=list)
    error: Exception | None = None
    error_after_chars: int | None = None
    stop_reason: StopReason | None = None

    def calls(self) -> list[ToolCallRequest]:
        out = []
        for i, call in enumerate(self.tool_calls):
            if isinstance(call, ToolCallRequest):
                out.append(call)
            else:
                out.append(
                    ToolCallRequest(
                        call_id=str(call.get("call_id") or f"call_{i}"),
                        name=str(call["name"]),
                        arguments=dict(call.get("arguments") or {}),
                    )
                )
        return out


Script = Sequence[ScriptedReply | str] | Callable[[LLMRequest], ScriptedReply | str]


class ScriptedLLM(LLMProvider):
    """An LLM that plays a script, streaming like a real one.

    ``replies`` is a list (one per request, in order; strings are plain text replies) or a function of the
    request. ``ttft_s`` delays the first token; ``tokens_per_s`` paces the rest (``None``: as fast as
    possible). Every request is kept in :attr:`requests`. Running out of replies raises
    :class:`~llmrtc.errors.InvalidRequestError`.
    """

    name = "scripted"

    def __init__(
        self,
        replies: Script,
        *,
        ttft_s: float = 0.0,
        tokens_per_s: float | None = None,
        vision: bool = False,
    ) -> None:
        if ttft_s < 0 or (tokens_per_s is not None and tokens_per_s <= 0):
            raise ValueError("ttft_s must be >= 0 and tokens_per_s > 0")
        self._script = replies if callable(replies) else list(replies)
        self._index = 0
        self.ttft_s = ttft_s
        self.tokens_per_s = tokens_per_s
        self.capabilities = LLMCapabilities(streaming=True, tools=True, streaming_tools=True, vision=vision)
        self.requests: list[LLMRequest] = []

    def _next(self, request: LLMRequest) -> ScriptedReply:
        self.requests.append(request)
        if callable(self._script):
            reply = self._script(request)
        else:
            if self._index >= len(self._script):
                raise InvalidRequestError(
                    f"ScriptedLLM has no reply left (request {self._index + 1}, script has {len(self._script)})",
                    provider=self.name,
                )
            reply = self._script[self._index]
            self._index += 1
        return ScriptedReply(text=reply) if isinstance(reply, str) else reply

    @staticmethod
    def _stop(reply: ScriptedReply, calls: list[ToolCallRequest]) -> StopReason:
        return reply.stop_reason or ("tool_use" if calls else "end_turn")

    async def complete(self, request: LLMRequest) -> LLMResult:
        reply = self._next(request)
        if self.ttft_s:
            await asyncio.sleep(self.ttft_s)
        if reply.error is not None:
            raise reply.error
        calls = reply.calls() if request.tool_choice != "none" else []
        return LLMResult(
            full_text=reply.text,
            tool_calls=calls,
            stop_reason=self._stop(reply, calls),
            usage=Usage(input_tokens=_count_input(request), output_tokens=len(tokenize(reply.text))),
        )

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        reply = self._next(request)
        calls = reply.calls() if request.tool_choice != "none" else []
        await asyncio.sleep(self.ttft_s)
        if reply.error is not None and not reply.error_after_chars:
            raise reply.error
        delay = 1.0 / self.tokens_per_s if self.tokens_per_s else 0.0
        sent = 0
        tokens = tokenize(reply.text)
        for i, token in enumerate(tokens):
            if i and delay:
                await asyncio.sleep(delay)
            if (
                reply.error is not None
                and reply.error_after_chars is not None
                and sent >= reply.error_after_chars
            ):
                raise reply.error
            sent += len(token)
            yield LLMChunk(content=token)
        if reply.error is not None:
            raise reply.error
        for index, call in enumerate(calls):
            args = json.dumps(call.arguments)
            if delay:
                await asyncio.sleep(delay)
            yield LLMChunk(
                tool_call_deltas=[ToolCallDelta(index=index, call_id=call.call_id, name=call.name)]
            )
            for start in range(0, len(args), 16):
                yield LLMChunk(
                    tool_call_deltas=[ToolCallDelta(index=index, arguments_delta=args[start : start + 16])]
                )
        yield LLMChunk(
            done=True,
            stop_reason=self._stop(reply, calls),
            tool_calls=calls,
            usage=Usage(input_tokens=_count_input(request), output_tokens=len(tokens)),
        )


def _count_input(request: LLMRequest) -> int:
    return sum(len(tokenize(m.content)) for m in request.messages)


class FakeSTT(STTProvider):
    """Returns scripted transcripts (a list, in order, or a function of the WAV bytes).

    The WAV is parsed, so invalid audio raises :class:`~llmrtc.errors.CodecError`. Calls are kept in
    :attr:`calls` as ``(wav_bytes, config)``.
    """

    name = "fake-stt"

    def __init__(self, transcripts: list[str] | Callable[[bytes], str], latency_s: float = 0.0) -> None:
        self._script = transcripts if callable(transcripts) else list(transcripts)
        self._index = 0
        self.latency_s = latency_s
        self.calls: list[tuple[bytes, STTConfig | None]] = []

    async def transcribe(self, audio: bytes, config: STTConfig | None = None) -> STTResult:
        self.calls.append((audio, config))
        pcm, rate, channels = wav_to_pcm16(audio)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if callable(self._script):
            text = self._script(audio)
        else:
            if self._index >= len(self._script):
                raise InvalidRequestError("FakeSTT has no transcript left", provider=self.name)
            text = self._script[self._index]
            self._index += 1
        duration = len(pcm) / 2 / max(1, channels) / rate if rate else 0.0
        language = config.language if config and config.language else "en"
        return STTResult(text=text, is_final=True, language=language, confidence=0.95, duration_s=duration)


class FakeTTS(TTSProvider):
    """Synthesizes a real, audible tone for any text, with a plausible duration.

    Each text lasts ``len(text) / chars_per_second`` seconds (at least one chunk) and comes as chunks of
    ``chunk_ms``. ``realtime_factor`` paces the stream (1.0: as long as the audio; 0: as fast as possible);
    ``latency_s`` delays the first chunk. ``fail_on`` (a substring) makes texts containing it fail with a
    retryable :class:`~llmrtc.errors.ProviderServerError`. Texts spoken are kept in :attr:`calls`.
    """

    name = "fake-tts"
    capabilities = TTSCapabilities(streaming=True, input_streaming=False)

    def __init__(
        self,
        sample_rate: int = 24000,
        chars_per_second: float = 15.0,
        realtime_factor: float = 0.0,
        chunk_ms: int = 20,
        *,
        latency_s: float = 0.0,
        frequency_hz: float = 220.0,
        fail_on: str | None = None,
    ) -> None:
        if sample_rate <= 0 or chars_per_second <= 0 or chunk_ms <= 0 or realtime_factor < 0:
            raise ValueError("sample_rate, chars_per_second and chunk_ms must be positive")
        self.sample_rate = sample_rate
        self.chars_per_second = chars_per_second
        self.realtime_factor = realtime_factor
        self.chunk_ms = chunk_ms
        self.latency_s = latency_s
        self.frequency_hz = frequency_hz
        self.fail_on = fail_on
        self.calls: list[str] = []

    def duration_for(self, text: str) -> float:
        """Seconds of audio produced for ``text``."""
        return max(len(text.strip()) / self.chars_per_second, self.chunk_ms / 1000.0)

    def render(self, text: str) -> bytes:
        """The whole PCM16 for ``text`` (a tone with a 10 ms attack/release and a slow tremolo)."""
        n = round(self.duration_for(text) * self.sample_rate)
        t = np.arange(n, dtype=np.float64) / self.sample_rate
        ramp = max(1, int(0.01 * self.sample_rate))
        env = np.ones(n)
        env[:ramp] = np.linspace(0.0, 1.0, min(ramp, n))[: min(ramp, n)]
        env[-ramp:] = np.minimum(env[-ramp:], np.linspace(1.0, 0.0, min(ramp, n))[-min(ramp, n) :])
        tremolo = 0.75 + 0.25 * np.sin(2 * math.pi * 4.0 * t)
        wave = 0.3 * env * tremolo * np.sin(2 * math.pi * self.frequency_hz * t)
        return (wave * 32767).astype("<i2").tobytes()

    async def speak_stream(self, text: str, config: TTSConfig | None = None) -> AsyncIterator[TTSChunk]:
        self.calls.append(text)
        if not text.strip():
            raise InvalidRequestError("cannot synthesize empty text", provider=self.name)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self.fail_on is not None and self.fail_on in text:
            raise ProviderServerError(
                f"synthesis failed for text containing {self.fail_on!r}", provider=self.name
            )
        pcm = self.render(text)
        step = max(2, int(self.sample_rate * self.chunk_ms / 1000) * 2)
        for start in range(0, len(pcm), step):
            piece = pcm[start : start + step]
            if self.realtime_factor:
                await asyncio.sleep(len(piece) / 2 / self.sample_rate * self.realtime_factor)
            else:
                await asyncio.sleep(0)
            yield TTSChunk(pcm=piece, sample_rate=self.sample_rate)


class FakeVision(VisionProvider):
    """Returns a scripted description (a fixed string or a function of the request); calls in :attr:`calls`."""

    name = "fake-vision"

    def __init__(
        self,
        description: str | Callable[[VisionRequest], str] = "A person at a desk in front of a laptop.",
        *,
        latency_s: float = 0.0,
        error: LLMRTCError | None = None,
    ) -> None:
        self.description = description
        self.latency_s = latency_s
        self.error = error
        self.calls: list[VisionRequest] = []

    async def describe(self, request: VisionRequest) -> VisionResult:
        self.calls.append(request)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self.error is not None:
            raise self.error
        text = self.description(request) if callable(self.description) else self.description
        return VisionResult(description=text)


def tone_wav(duration_s: float = 1.0, sample_rate: int = 16000, frequency_hz: float = 300.0) -> bytes:
    """A WAV of a tone: handy input for :class:`FakeSTT` and orchestrator tests."""
    from llmrtc.audio.wav import pcm16_to_wav

    n = int(duration_s * sample_rate)
    t = np.arange(n) / sample_rate
    pcm = (0.3 * np.sin(2 * math.pi * frequency_hz * t) * 32767).astype("<i2").tobytes()
    return pcm16_to_wav(pcm, sample_rate)


__all__ = [
    "FakeSTT",
    "FakeTTS",
    "FakeVision",
    "ScriptedLLM",
    "ScriptedReply",
    "tokenize",
    "tone_wav",
]
