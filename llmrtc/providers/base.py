"""Provider contracts: LLM, STT, TTS and vision, with capability flags.

Concrete providers subclass these. Defaults are given where one capability can be built from another
(``stream`` from ``complete``, ``speak`` from ``speak_stream``), so a minimal provider implements one method.
Providers raise :class:`llmrtc.errors.ProviderError` subclasses, never vendor exceptions.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from llmrtc.errors import ProviderResponseError
from llmrtc.types import (
    LLMChunk,
    LLMRequest,
    LLMResult,
    STTConfig,
    STTResult,
    ToolCallDelta,
    ToolCallRequest,
    TTSChunk,
    TTSConfig,
    TTSResult,
    VisionRequest,
    VisionResult,
)


@dataclass(frozen=True, slots=True)
class LLMCapabilities:
    streaming: bool = True
    tools: bool = False
    streaming_tools: bool = False
    vision: bool = False


@dataclass(frozen=True, slots=True)
class STTCapabilities:
    streaming: bool = False
    interim_results: bool = False
    """``transcribe_stream`` yields partial results (``is_final=False``) while the speaker talks."""
    word_timestamps: bool = False
    """Results carry ``words`` with their timings."""


@dataclass(frozen=True, slots=True)
class TTSCapabilities:
    streaming: bool = True
    input_streaming: bool = False
    """The provider can take text pieces as they are produced (``speak_text_stream``) on one connection."""
    word_timestamps: bool = False
    """Chunks carry ``words`` timed from the first sample of the speak call."""


class LLMProvider(ABC):
    """A chat LLM."""

    name: str = "llm"
    capabilities: LLMCapabilities = LLMCapabilities()

    async def init(self) -> None:  # noqa: B027 - optional hook
        """Open clients or check configuration; called once before first use (optional)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release clients and connections."""

    @abstractmethod
    async def complete(self, request: LLMRequest) -> LLMResult:
        """The whole answer at once."""

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        """The answer as it is produced; the last chunk has ``done=True``.

        The default calls :meth:`complete` and yields its result as one chunk.
        """
        result = await self.complete(request)
        if result.full_text:
            yield LLMChunk(content=result.full_text)
        yield LLMChunk(
            done=True, stop_reason=result.stop_reason, tool_calls=result.tool_calls, usage=result.usage
        )


class STTProvider(ABC):
    """Speech to text."""

    name: str = "stt"
    capabilities: STTCapabilities = STTCapabilities()

    async def init(self) -> None:  # noqa: B027 - optional hook
        """Open clients or load models (optional)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release clients and models."""

    @abstractmethod
    async def transcribe(self, audio: bytes, config: STTConfig | None = None) -> STTResult:
        """Transcribe one utterance given as WAV bytes (16-bit mono; any rate)."""

    async def transcribe_stream(
        self, audio: AsyncIterable[bytes], config: STTConfig | None = None
    ) -> AsyncIterator[STTResult]:
        """Partial and final results while PCM16 mono 16 kHz audio arrives.

        Streaming providers yield interim results (``is_final=False``) and finals (``is_final=True``; with
        ``end_of_utterance`` once the vendor's endpointing says the speaker finished). The default buffers
        the stream, wraps it in WAV and yields one final result.
        """
        from llmrtc.audio.wav import pcm16_to_wav

        buf = bytearray()
        async for piece in audio:
            buf.extend(piece)
        yield await self.transcribe(pcm16_to_wav(bytes(buf), 16000), config)


class TTSProvider(ABC):
    """Text to speech. Streams are PCM16 mono at the rate each :class:`TTSChunk` declares."""

    name: str = "tts"
    capabilities: TTSCapabilities = TTSCapabilities()
    sample_rate: int = 24000
    """The rate of the PCM this provider yields by default."""

    async def init(self) -> None:  # noqa: B027 - optional hook
        """Open clients or load voices (optional)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release clients and voices."""

    @abstractmethod
    def speak_stream(self, text: str, config: TTSConfig | None = None) -> AsyncIterator[TTSChunk]:
        """Synthesize ``text``, yielding PCM as soon as it is available, at ``config.sample_rate`` when set
        (else :attr:`sample_rate`). ``config.format`` picks what travels on the wire where the vendor lets
        the caller choose; the chunks are PCM whatever it is."""

    async def speak(self, text: str, config: TTSConfig | None = None) -> TTSResult:
        """Synthesize ``text`` completely, as ``config.format`` (default ``pcm``) at ``config.sample_rate``
        (default: the rate the stream starts at). The default gathers :meth:`speak_stream`, resampling any
        chunk at another rate, and encodes locally; vendors that can send the asked format override this."""
        from llmrtc.providers._audio import at_rate, encode_audio

        cfg = config or TTSConfig()
        stream = self.speak_stream(text, cfg)
        first = await anext(stream, None)
        target = cfg.sample_rate or (first.sample_rate if first is not None else self.sample_rate)

        async def chunks() -> AsyncIterator[TTSChunk]:
            try:
                if first is not None:
                    yield first
                    async for chunk in stream:
                        yield chunk
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()

        pcm = bytearray()
        async for chunk in at_rate(chunks(), target):
            pcm.extend(chunk.pcm)
        fmt = cfg.format or "pcm"
        if fmt == "pcm":
            return TTSResult(audio=bytes(pcm), format="pcm", sample_rate=target)
        audio, encoded_rate = encode_audio(bytes(pcm), target, fmt)
        return TTSResult(audio=audio, format=fmt, sample_rate=encoded_rate)

    async def speak_text_stream(
        self, texts: AsyncIterable[str], config: TTSConfig | None = None
    ) -> AsyncIterator[TTSChunk]:
        """Synthesize text pieces as they arrive. The default speaks each piece in turn."""
        async for text in texts:
            if text.strip():
                async for chunk in self.speak_stream(text, config):
                    yield chunk


class VisionProvider(ABC):
    """Describes images for LLMs that cannot see them."""

    name: str = "vision"

    async def init(self) -> None:  # noqa: B027 - optional hook
        """Open clients (optional)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release clients."""

    @abstractmethod
    async def describe(self, request: VisionRequest) -> VisionResult:
        """Describe the attachments in words."""


class ToolCallAccumulator:
    """Assembles streamed tool-call deltas (OpenAI-style: id and name first, arguments in pieces)."""

    def __init__(self, provider: str = "") -> None:
        self._provider = provider
        self._calls: dict[int, dict[str, str]] = {}

    def add(self, delta: ToolCallDelta) -> None:
        entry = self._calls.setdefault(delta.index, {"id": "", "name": "", "args": ""})
        if delta.call_id:
            entry["id"] = delta.call_id
        if delta.name:
            entry["name"] = delta.name
        entry["args"] += delta.arguments_delta

    def __bool__(self) -> bool:
        return bool(self._calls)

    def calls(self) -> list[ToolCallRequest]:
        """The complete calls, in index order. Raises if arguments are not a JSON object."""
        out: list[ToolCallRequest] = []
        for index in sorted(self._calls):
            entry = self._calls[index]
            raw = entry["args"].strip() or "{}"
            try:
                args = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ProviderResponseError(
                    f"tool call {entry['name']!r} has arguments that are not JSON: {raw[:200]!r}",
                    provider=self._provider,
                ) from exc
            if not isinstance(args, dict):
                raise ProviderResponseError(
                    f"tool call {entry['name']!r} arguments must be a JSON object", provider=self._provider
                )
            out.append(
                ToolCallRequest(call_id=entry["id"] or f"call_{index}", name=entry["name"], arguments=args)
            )
        return out


__all__ = [
    "LLMCapabilities",
    "LLMProvider",
    "STTCapabilities",
    "STTProvider",
    "TTSCapabilities",
    "TTSProvider",
    "ToolCallAccumulator",
    "VisionProvider",
]
