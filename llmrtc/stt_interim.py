"""Interim transcripts from any batch STT: re-transcribe the growing utterance at a bounded rate.

:class:`InterimSTT` wraps a batch :class:`~llmrtc.providers.base.STTProvider` and gives it the streaming
contract: ``transcribe_stream(audio)`` yields interim results (``is_final=False``) while the audio arrives
and exactly one final result (``is_final=True``) after it ends. Each interim result is a transcription of
all the audio so far, requested at most every ``interval_s`` and only once ``min_audio_s`` has arrived, with
at most one request in flight (a slow vendor gets fewer interims, never a queue). When the audio ends, an
interim request that already covers all of it becomes the final; one that does not is cancelled and the
whole utterance is transcribed once more. Interim failures are logged and skipped; the final's errors
propagate. ``transcribe`` is the wrapped provider's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from llmrtc.audio.wav import pcm16_to_wav
from llmrtc.errors import ConfigError
from llmrtc.providers.base import STTCapabilities, STTProvider
from llmrtc.types import STTConfig, STTResult

logger = logging.getLogger(__name__)


class InterimSTT(STTProvider):
    """Streaming STT over a batch provider (see the module docstring).

    ``sample_rate``: the rate of the PCM16 mono audio given to :meth:`transcribe_stream` (16 kHz in the
    streaming contract). Counters: ``requests`` (interim and final requests sent), ``max_in_flight``.
    """

    def __init__(
        self,
        inner: STTProvider,
        *,
        interval_s: float = 0.6,
        min_audio_s: float = 0.5,
        sample_rate: int = 16_000,
    ) -> None:
        if interval_s <= 0 or min_audio_s < 0 or sample_rate <= 0:
            raise ConfigError("InterimSTT needs interval_s > 0, min_audio_s >= 0 and sample_rate > 0")
        self.inner = inner
        self.name = f"{inner.name}+interim"
        self.capabilities = STTCapabilities(
            streaming=True, interim_results=True, word_timestamps=inner.capabilities.word_timestamps
        )
        self.interval_s = interval_s
        self.min_audio_s = min_audio_s
        self.sample_rate = sample_rate
        self.requests = 0
        self.max_in_flight = 0
        self._in_flight = 0

    async def init(self) -> None:
        await self.inner.init()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def transcribe(self, audio: bytes, config: STTConfig | None = None) -> STTResult:
        """The wrapped provider's batch transcription."""
        return await self.inner.transcribe(audio, config)

    async def _request(self, pcm: bytes, config: STTConfig | None) -> STTResult:
        self.requests += 1
        self._in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            return await self.inner.transcribe(pcm16_to_wav(pcm, self.sample_rate), config)
        finally:
            self._in_flight -= 1

    async def transcribe_stream(
        self, audio: AsyncIterable[bytes], config: STTConfig | None = None
    ) -> AsyncIterator[STTResult]:
        """Interim results while ``audio`` (PCM16 mono at ``sample_rate``) arrives, then one final."""
        loop = asyncio.get_running_loop()
        buf = bytearray()
        grew = asyncio.Event()

        async def read() -> None:
            async for piece in audio:
                if piece:
                    buf.extend(piece)
                    grew.set()

        reader = asyncio.create_task(read(), name=f"{self.name}-audio")
        in_flight: asyncio.Task[STTResult] | None = None
        sent = 0  # bytes covered by the last request
        due = 0.0  # loop time of the next interim request
        last_text: str | None = None
        min_bytes = max(2, round(self.min_audio_s * self.sample_rate) * 2)
        waiter: asyncio.Task[Any] | None = None
        try:
            while not reader.done():
                if in_flight is not None and in_flight.done():
                    result = _outcome(in_flight, self.name)
                    in_flight = None
                    if result is not None and result.text.strip() and result.text != last_text:
                        last_text = result.text
                        yield result.model_copy(update={"is_final": False})
                    continue
                now = loop.time()
                ready = len(buf) >= min_bytes and len(buf) > sent
                if in_flight is None and ready and now >= due:
                    sent = len(buf) - len(buf) % 2
                    due = now + self.interval_s
                    in_flight = asyncio.create_task(self._request(bytes(buf[:sent]), config))
                    continue
                waits: set[asyncio.Task[Any]] = {reader}
                timeout: float | None = None
                if in_flight is not None:
                    waits.add(in_flight)
                elif ready:
                    timeout = max(0.0, due - now)
                else:
                    grew.clear()
                    waiter = asyncio.create_task(grew.wait())
                    waits.add(waiter)
                await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if waiter is not None:
                    waiter.cancel()
                    waiter = None
            reader.result()  # the audio source's error, if any
            pcm = bytes(buf[: len(buf) - len(buf) % 2])
            final: STTResult | None = None
            if in_flight is not None:
                if sent == len(pcm):
                    with contextlib.suppress(Exception):
                        final = await in_flight
                else:
                    in_flight.cancel()
                    with contextlib.suppress(BaseException):
                        await in_flight
                in_flight = None
            if final is None:
                if not pcm:
                    final = STTResult(text="", duration_s=0.0)
                else:
                    final = await self._request(pcm, config)
            yield final.model_copy(update={"is_final": True})
        finally:
            for task in (reader, in_flight, waiter):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task


def _outcome(task: asyncio.Task[STTResult], name: str) -> STTResult | None:
    """An interim request's result, or ``None`` (logged) if it failed."""
    if task.cancelled():
        return None
    exc = task.exception()
    if exc is not None:
        logger.warning("%s: interim transcription failed, skipped: %s", name, exc)
        return None
    return task.result()


__all__ = ["InterimSTT"]
