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
    InvalidRequestError,
    ProviderConnectionError,
    ProviderError,
    ProviderResponseError,
    ProviderServerError,
    ProviderTimeoutError,
    RateLimitError,
)
from llmrtc.providers.elevenlabs import ElevenLabsTTSProvider, parse_output_format
from llmrtc.types import TTSChunk, TTSConfig
from tests.providers.fakes._base import HTML_PAGE, Raw
from tests.providers.fakes.elevenlabs import CloseAfter, Failure, FakeElevenLabs, Speech, tone
from tests.providers.helpers import FAST, dominant_hz, serving


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


async def test_http_200_that_is_not_audio_is_not_played(
    fake: FakeElevenLabs, tts: ElevenLabsTTSProvider
) -> None:
    fake.http_raw = [Raw(HTML_PAGE)] * 3
    with pytest.raises(ProviderResponseError) as info:
        await tts.speak("hello")
    assert info.value.retryable and len(fake.requests) == 3
    fake.http_raw = [Raw(HTML_PAGE, "audio/mpeg")]
    assert (await tts.speak("hello")).audio == tone(5, 24000), "sniffed, retried, then the real audio"


async def test_http_config_rate_and_format_are_honoured(
    fake: FakeElevenLabs, tts: ElevenLabsTTSProvider
) -> None:
    from llmrtc.audio.codec import decode_audio

    pcm16k = await tts.speak("Rate.", TTSConfig(sample_rate=16000))
    assert pcm16k.sample_rate == 16000 and pcm16k.audio == tone(5, 16000)
    assert fake.requests[-1].query["output_format"] == "pcm_16000", "asked of the service, not resampled"
    mp3 = await tts.speak("A" * 50, TTSConfig(format="mp3"))
    assert mp3.format == "mp3" and mp3.audio[:3] in (b"ID3", b"\xff\xfb", b"\xff\xf3")
    assert fake.requests[-1].query["output_format"] == "mp3_44100_128", "the service's own MP3"
    assert dominant_hz(decode_audio(mp3.audio, "mp3", 44100), 44100) == pytest.approx(440, abs=5)
    wav = await tts.speak("A" * 50, TTSConfig(format="wav", sample_rate=8000))
    assert wav.format == "wav" and wav.sample_rate == 8000 and wav.audio[:4] == b"RIFF"
    assert dominant_hz(decode_audio(wav.audio, "wav", 8000), 8000) == pytest.approx(440, abs=5)


# ---------------------------------------------------------------------------------------------- WebSocket


async def speak_all(
    tts: ElevenLabsTTSProvider, *texts: str, config: TTSConfig | None = None
) -> list[TTSChunk]:
    return [c async for c in tts.speak_text_stream(pieces(*texts), config)]


async def test_ws_protocol_messages(fake: FakeElevenLabs, tts: ElevenLabsTTSProvider) -> None:
    chunks = await speak_all(tts, "Hel", "lo there. How ", "are you", config=TTSConfig(speed=0.9))
    pcm = b"".join(c.pcm for c in chunks)
    assert all(c.sample_rate == 24000 for c in chunks)
    session = fake.sessions[0]
    assert session.path == "/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM/multi-stream-input"
    assert session.query == {
        "model_id": "eleven_flash_v2_5",
        "output_format": "pcm_24000",
        "inactivity_timeout": "60",
    }
    assert session.headers["xi-api-key"] == fake.api_key
    init, *texts, flush, close = session.received[: len(session.received)]
    (context,) = session.contexts()[:1]
    assert init == {"text": " ", "context_id": context, "voice_settings": init["voice_settings"]}
    assert init["voice_settings"]["speed"] == pytest.approx(0.9)
    # Word-complete pieces ending in a space; a finished sentence is flushed; the end flushes and closes.
    assert [t["text"] for t in texts] == ["Hello there. ", "How ", "are "]
    assert all(t["context_id"] == context for t in texts)
    assert texts[0].get("flush") is True and "flush" not in texts[1]
    assert flush == {"context_id": context, "flush": True, "text": "you "}
    assert close == {"context_id": context, "close_context": True}
    assert pcm == tone(len("Hello there. "), 24000) + tone(len("How are you "), 24000)


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
    context = fake.sessions[0].contexts()[0]
    assert fake.sessions[0].log[:2] == [f"text:{context}:The first sentence. ", f"audio:{context}"]
    assert b"".join(c.pcm for c in chunks) == tone(20, 24000) + tone(16, 24000)


