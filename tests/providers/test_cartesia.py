"""Cartesia on the wire: the real ``cartesia`` SDK's WebSocket against a local TTS socket."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from llmrtc.errors import (
    AuthenticationError,
    ConfigError,
    InvalidRequestError,
    ProviderConnectionError,
    ProviderServerError,
    ProviderTimeoutError,
    RateLimitError,
)
from llmrtc.providers.cartesia import CartesiaTTSProvider
from llmrtc.types import TTSChunk, TTSConfig, WordTiming
from tests.providers.conftest import Closer
from tests.providers.fakes.cartesia import FakeCartesia, tone
from tests.providers.helpers import FAST, serving


@pytest.fixture
async def fake() -> AsyncIterator[FakeCartesia]:
    async with serving(FakeCartesia()) as server:
        yield server


def make(fake: FakeCartesia, closing: Closer, **kw: object) -> CartesiaTTSProvider:
    options: dict[str, object] = {
        "api_key": fake.api_key,
        "base_url": fake.base_url,
        "ws_base_url": fake.ws_base_url,
        "retry": FAST,
        "timeout_s": 5,
    }
    options.update(kw)
    return closing(CartesiaTTSProvider(**options))  # type: ignore[arg-type]


def words_of(chunks: list[TTSChunk]) -> list[WordTiming]:
    return [w for c in chunks for w in c.words]


async def test_speak_stream_exact_pcm_and_word_timestamps(fake: FakeCartesia, closing: Closer) -> None:
    tts = make(fake, closing, voice_id="voice-1", model_id="sonic-2")
    chunks = [c async for c in tts.speak_stream("Hello there world", TTSConfig(speed=2.0))]
    assert b"".join(c.pcm for c in chunks) == tone(17, 24000)
    assert all(c.sample_rate == 24000 for c in chunks) and len(chunks) > 2
    assert words_of(chunks) == [
        WordTiming("Hello", 0.0, 0.05),
        WordTiming("there", 0.06, 0.11),
        WordTiming("world", 0.12, 0.17),
    ]
    assert chunks[0].words  # the words ride on the first audio chunk after their timestamps
    connection = fake.connections[0]
    assert connection.headers["Authorization"] == f"Bearer {fake.api_key}"
    assert connection.headers["Cartesia-Version"]
    (context,) = connection.contexts.values()
    first = context.requests[0]
    assert first["output_format"] == {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000}
    assert first["voice"] == {"mode": "id", "id": "voice-1"} and first["model_id"] == "sonic-2"
    assert first["add_timestamps"] is True and first["language"] == "en"
    assert first["generation_config"] == {"speed": 1.5}
    assert [r["continue"] for r in context.requests] == [True, False]


async def test_text_stream_continues_one_context_and_audio_starts_early(
    fake: FakeCartesia, closing: Closer
) -> None:
    heard_audio = asyncio.Event()
    sent_second_after_audio: list[bool] = []

    async def answer() -> AsyncIterator[str]:
        yield "Hello there. "
        await asyncio.wait_for(heard_audio.wait(), 5)
        sent_second_after_audio.append(heard_audio.is_set())
        yield "How are "
        yield "you?"

    chunks: list[TTSChunk] = []
    async for chunk in make(fake, closing).speak_text_stream(answer()):
        chunks.append(chunk)
        heard_audio.set()
    assert sent_second_after_audio == [True]
    (context,) = fake.connections[0].contexts.values()
    assert context.transcript == "Hello there. How are you?"
    assert [r["continue"] for r in context.requests] == [True, True, True, False]
    assert b"".join(c.pcm for c in chunks) == tone(13, 24000) + tone(8, 24000) + tone(4, 24000)
    assert words_of(chunks) == [
        WordTiming("Hello", 0.0, 0.05),
        WordTiming("there.", 0.06, 0.12),
        WordTiming("How", 0.13, 0.16),
        WordTiming("are", 0.17, 0.2),
        WordTiming("you?", 0.21, 0.25),
    ]


async def test_one_socket_serves_sequential_and_concurrent_calls(fake: FakeCartesia, closing: Closer) -> None:
    tts = make(fake, closing)
    first = await tts.speak("one")
    second, third = await asyncio.gather(tts.speak("two two"), tts.speak("three three three"))
    assert first.audio == tone(3, 24000)
    assert second.audio == tone(7, 24000) and third.audio == tone(17, 24000)
    assert len(fake.connections) == 1 and len(fake.connections[0].contexts) == 3


async def test_bad_key_is_an_auth_error_not_retried(fake: FakeCartesia, closing: Closer) -> None:
    with pytest.raises(AuthenticationError, match="Invalid API key"):
        await make(fake, closing, api_key="wrong").speak("hello")
    assert fake.connections == []


async def test_handshake_rate_limit_retried_then_surfaced(fake: FakeCartesia, closing: Closer) -> None:
    fake.reject_status = [429, 502]
    assert (await make(fake, closing).speak("hi")).audio == tone(2, 24000)
    fake.reject_status = [429, 429, 429]
    with pytest.raises(RateLimitError):
        await make(fake, closing).speak("hi")


async def test_error_message_is_typed_and_the_socket_stays_usable(
    fake: FakeCartesia, closing: Closer
) -> None:
    fake.error_for = {"forbidden": (400, "Invalid voice", "voice not found")}
    tts = make(fake, closing)
    with pytest.raises(InvalidRequestError, match="voice not found"):
        await tts.speak("a forbidden word")
    assert (await tts.speak("fine")).audio == tone(4, 24000)
    assert len(fake.connections) == 1


async def test_dropped_socket_surfaces_then_reconnects(fake: FakeCartesia, closing: Closer) -> None:
    tts = make(fake, closing)
    fake.drop_after_chunks = 1
    got: list[TTSChunk] = []
    with pytest.raises(ProviderConnectionError):
        async for chunk in tts.speak_text_stream(_pieces("A long sentence that needs many chunks.")):
            got.append(chunk)
    assert len(got) == 1  # audio that arrived is kept; nothing is replayed
    fake.drop_after_chunks = None
    assert (await tts.speak("again")).audio == tone(5, 24000)
    assert len(fake.connections) == 2


async def test_server_close_code_is_typed(fake: FakeCartesia, closing: Closer) -> None:
    fake.close_with = (1011, "internal error")
    with pytest.raises(ProviderServerError, match="internal error") as info:
        async for _ in make(fake, closing).speak_text_stream(_pieces("hi")):
            pass
    assert info.value.retryable
    fake.close_with = (1008, "transcript too long")
    with pytest.raises(InvalidRequestError, match="transcript too long"):
        async for _ in make(fake, closing).speak_text_stream(_pieces("hi")):
            pass


async def test_barge_in_cancels_the_context(fake: FakeCartesia, closing: Closer) -> None:
    never = asyncio.Event()

    async def endless() -> AsyncIterator[str]:
        yield "Speaking now. "
        await never.wait()
        yield "never sent"

    tts = make(fake, closing)
    stream = tts.speak_text_stream(endless())
    assert (await anext(stream)).pcm
    await stream.aclose()  # what a barge-in does to the TTS stream
    (context,) = fake.connections[0].contexts.values()
    for _ in range(100):
        if context.cancelled:
            break
        await asyncio.sleep(0.01)
    assert context.cancelled and "never sent" not in context.transcript


async def test_stalled_service_times_out(fake: FakeCartesia, closing: Closer) -> None:
    fake.stall = True
    with pytest.raises(ProviderTimeoutError):
        async for _ in make(fake, closing, timeout_s=0.3).speak_text_stream(_pieces("hello")):
            pass


def test_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARTESIA_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="CARTESIA_API_KEY"):
        CartesiaTTSProvider()


async def _pieces(*texts: str) -> AsyncIterator[str]:
    for text in texts:
        yield text


@pytest.mark.live
@pytest.mark.skipif(
    not (os.environ.get("LLMRTC_LIVE_TESTS") and os.environ.get("CARTESIA_API_KEY")),
    reason="live test: set LLMRTC_LIVE_TESTS=1 and CARTESIA_API_KEY",
)
async def test_live_cartesia_streams_words(closing: Closer) -> None:
    tts = closing(CartesiaTTSProvider())
    chunks = [c async for c in tts.speak_text_stream(_pieces("Hello from ", "Cartesia."))]
    assert sum(len(c.pcm) for c in chunks) > 24000 and [w.text for w in words_of(chunks)][:1] == ["Hello"]
