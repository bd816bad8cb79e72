"""InterimSTT: interim results from a batch STT (the real OpenAI provider against the local wire fake)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from llmrtc.errors import ConfigError
from llmrtc.providers.openai import OpenAISTTProvider
from llmrtc.providers.resilience import NO_RETRY
from llmrtc.stt_interim import InterimSTT
from llmrtc.types import STTResult
from tests.fixtures import fixture_path
from tests.fixtures.make_fixtures import _read
from tests.providers.fakes._base import Failure
from tests.providers.fakes.openai import FakeOpenAI, Reply, Transcript
from tests.providers.helpers import serving

WAV_HEADER = 44


class SlowWhisper(FakeOpenAI):
    """The OpenAI fake answering each transcription after ``delay_s`` with the length of audio it got."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(api_key="sk-test")
        self.delay_s = delay_s
        self.active: set[int] = set()
        self.overlaps: list[tuple[int, int]] = []
        self.abandoned: set[int] = set()
        self.heard_ms: list[int] = []
        self._ids = 0

    async def _transcribe(self, request: web.Request) -> web.Response:
        self._ids += 1
        me = self._ids
        self.overlaps += [(other, me) for other in self.active]
        self.active.add(me)
        try:
            await asyncio.sleep(self.delay_s)
            if request.transport is None or request.transport.is_closing():
                self.abandoned.add(me)
            return await super()._transcribe(request)
        finally:
            self.active.discard(me)

    def overlapping_live_requests(self) -> list[tuple[int, int]]:
        """Pairs of requests served at the same time where the client still wanted both."""
        return [(a, b) for a, b in self.overlaps if a not in self.abandoned and b not in self.abandoned]

    def _next(self, route: str, default: Reply) -> Reply:
        if route == "transcribe" and not self.scripts[route]:
            ms = (len(self.requests[-1].files["file"]) - WAV_HEADER) // 32
            self.heard_ms.append(ms)
            return Transcript(f"heard {ms} ms")
        return super()._next(route, default)


async def speech(seconds: float, *, pace: float = 0.5, chunk_ms: int = 20) -> AsyncIterator[bytes]:
    """The capital fixture in ``chunk_ms`` pieces, at ``pace`` times real time."""
    pcm = _read(fixture_path("capital_16k.wav")).tobytes()[: round(seconds * 16000) * 2]
    step = 32 * chunk_ms
    for i in range(0, len(pcm), step):
        yield pcm[i : i + step]
        await asyncio.sleep(chunk_ms / 1000 * pace)


async def collect(stt: InterimSTT, audio: AsyncIterator[bytes]) -> list[tuple[float, STTResult]]:
    loop = asyncio.get_running_loop()
    out = []
    async for r in stt.transcribe_stream(audio):
        out.append((loop.time(), r))
    return out


def provider(server: SlowWhisper, **kw: Any) -> InterimSTT:
    inner = OpenAISTTProvider(api_key="sk-test", base_url=server.base_url, retry=NO_RETRY)
    return InterimSTT(inner, **kw)


async def test_interims_come_before_one_final_with_one_request_in_flight() -> None:
    async with serving(SlowWhisper(delay_s=0.25)) as server:
        stt = provider(server, interval_s=0.3, min_audio_s=0.3)
        try:
            results = await collect(stt, speech(3.0))
        finally:
            await stt.aclose()
    finals = [r for _, r in results if r.is_final]
    interims = [r for _, r in results if not r.is_final]
    assert len(finals) == 1 and results[-1][1].is_final
    assert len(interims) >= 2, results
    assert finals[0].text == "heard 3000 ms"  # the final covers the whole utterance
    heard = [int(r.text.split()[1]) for r in interims]
    assert heard == sorted(heard) and heard[0] >= 300 and heard[-1] < 3000  # growing audio, no duplicates
    assert server.overlapping_live_requests() == [] and stt.max_in_flight == 1
    # a request at most every interval: 1.5 s of wall time cannot hold more than 1.5/0.3 + final requests
    assert stt.requests <= 1.5 / 0.3 + 2
    assert stt.capabilities.interim_results and stt.capabilities.streaming


async def test_slow_vendor_gets_fewer_requests_not_a_queue() -> None:
    async with serving(SlowWhisper(delay_s=0.7)) as server:
        stt = provider(server, interval_s=0.1, min_audio_s=0.1)
        try:
            results = await collect(stt, speech(3.0))
        finally:
            await stt.aclose()
    assert stt.max_in_flight == 1
    assert stt.requests <= 1.5 / 0.7 + 2  # bounded by the vendor's latency, not by the interval
    assert results[-1][1].is_final and results[-1][1].text == "heard 3000 ms"
    assert sum(1 for _, r in results if r.is_final) == 1


async def test_failed_interim_is_skipped_and_final_still_comes() -> None:
    async with serving(SlowWhisper(delay_s=0.05)) as server:
        server.push_transcript(Failure(500))
        stt = provider(server, interval_s=0.2, min_audio_s=0.2)
        try:
            results = await collect(stt, speech(1.5))
        finally:
            await stt.aclose()
    assert [r.is_final for _, r in results].count(True) == 1
    assert results[-1][1].text == "heard 1500 ms"
    assert all(r.text.startswith("heard") for _, r in results)


async def test_final_error_propagates() -> None:
    async with serving(SlowWhisper(delay_s=0.0)) as server:
        stt = provider(server, interval_s=5.0, min_audio_s=5.0)  # no interims: the only request is the final
        server.push_transcript(Failure(400, "bad audio"))
        try:
            with pytest.raises(Exception) as info:
                await collect(stt, speech(0.5, pace=0.1))
        finally:
            await stt.aclose()
    assert "bad audio" in str(info.value)


async def test_empty_audio_gives_an_empty_final_without_a_request() -> None:
    async def nothing() -> AsyncIterator[bytes]:
        for _ in ():
            yield b""

    async with serving(SlowWhisper(delay_s=0.0)) as server:
        stt = provider(server)
        try:
            results = await collect(stt, nothing())
        finally:
            await stt.aclose()
    assert [(r.text, r.is_final) for _, r in results] == [("", True)]
    assert server.requests == []


async def test_closing_the_stream_early_cancels_its_work() -> None:
    async with serving(SlowWhisper(delay_s=0.3)) as server:
        stt = provider(server, interval_s=0.1, min_audio_s=0.1)
        try:
            stream = stt.transcribe_stream(speech(3.0))
            first = await anext(stream)
            await stream.aclose()  # type: ignore[attr-defined]
            assert not first.is_final
            await asyncio.sleep(0.05)
            assert stt._in_flight == 0
        finally:
            await stt.aclose()


def test_bad_settings_are_config_errors() -> None:
    inner = OpenAISTTProvider(api_key="sk-test", base_url="http://127.0.0.1:9")
    with pytest.raises(ConfigError):
        InterimSTT(inner, interval_s=0)