async def test_ws_one_socket_reused_across_turns_and_kept_alive(fake: FakeElevenLabs) -> None:
    """One socket per provider session: later turns reuse it; between turns the next context is opened
    ahead and kept alive with the vendor's keep-alive (``{"text": ""}``), so the service's inactivity
    timeout (1 s here) never closes it."""
    tts = make(fake, keepalive_s=0.2, inactivity_timeout_s=1)
    try:
        first = await speak_all(tts, "One. ")
        await asyncio.sleep(1.5)
        second = await speak_all(tts, "Two. ")
        third = await speak_all(tts, "Three. ")
    finally:
        await tts.aclose()
    assert len(fake.sessions) == 1, "one WebSocket for every turn"
    session = fake.sessions[0]
    assert session.close is None, "never closed for inactivity"
    assert [b"".join(c.pcm for c in turn) for turn in (first, second, third)] == [
        tone(5, 24000),
        tone(5, 24000),
        tone(7, 24000),
    ]
    contexts = session.contexts()
    spoken = [entry.split(":")[1] for entry in session.log if entry.startswith("final:")]
    assert len(spoken) == 3 and len(set(spoken)) == 3, "a context per turn"
    assert spoken[1] in contexts and f"keepalive:{spoken[1]}" in session.log, (
        "the idle context was kept alive"
    )


async def test_ws_reconnects_when_the_service_closed_the_idle_socket(fake: FakeElevenLabs) -> None:
    """The service closes an idle socket (its inactivity timeout, 0.3 s here, before our keep-alive is due):
    the next turn opens a new one, without an error."""
    fake.inactivity_s = 0.3
    tts = make(fake, keepalive_s=5, inactivity_timeout_s=6)
    try:
        assert b"".join(c.pcm for c in await speak_all(tts, "Before. ")) == tone(8, 24000)
        await asyncio.sleep(0.6)
        assert fake.sessions[0].close is not None and "Have not received" in fake.sessions[0].close[1]
        assert b"".join(c.pcm for c in await speak_all(tts, "After. ")) == tone(7, 24000)
    finally:
        await tts.aclose()
    assert len(fake.sessions) == 2


@pytest.mark.parametrize("after", [0, 1, 2])
async def test_ws_close_while_sending_is_retried_on_a_fresh_socket(fake: FakeElevenLabs, after: int) -> None:
    """The service closing (1008 "something went wrong") right after connecting, or while text is being
    sent, never leaks a websockets exception: before any audio the turn is retried on a new socket with
    the text read so far replayed."""
    fake.ws_close = [CloseAfter(after, 1008, "something went wrong")]
    tts = make(fake)
    try:
        chunks = await speak_all(tts, "Hello ", "there. ", "Bye.")
    finally:
        await tts.aclose()
    assert b"".join(c.pcm for c in chunks) == tone(len("Hello there. "), 24000) + tone(len("Bye. "), 24000)
    assert len(fake.sessions) == 2
    assert fake.sessions[1].texts() == ["Hello ", "there. ", "Bye. "]


async def test_ws_close_while_the_llm_is_still_thinking_keeps_the_llm_stream(fake: FakeElevenLabs) -> None:
    """The socket fails while the text source (an LLM) is between pieces: the retry on a fresh socket must
    get every piece, and the LLM's stream must not be cancelled by the failed attempt."""
    fake.ws_close = [CloseAfter(2, 1008, "something went wrong")]
    finished = asyncio.Event()

    async def thinking_llm() -> AsyncIterator[str]:
        yield "Hello "
        await asyncio.sleep(0.3)
        yield "there. "
        yield "Bye."
        finished.set()

    tts = make(fake)
    try:
        chunks = [c async for c in tts.speak_text_stream(thinking_llm())]
    finally:
        await tts.aclose()
    assert finished.is_set(), "the LLM stream ran to its end"
    assert b"".join(c.pcm for c in chunks) == tone(len("Hello there. "), 24000) + tone(len("Bye. "), 24000)
    assert len(fake.sessions) == 2 and fake.sessions[1].texts() == ["Hello ", "there. ", "Bye. "]


@pytest.mark.parametrize(
    ("code", "reason", "expected", "retryable"),
    [
        (1008, "something went wrong", ProviderServerError, True),
        (
            1008,
            "Have not received new text in the last 20 seconds. Closing the socket.",
            ProviderConnectionError,
            True,
        ),
        (1011, "internal error", ProviderServerError, True),
        (1008, "invalid_api_key: Invalid API key", AuthenticationError, False),
        (1008, "quota_exceeded: This request exceeds your quota", InvalidRequestError, False),
        (1008, "max_active_conversations: too many concurrent contexts", RateLimitError, True),
    ],
)
async def test_ws_closes_are_classified(
    fake: FakeElevenLabs, code: int, reason: str, expected: type[Exception], retryable: bool
) -> None:
    fake.ws_close = [CloseAfter(2, code, reason)] * 3
    tts = make(fake)
    try:
        with pytest.raises(ProviderError) as info:
            await speak_all(tts, "Some ", "text ", "here.")
    finally:
        await tts.aclose()
    assert type(info.value) is expected and info.value.retryable is retryable
    assert len(fake.sessions) == (3 if retryable else 1)


