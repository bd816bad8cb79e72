"""Deadlines sized for conversation: how long each step of a turn may keep a person waiting.

A provider's own limits (``PROVIDER_TIMEOUT_S`` per request and read, ``PROVIDER_MAX_RETRIES``) protect the
connection; these protect the conversation. :class:`Deadlines` holds one limit per step, each ``None`` when
off:

- ``stt_s``: one utterance's transcription, retries included;
- ``llm_first_token_s``: the LLM's first streamed piece (or a whole non-streamed completion);
- ``llm_idle_s``: the gap between two streamed pieces;
- ``tts_first_byte_s``: a sentence's first audio (and every later gap in its audio stream);
- ``turn_budget_s``: from the start of a turn to its first audio (its first text when it is not spoken),
  whatever runs in between (LLM, tools, TTS); enforced by the voice orchestrator's turn lifecycle.

A missed step deadline raises :class:`~llmrtc.errors.ProviderTimeoutError` (``retryable``) from the provider
call, which fails the step through the ordinary error path. The limits wrap the provider from the outside, so
a provider's retries count against them (a hung vendor is not waited on three times).

**Fallback chains.** When the provider is a :class:`~llmrtc.providers.fallback.FallbackLLM` (``STT``,
``TTS``), every member is bounded instead of the chain, each with ``1/n`` of the step's deadline (``n``
providers), so that a hung first provider hands over to the next one and the whole chain still answers
within the step's deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from llmrtc.errors import ProviderTimeoutError
from llmrtc.providers.base import LLMProvider, STTProvider, TTSProvider
from llmrtc.providers.fallback import FallbackLLM, FallbackSTT, FallbackTTS
from llmrtc.types import LLMChunk, LLMRequest, LLMResult, STTConfig, STTResult, TTSChunk, TTSConfig, TTSResult

T = TypeVar("T")

DEFAULT_STT_S = 10.0
DEFAULT_LLM_FIRST_TOKEN_S = 8.0
DEFAULT_LLM_IDLE_S = 8.0
DEFAULT_TTS_FIRST_BYTE_S = 6.0
DEFAULT_TURN_BUDGET_S = 15.0


@dataclass(frozen=True, slots=True)
class Deadlines:
    """The per-step limits of a conversation, in seconds (``None``: no limit)."""

    stt_s: float | None = DEFAULT_STT_S
    llm_first_token_s: float | None = DEFAULT_LLM_FIRST_TOKEN_S
    llm_idle_s: float | None = DEFAULT_LLM_IDLE_S
    tts_first_byte_s: float | None = DEFAULT_TTS_FIRST_BYTE_S
    turn_budget_s: float | None = DEFAULT_TURN_BUDGET_S

    @classmethod
    def from_settings(cls, settings: object) -> Deadlines:
        """The deadlines an :class:`~llmrtc.conversation.OrchestratorConfig` (or alike) sets; none when it has
        no deadline fields."""

        def get(name: str) -> float | None:
            value = getattr(settings, name, None)
            return float(value) if value else None

        return cls(
            stt_s=get("stt_timeout_s"),
            llm_first_token_s=get("llm_first_token_timeout_s"),
            llm_idle_s=get("llm_idle_timeout_s"),
            tts_first_byte_s=get("tts_first_byte_timeout_s"),
            turn_budget_s=get("turn_budget_s"),
        )

    def llm(self, provider: LLMProvider) -> LLMProvider:
        """``provider`` bounded by the LLM deadlines (each member of a fallback chain by its share)."""
        if self.llm_first_token_s is None and self.llm_idle_s is None:
            return provider
        if isinstance(provider, FallbackLLM):
            n = len(provider.providers)
            return FallbackLLM(
                [
                    BoundedLLM(p, _share(self.llm_first_token_s, n), self.llm_idle_s)
                    for p in provider.providers
                ]
            )
        return BoundedLLM(provider, self.llm_first_token_s, self.llm_idle_s)

    def stt(self, provider: STTProvider) -> STTProvider:
        """``provider`` bounded by the STT deadline (each member of a fallback chain by its share)."""
        if self.stt_s is None:
            return provider
        if isinstance(provider, FallbackSTT):
            n = len(provider.providers)
            return FallbackSTT([BoundedSTT(p, _share(self.stt_s, n)) for p in provider.providers])
        return BoundedSTT(provider, self.stt_s)

    def tts(self, provider: TTSProvider) -> TTSProvider:
        """``provider`` bounded by the TTS first-byte deadline (each member of a chain by its share)."""
        if self.tts_first_byte_s is None:
            return provider
        if isinstance(provider, FallbackTTS):
            n = len(provider.providers)
            return FallbackTTS([BoundedTTS(p, _share(self.tts_first_byte_s, n)) for p in provider.providers])
        return BoundedTTS(provider, self.tts_first_byte_s)


NO_DEADLINES = Deadlines(None, None, None, None, None)
"""Every limit off (only the providers' own timeouts apply)."""


@overload
def _share(limit: float, n: int) -> float: ...
@overload
def _share(limit: float | None, n: int) -> float | None: ...
def _share(limit: float | None, n: int) -> float | None:
    return None if limit is None else limit / max(1, n)


def _timeout(provider: str, what: str, limit: float) -> ProviderTimeoutError:
    return ProviderTimeoutError(f"{what} did not come within {limit:g} s", provider=provider)


async def _within(awaitable: Awaitable[T], limit: float | None, provider: str, what: str) -> T:
    if limit is None:
        return await awaitable
    try:
        async with asyncio.timeout(limit):
            return await awaitable
    except TimeoutError as exc:
        raise _timeout(provider, what, limit) from exc


async def _paced(
    source: AsyncIterator[T], first: float | None, then: float | None, provider: str, what: str
) -> AsyncIterator[T]:
    """``source``'s items, the first within ``first`` seconds and each later one within ``then``."""
    iterator = source.__aiter__()
    limit, label = first, f"the first {what}"
    try:
        while True:
            try:
                if limit is None:
                    item = await iterator.__anext__()
                else:
                    async with asyncio.timeout(limit):
                        item = await iterator.__anext__()
            except StopAsyncIteration:
                return
            except TimeoutError as exc:
                assert limit is not None
                raise _timeout(provider, label, limit) from exc
            yield item
            limit, label = then, f"the next {what}"
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


class BoundedLLM(LLMProvider):
    """An LLM whose first token must come within ``first_token_s`` and each next one within ``idle_s``."""

    def __init__(self, inner: LLMProvider, first_token_s: float | None, idle_s: float | None) -> None:
        self.inner = inner
        self.name = inner.name
        self.capabilities = inner.capabilities
        self.first_token_s = first_token_s
        self.idle_s = idle_s

    async def init(self) -> None:
        await self.inner.init()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def complete(self, request: LLMRequest) -> LLMResult:
        return await _within(self.inner.complete(request), self.first_token_s, self.name, "the LLM's answer")

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        async for chunk in _paced(
            self.inner.stream(request), self.first_token_s, self.idle_s, self.name, "LLM token"
        ):
            yield chunk

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class BoundedSTT(STTProvider):
    """An STT whose transcription (retries included) must come within ``timeout_s``."""

    def __init__(self, inner: STTProvider, timeout_s: float) -> None:
        self.inner = inner
        self.name = inner.name
        self.capabilities = inner.capabilities
        self.timeout_s = timeout_s

    async def init(self) -> None:
        await self.inner.init()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def transcribe(self, audio: bytes, config: STTConfig | None = None) -> STTResult:
        return await _within(
            self.inner.transcribe(audio, config), self.timeout_s, self.name, "the transcript"
        )

    async def transcribe_stream(
        self, audio: AsyncIterable[bytes], config: STTConfig | None = None
    ) -> AsyncIterator[STTResult]:
        async for result in self.inner.transcribe_stream(audio, config):
            yield result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class BoundedTTS(TTSProvider):
    """A TTS whose sentence audio must start within ``first_byte_s`` (and never stall longer than that)."""

    def __init__(self, inner: TTSProvider, first_byte_s: float) -> None:
        self.inner = inner
        self.name = inner.name
        self.capabilities = inner.capabilities
        self.sample_rate = inner.sample_rate
        self.first_byte_s = first_byte_s

    async def init(self) -> None:
        await self.inner.init()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def speak(self, text: str, config: TTSConfig | None = None) -> TTSResult:
        return await self.inner.speak(text, config)

    async def speak_stream(self, text: str, config: TTSConfig | None = None) -> AsyncIterator[TTSChunk]:
        limit = self.first_byte_s
        async for chunk in _paced(self.inner.speak_stream(text, config), limit, limit, self.name, "audio"):
            yield chunk

    async def speak_text_stream(
        self, texts: AsyncIterable[str], config: TTSConfig | None = None
    ) -> AsyncIterator[TTSChunk]:
        async for chunk in self.inner.speak_text_stream(texts, config):
            yield chunk

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


__all__ = [
    "DEFAULT_LLM_FIRST_TOKEN_S",
    "DEFAULT_LLM_IDLE_S",
    "DEFAULT_STT_S",
    "DEFAULT_TTS_FIRST_BYTE_S",
    "DEFAULT_TURN_BUDGET_S",
    "NO_DEADLINES",
    "BoundedLLM",
    "BoundedSTT",
    "BoundedTTS",
    "Deadlines",
]
