"""Fallback chains: the next LLM / STT / TTS takes over when one fails with a :class:`ProviderError`.

For streams the switch happens only before the first item reached the caller: once something was
yielded, a failure is surfaced (replaying would duplicate speech or text). Streamed inputs (audio for
STT, text pieces for TTS) are recorded while consumed so the next provider gets them all again.
Each provider keeps its own retries; the chain moves on once a provider has given up.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from llmrtc.errors import ConfigError, ProviderError
from llmrtc.providers.base import (
    LLMCapabilities,
    LLMProvider,
    STTCapabilities,
    STTProvider,
    TTSCapabilities,
    TTSProvider,
)
from llmrtc.types import LLMChunk, LLMRequest, LLMResult, STTConfig, STTResult, TTSChunk, TTSConfig, TTSResult

log = logging.getLogger("llmrtc.providers.fallback")

P = TypeVar("P", LLMProvider, STTProvider, TTSProvider)
T = TypeVar("T")
R = TypeVar("R")


class _Replayable(Generic[T]):
    """Wraps a one-shot async iterable so later consumers get every item again, then the rest."""

    def __init__(self, source: AsyncIterable[T]) -> None:
        self._source = source.__aiter__()
        self._seen: list[T] = []
        self._exhausted = False

    async def iterate(self) -> AsyncIterator[T]:
        index = 0
        while True:
            if index < len(self._seen):
                yield self._seen[index]
                index += 1
                continue
            if self._exhausted:
                return
            try:
                item = await self._source.__anext__()
            except StopAsyncIteration:
                self._exhausted = True
                return
            self._seen.append(item)
            index += 1
            yield item


class _Chain(Generic[P]):
    kind = "provider"

    def __init__(self, providers: Sequence[P]) -> None:
        if not providers:
            raise ConfigError(f"a fallback {self.kind} chain needs at least one provider")
        self.providers: list[P] = list(providers)

    def _chain_name(self) -> str:
        return "fallback(" + ",".join(p.name for p in self.providers) + ")"

    def _failed(self, provider: P, exc: ProviderError, index: int) -> None:
        nxt = self.providers[index + 1].name if index + 1 < len(self.providers) else None
        log.warning(
            "provider failed, %s",
            f"falling back to {nxt}" if nxt else "no fallback left",
            extra={"provider": provider.name, "code": exc.code, "next_provider": nxt},
        )

    async def _first_ok(self, call: Callable[[P], Awaitable[R]]) -> R:
        last: ProviderError | None = None
        for i, provider in enumerate(self.providers):
            try:
                return await call(provider)
            except ProviderError as exc:
                self._failed(provider, exc, i)
                last = exc
        assert last is not None
        raise last

    async def _first_stream(self, open_stream: Callable[[P], AsyncIterator[R]]) -> AsyncIterator[R]:
        last: ProviderError | None = None
        for i, provider in enumerate(self.providers):
            stream = open_stream(provider)
            yielded = False
            try:
                async for item in stream:
                    yielded = True
                    yield item
                return
            except ProviderError as exc:
                if yielded:
                    raise
                self._failed(provider, exc, i)
                last = exc
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()
        assert last is not None
        raise last

    async def init(self) -> None:
        """Initialise every provider in the chain."""
        for p in self.providers:
            await p.init()

    async def aclose(self) -> None:
        """Close every provider in the chain."""
        for p in self.providers:
            await p.aclose()


class FallbackLLM(_Chain[LLMProvider], LLMProvider):
    """Tries each LLM in turn. Capabilities are those every provider in the chain has."""

    kind = "LLM"

    def __init__(self, providers: Sequence[LLMProvider]) -> None:
        super().__init__(providers)
        self.name = self._chain_name()
        caps = [p.capabilities for p in self.providers]
        self.capabilities = LLMCapabilities(
            streaming=all(c.streaming for c in caps),
            tools=all(c.tools for c in caps),
            streaming_tools=all(c.streaming_tools for c in caps),
            vision=all(c.vision for c in caps),
        )

    async def complete(self, request: LLMRequest) -> LLMResult:
        return await self._first_ok(lambda p: p.complete(request))

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        async for chunk in self._first_stream(lambda p: p.stream(request)):
            yield chunk


class FallbackSTT(_Chain[STTProvider], STTProvider):
    """Tries each STT in turn; a streamed utterance is replayed in full to the next one."""

    kind = "STT"

    def __init__(self, providers: Sequence[STTProvider]) -> None:
        super().__init__(providers)
        self.name = self._chain_name()
        self.capabilities = STTCapabilities(streaming=self.providers[0].capabilities.streaming)

    async def transcribe(self, audio: bytes, config: STTConfig | None = None) -> STTResult:
        return await self._first_ok(lambda p: p.transcribe(audio, config))

    async def transcribe_stream(
        self, audio: AsyncIterable[bytes], config: STTConfig | None = None
    ) -> AsyncIterator[STTResult]:
        replay = _Replayable(audio)
        async for result in self._first_stream(lambda p: p.transcribe_stream(replay.iterate(), config)):
            yield result


class FallbackTTS(_Chain[TTSProvider], TTSProvider):
    """Tries each TTS in turn. Chunks declare their own rate, which may differ between providers."""

    kind = "TTS"

    def __init__(self, providers: Sequence[TTSProvider]) -> None:
        super().__init__(providers)
        self.name = self._chain_name()
        first = self.providers[0]
        self.sample_rate = first.sample_rate
        self.capabilities = TTSCapabilities(
            streaming=first.capabilities.streaming, input_streaming=first.capabilities.input_streaming
        )

    async def speak(self, text: str, config: TTSConfig | None = None) -> TTSResult:
        return await self._first_ok(lambda p: p.speak(text, config))

    async def speak_stream(self, text: str, config: TTSConfig | None = None) -> AsyncIterator[TTSChunk]:
        async for chunk in self._first_stream(lambda p: p.speak_stream(text, config)):
            yield chunk

    async def speak_text_stream(
        self, texts: AsyncIterable[str], config: TTSConfig | None = None
    ) -> AsyncIterator[TTSChunk]:
        replay = _Replayable(texts)
        async for chunk in self._first_stream(lambda p: p.speak_text_stream(replay.iterate(), config)):
            yield chunk


__all__ = ["FallbackLLM", "FallbackSTT", "FallbackTTS"]