async def test_ws_words_timed_from_alignment(fake: FakeElevenLabs, tts: ElevenLabsTTSProvider) -> None:
    chunks = await speak_all(tts, "Hello there. ", "How are you?")
    words = [w for c in chunks for w in c.words]
    assert [w.text for w in words] == ["Hello", "there.", "How", "are", "you?"]
    # 10 ms per character from the start of this call; the second sentence follows the first's audio
    first_audio = len("Hello there. ") * 0.01
    expected = [(0.0, 0.05), (0.06, 0.12), (first_audio, first_audio + 0.03)]
    for word, (start, end) in zip(words, expected, strict=False):
        assert (word.start_s, word.end_s) == (pytest.approx(start), pytest.approx(end))
    assert words[-1].end_s == pytest.approx(first_audio + len("How are you?") * 0.01)


async def test_ws_config_rate_is_asked_of_the_service(
    fake: FakeElevenLabs, tts: ElevenLabsTTSProvider
) -> None:
    chunks = await speak_all(tts, "Rate test.", config=TTSConfig(sample_rate=16000))
    assert all(c.sample_rate == 16000 for c in chunks)
    assert b"".join(c.pcm for c in chunks) == tone(len("Rate test. "), 16000)
    assert fake.sessions[-1].query["output_format"] == "pcm_16000"


async def test_ws_mp3_output_decoded(fake: FakeElevenLabs) -> None:
    tts = make(fake, output_format="mp3_22050_32")
    try:
        chunks = await speak_all(tts, "B" * 30 + ".", " " + "C" * 29)
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
            await speak_all(tts, "hello ")
    finally:
        await tts.aclose()
    assert len(fake.sessions) == 1


async def test_ws_handshake_rate_limit_retried_then_surfaced(
    fake: FakeElevenLabs, tts: ElevenLabsTTSProvider
) -> None:
    fake.ws_reject_status = 429
    with pytest.raises(RateLimitError):
        await speak_all(tts, "hello ")
    fake.ws_reject_status = None
    assert b"".join(c.pcm for c in await speak_all(tts, "hi. ")) == tone(4, 24000)


async def test_ws_connection_cut_midway(fake: FakeElevenLabs, tts: ElevenLabsTTSProvider) -> None:
    fake.ws_cut_after_audio = 1
    got: list[TTSChunk] = []
    with pytest.raises(ProviderConnectionError):
        async for chunk in tts.speak_text_stream(pieces("First. ", "Second. ", "Third.")):
            got.append(chunk)
    assert b"".join(c.pcm for c in got) == tone(7, 24000), "audio already heard is never replayed"
    fake.ws_cut_after_audio = None
    assert b"".join(c.pcm for c in await speak_all(tts, "Again. ")) == tone(7, 24000)
    assert len(fake.sessions) == 2, "the next turn reconnected"


async def test_ws_barge_in_closes_the_context_and_keeps_the_socket(
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
    session = fake.sessions[0]
    context = session.contexts()[0]
    for _ in range(100):
        if f"close_context:{context}" in session.log:
            break
        await asyncio.sleep(0.02)
    assert f"close_context:{context}" in session.log and not session.closed_by_client
    assert b"".join(c.pcm for c in await speak_all(tts, "Next turn. ")) == tone(11, 24000)
    assert len(fake.sessions) == 1


async def test_ws_failing_text_source_surfaces_its_error(
    fake: FakeElevenLabs, tts: ElevenLabsTTSProvider
) -> None:
    async def broken() -> AsyncIterator[str]:
        yield "Start. "
        raise RuntimeError("llm died")

    with pytest.raises(RuntimeError, match="llm died"):
        await speak_all_from(tts, broken())

    async def llm_rate_limited() -> AsyncIterator[str]:
        yield "Start "
        raise RateLimitError("busy", provider="openai")

    with pytest.raises(RateLimitError) as info:
        await speak_all_from(tts, llm_rate_limited())
    assert info.value.provider == "openai", "the LLM's error, untouched and not retried as TTS"
    assert len(fake.sessions) == 1 and len(fake.sessions[0].contexts()) <= 3


async def speak_all_from(tts: ElevenLabsTTSProvider, texts: AsyncIterator[str]) -> list[TTSChunk]:
    return [c async for c in tts.speak_text_stream(texts)]


async def test_ws_silent_service_times_out_after_input_ends(fake: FakeElevenLabs) -> None:
    fake.ws_stall_after_close = True
    tts = make(fake, timeout_s=0.3, max_retries=0)
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
        "wss://api.elevenlabs.io/v1/text-to-speech/v1/multi-stream-input?"
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
