"""ElevenLabs on the wire: the real SDK (HTTP streaming) and the realtime stream-input WebSocket protocol."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import numpy as np
import pytest

from llmrtc.errors import (
    AuthenticationError,
    ConfigError,
    ProviderConnectionError,
    ProviderServerError,
    ProviderTimeoutError,
    RateLimitError,
)
from llmrtc.providers.elevenlabs import ElevenLabsTTSProvider, parse_output_format
from llmrtc.types import TTSChunk, TTSConfig
from tests.providers.fakes.elevenlabs import Failure, FakeElevenLabs, Speech, tone
from tests.providers.helpers import FAST, serving


@pytest.fixture
async def fake() -> AsyncIterator[FakeElevenLabs]:
    async with serving(FakeElevenLabs()) as server:
        yield server


def make(fake: FakeElevenLabs, **kw: object) -> ElevenLabsTTSProvider:
    options: dict[str, object] = {
        "api_key": fake.api_key,
        "base_url": fake.base_url,
        "ws_base_url": fake.ws_base_url,
        "retry": FAST,
        "timeout_s": 10,
    }
    options.update(kw)
    return ElevenLabsTTSProvider(**options)  # type: ignore[arg-type]


@pytest.fixture
async def tts(fake: FakeElevenLabs) -> AsyncIterator[ElevenLabsTTSProvider]:
    provider = make(fake)
    yield provider
    await provider.aclose()


async def pieces(*texts: str) -> AsyncIterator[str]:
    for text in texts:
        yield text


def dominant_hz(pcm: bytes, rate: int) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


# ---------------------------------------------------------------------------------------------- HTTP


async def test_http_stream_pcm_passes_through_exactly(
    fake: FakeElevenLabs, tts: ElevenLabsTTSProvider
) -> None:
    text = "Hello from the fake voice."
    chunks = [c async for c in tts.speak_stream(text, TTSConfig(speed=1.1))]
    assert len(chunks) > 3 and all(c.sample_rate == 24000 for c in chunks)
    assert all(len(c.pcm) % 2 == 0 for c in chunks)  # 777-byte network pieces re-aligned on samples
    assert b"".join(c.pcm for c in chunks) == tone(len(text), 24000)
    sent = fake.requests[0]
    assert sent.path == "/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM/stream"
    assert sent.query["output_format"] == "pcm_24000"
    assert sent.headers["xi-api-key"] == fake.api_key
    assert sent.body["text"] == text and sent.body["model_id"] == "eleven_flash_v2_5"
    assert sent.body["voice_settings"]["speed"] == pytest.approx(1.1)


async def test_http_stream_mp3_decoded_to_pcm(fake: FakeElevenLabs) -> None:
    tts = make(fake, output_format="mp3_44100_128", voice_id="voice-xyz")
    try:
        result = await tts.speak("A" * 50)  # 0.5 s of 440 Hz, sent as a real MP3
    finally:
        await tts.aclose()
    assert result.format == "pcm" and result.sample_rate == 44100
    assert result.duration_s == pytest.approx(0.5, abs=0.03)
    assert dominant_hz(result.audio, 44100) == pytest.approx(440, abs=5)
    assert fake.requests[0].path == "/v1/text-to-speech/voice-xyz/stream"


async def test_http_auth_failure_not_retried(fake: FakeElevenLabs) -> None:
    tts = make(fake, api_key="wrong-key")
    try:
        with pytest.raises(AuthenticationError) as info:
            await tts.speak("hello")
    finally:
        await tts.aclose()
    assert "invalid_api_key" in str(info.value) and not info.value.retryable
    assert len(fake.requests) == 1


async def test_http_rate_limit_retried_then_surfaced(
    fake: FakeElevenLabs, tts: ElevenLabsTTSProvider
) -> None:
    fake.push(Failure(429, "too_many_concurrent_requests", "busy", retry_after="0"), Speech())
    assert (await tts.speak("fine")).audio == tone(4, 24000)
    fake.push(*[Failure(429, "too_many_concurrent_requests", "busy", retry_after="0.01")] * 3)
    with pytest.raises(RateLimitError) as info:
        await tts.speak("again")
    assert info.value.retry_after == pytest.approx(0.01) and "too_many_concurrent_requests" in str(info.value)
    assert len(fake.requests) == 5


async def test_http_server_error_retried_then_surfaced(
    fake: FakeElevenLabs, tts: ElevenLabsTTSProvider
) -> None:
    fake.push(Failure(500, "internal", "oops"), Speech())
    assert (await tts.speak("ok")).audio == tone(2, 24000)
    fake.push(*[Failure(503, "unavailable", "later")] * 3)
    with pytest.raises(ProviderServerError):
        await tts.speak("ok")
    assert len(fake.requests) == 5


async def test_http_stream_cut_midway(fake: FakeElevenLabs, tts: ElevenLabsTTSProvider) -> None:
    fake.push(Speech(cut_after=3000))
    got = 0
    with pytest.raises(ProviderConnectionError):
        async for chunk in tts.speak_stream("a fairly long sentence to be cut off"):
            got += len(chunk.pcm)
    assert 0 < got <= 3000
    assert len(fake.requests) == 1  # audio already reached the caller: not replayed


# ---------------------------------------------------------------------------------------------- WebSocket


async def test_ws_protocol_messages(fake: FakeElevenLabs, tts: ElevenLabsTTSProvider) -> None:
    chunks = [
        c
        async for c in tts.speak_text_stream(pieces("Hel", "lo there. How ", "are you"), TTSConfig(speed=0.9))
    ]
    pcm = b"".join(c.pcm for c in chunks)
    assert all(c.sample_rate == 24000 for c in chunks)
    session = fake.sessions[0]
    assert session.path == "/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM/stream-input"
    assert session.query == {"model_id": "eleven_flash_v2_5", "output_format": "pcm_24000"}
    assert session.headers["xi-api-key"] == fake.api_key
    bos, *texts, eos = session.received
    assert bos["text"] == " " and bos["xi-api-key"] == fake.api_key
    assert bos["voice_settings"]["speed"] == pytest.approx(0.9)
    assert eos == {"text": ""}
    # Word-complete pieces ending in a space; a finished sentence is flushed.
    assert [t["text"] for t in texts] == ["Hello there. ", "How ", "are ", "you "]
    assert all(t["text"].endswith(" ") for t in texts)
    assert texts[0].get("flush") is True and texts[0]["try_trigger_generation"] is True
    assert texts[-1].get("flush") is True
    assert pcm == b"".join(tone(len(t["text"]), 24000) for t in texts)


async def test_ws_audio_arrives_before_the_text_is_complete(
    fake: FakeElevenLabs, tts: ElevenLabsTTSProvider
) -> None:
    first_audio = asyncio.Event()

    async def llm_text() -> AsyncIterator[str]:
        yield "The first sentence. "
        # An LLM still thinking: the rest only comes once speech has started.
        await asyncio.wait_for(first_audio.wait(), timeout=10)
        yield "The second one."

    chunks: list[TTSChunk] = []
    async for chunk in tts.speak_text_stream(llm_text()):
        chunks.append(chunk)
        first_audio.set()
    assert fake.sessions[0].log[:2] == ["text:The first sentence. ", "audio"]
    assert b"".join(c.pcm for c in chunks) == tone(20, 24000) + tone(16, 24000)


async def test_ws_mp3_output_decoded(fake: FakeElevenLabs) -> None:
    tts = make(fake, output_format="mp3_22050_32")
    try:
        chunks = [c async for c in tts.speak_text_stream(pieces("B" * 30 + ".", " " + "C" * 29))]
    finally:
        await tts.aclose()
    pcm = b"".join(c.pcm for c in chunks)
    assert all(c.sample_rate == 22050 for c in chunks)
    assert len(pcm) / 2 / 22050 == pytest.approx(0.62, abs=0.08)  # two MP3 streams of 0.31 s
    assert dominant_hz(pcm, 22050) == pytest.approx(440, abs=8)


async def test_ws_bad_key_closes_with_auth_error(fake: FakeElevenLabs) -> None:
    tts = make(fake, api_key="wrong-key")
    try:
        with pytest.raises(AuthenticationError, match="Invalid API key"):
            async for _ in tts.speak_text_stream(pieces("hello ")):
                pass
    finally:
        await tts.aclose()
    assert len(fake.sessions) == 1


async def test_ws_handshake_rate_limit_retried_then_surfaced(
    fake: FakeElevenLabs, tts: ElevenLabsTTSProvider
) -> None:
    fake.ws_reject_status = 429
    with pytest.raises(RateLimitError):
        async for _ in tts.speak_text_stream(pieces("hello ")):
            pass
    fake.ws_reject_status = None
    chunks = [c async for c in tts.speak_text_stream(pieces("hi. "))]
    assert b"".join(c.pcm for c in chunks) == tone(4, 24000)


async def test_ws_connection_cut_midway(fake: FakeElevenLabs, tts: ElevenLabsTTSProvider) -> None:
    fake.ws_cut_after_audio = 1
    got: list[TTSChunk] = []
    with pytest.raises(ProviderConnectionError):
        async for chunk in tts.speak_text_stream(pieces("First. ", "Second. ", "Third.")):
            got.append(chunk)
    assert b"".join(c.pcm for c in got) == tone(7, 24000)


async def test_ws_cancelled_by_barge_in_closes_socket(
    fake: FakeElevenLabs, tts: ElevenLabsTTSProvider
) -> None:
    never = asyncio.Event()

    async def endless() -> AsyncIterator[str]:
        yield "Speaking now. "
        await never.wait()
        yield "never sent"

    stream = tts.speak_text_stream(endless())
    first = await anext(stream)
    assert first.pcm
    await stream.aclose()  # what a barge-in does to the TTS stream
    for _ in range(100):
        if fake.sessions[0].closed_by_client:
            break
        await asyncio.sleep(0.02)
    assert fake.sessions[0].closed_by_client


async def test_ws_failing_text_source_surfaces_its_error(
    fake: FakeElevenLabs, tts: ElevenLabsTTSProvider
) -> None:
    async def broken() -> AsyncIterator[str]:
        yield "Start. "
        raise RuntimeError("llm died")

    with pytest.raises(Exception, match="llm died"):
        async for _ in tts.speak_text_stream(broken()):
            pass


async def test_ws_silent_service_times_out_after_input_ends(fake: FakeElevenLabs) -> None:
    fake.ws_stall_after_eos = True
    tts = make(fake, timeout_s=0.3)
    got: list[TTSChunk] = []
    try:
        with pytest.raises(ProviderTimeoutError):
            async for chunk in tts.speak_text_stream(pieces("Hello. ", "world")):
                got.append(chunk)
    finally:
        await tts.aclose()
    assert b"".join(c.pcm for c in got) == tone(len("Hello. "), 24000) + tone(len("world "), 24000)


# ---------------------------------------------------------------------------------------------- options


def test_output_formats() -> None:
    assert parse_output_format("pcm_16000") == ("pcm", 16000)
    assert parse_output_format("mp3_44100_128") == ("mp3", 44100)
    assert parse_output_format("ulaw_8000") == ("ulaw", 8000)
    with pytest.raises(ConfigError, match="pcm_<rate>"):
        parse_output_format("wav")


def test_capabilities_and_missing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ElevenLabsTTSProvider.capabilities.input_streaming and ElevenLabsTTSProvider.capabilities.streaming
    monkeypatch.delenv("ELEVENLABS_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="ELEVENLABS_API_KEY"):
        ElevenLabsTTSProvider()


def test_default_ws_url_follows_base_url() -> None:
    tts = ElevenLabsTTSProvider(api_key="k")
    assert tts.stream_input_url("v1", "m").startswith(
        "wss://api.elevenlabs.io/v1/text-to-speech/v1/stream-input?"
    )
    assert ElevenLabsTTSProvider(api_key="k", base_url="http://localhost:9").ws_base_url == "ws://localhost:9"


async def test_ulaw_output_expanded() -> None:
    from llmrtc.providers.elevenlabs import _Decoder

    pcm = np.frombuffer(_Decoder("ulaw", 8000).feed(bytes([0xFF, 0x7F, 0x80, 0x00])), dtype="<i2")
    assert list(pcm) == [0, 0, 32124, -32124]
    alaw = np.frombuffer(_Decoder("alaw", 8000).feed(bytes([0xD5, 0x55, 0xAA, 0x2A])), dtype="<i2")
    assert list(alaw) == [8, -8, 32256, -32256]


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("ELEVENLABS_API_KEY"), reason="ELEVENLABS_API_KEY not set")
async def test_live_elevenlabs_http_and_ws() -> None:
    tts = ElevenLabsTTSProvider()
    try:
        result = await tts.speak("Hello.")
        assert result.duration_s > 0.2
        chunks = [c async for c in tts.speak_text_stream(pieces("Hello ", "again."))]
        assert sum(len(c.pcm) for c in chunks) > 0
    finally:
        await tts.aclose()
