"""Deepgram on the wire: the real ``deepgram-sdk`` against a local live-transcription socket and Aura endpoint."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from llmrtc.audio.wav import pcm16_to_wav
from llmrtc.errors import (
    AuthenticationError,
    ConfigError,
    InvalidRequestError,
    ProviderConnectionError,
    ProviderServerError,
    RateLimitError,
)
from llmrtc.providers.deepgram import DeepgramSTTProvider, DeepgramTTSProvider
from llmrtc.types import STTResult, TTSConfig, WordTiming
from tests.providers.conftest import Closer
from tests.providers.fakes.deepgram import Failure, FakeDeepgram, Utterance, tone
from tests.providers.helpers import FAST, serving
from tests.providers.stream_gate import Gate

PIECE_S = 0.1
PIECE = b"\x01\x00" * int(16000 * PIECE_S)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDeepgram]:
    async with serving(FakeDeepgram()) as server:
        yield server


def stt(fake: FakeDeepgram, closing: Closer, **kw: object) -> DeepgramSTTProvider:
    options: dict[str, object] = {
        "api_key": fake.api_key,
        "base_url": fake.base_url,
        "ws_base_url": fake.ws_base_url,
        "retry": FAST,
        "timeout_s": 5,
    }
    options.update(kw)
    return closing(DeepgramSTTProvider(**options))  # type: ignore[arg-type]


async def audio(seconds: float, pause_s: float = 0.0, gate: Gate | None = None) -> AsyncIterator[bytes]:
    """``seconds`` of PCM16 16 kHz in 100 ms pieces; with a ``gate``, the rest waits for it to open."""
    for i in range(round(seconds / PIECE_S)):
        if pause_s and i == 1:
            await asyncio.sleep(pause_s)
        if gate is not None and i == gate.at_piece:
            await gate.wait()
        yield PIECE
        await asyncio.sleep(0.005)  # paced like a (fast) microphone


async def test_stream_interim_results_finals_and_word_timings(fake: FakeDeepgram, closing: Closer) -> None:
    fake.utterances = [Utterance.of("Hello there world.", 0.2), Utterance.of("How are you?", 2.0)]
    provider = stt(fake, closing)
    gate = Gate(at_piece=15)  # 1.5 s of 3.6: after the first utterance's final (1.05 s + 300 ms endpointing)
    results: list[STTResult] = []
    async for result in provider.transcribe_stream(audio(3.6, gate=gate)):
        results.append(result)
        if result.is_final:
            gate.event.set()

    got = [(r.text, r.is_final, r.end_of_utterance) for r in results]
    assert got == [
        ("Hello", False, False),
        ("Hello there", False, False),
        ("Hello there world.", True, True),
        ("How", False, False),
        ("How are", False, False),
        ("How are you?", True, True),
    ]
    assert gate.opened_by_result  # results arrive while audio is still being sent, not after the stream ends
    final = results[2]
    assert final.words == [
        WordTiming("Hello", 0.2, 0.45),
        WordTiming("there", 0.5, 0.75),
        WordTiming("world.", 0.8, 1.05),
    ]
    assert final.confidence == pytest.approx(0.98) and final.language == "en"
    query = fake.sessions[0].query
    assert query["model"] == "nova-3" and query["encoding"] == "linear16" and query["sample_rate"] == "16000"
    assert query["interim_results"] == "true" and query["endpointing"] == "300"
    assert query["utterance_end_ms"] == "1000" and query["vad_events"] == "true"
    assert fake.sessions[0].headers["Authorization"] == f"Token {fake.api_key}"
    assert fake.sessions[0].audio_bytes == len(PIECE) * 36
    assert fake.sessions[0].controls == ["CloseStream"]


async def test_utterance_end_message_ends_the_utterance(fake: FakeDeepgram, closing: Closer) -> None:
    fake.utterances = [Utterance.of("Book a table.", 0.1, speech_final=False)]
    provider = stt(fake, closing)
    results = [r async for r in provider.transcribe_stream(audio(2.5))]
    finals = [(r.text, r.end_of_utterance) for r in results if r.is_final]
    assert finals == [("Book a table.", False), ("", True)]
    assert any(m["type"] == "UtteranceEnd" for m in fake.sessions[0].sent)


async def test_stream_ending_inside_an_utterance_finalizes_it(fake: FakeDeepgram, closing: Closer) -> None:
    fake.utterances = [Utterance.of("one two three four", 0.0)]
    provider = stt(fake, closing, language="de", model="nova-2")
    results = [r async for r in provider.transcribe_stream(audio(0.8))]
    finals = [(r.text, r.end_of_utterance) for r in results if r.is_final]
    assert finals == [("one two", False), ("", True)]
    assert fake.sessions[0].query["language"] == "de" and fake.sessions[0].query["model"] == "nova-2"


async def test_keep_alive_while_the_audio_source_is_silent(fake: FakeDeepgram, closing: Closer) -> None:
    provider = stt(fake, closing, keepalive_s=0.05)
    results = [r async for r in provider.transcribe_stream(audio(0.3, pause_s=0.4))]
    assert results == []
    controls = fake.sessions[0].controls
    assert controls.count("KeepAlive") >= 3 and controls[-1] == "CloseStream"


async def test_transcribe_wav_resamples_and_joins_finals(fake: FakeDeepgram, closing: Closer) -> None:
    fake.utterances = [Utterance.of("good morning", 0.1), Utterance.of("to you", 1.0)]
    stereo_48k = pcm16_to_wav(b"\x10\x00\x20\x00" * 48000 * 2, 48000, 2)
    result = await stt(fake, closing).transcribe(stereo_48k)
    assert result.text == "good morning to you" and result.is_final and result.end_of_utterance
    assert [w.text for w in result.words] == ["good", "morning", "to", "you"]
    assert result.duration_s == pytest.approx(2.0, abs=0.01)
    assert abs(fake.sessions[0].audio_bytes - 2 * 16000 * 2) <= 64  # resampled to 16 kHz mono


async def test_bad_key_is_an_auth_error_not_retried(fake: FakeDeepgram, closing: Closer) -> None:
    provider = stt(fake, closing, api_key="wrong")
    with pytest.raises(AuthenticationError):
        async for _ in provider.transcribe_stream(audio(0.2)):
            pass
    assert fake.sessions == []


async def test_handshake_rate_limit_and_server_error_retried(fake: FakeDeepgram, closing: Closer) -> None:
    fake.utterances = [Utterance.of("hi", 0.0)]
    fake.reject_status = [429, 503]
    results = [r async for r in stt(fake, closing).transcribe_stream(audio(0.6))]
    assert [r.text for r in results if r.is_final] == ["hi"]
    fake.reject_status = [429, 429, 429]
    with pytest.raises(RateLimitError):
        async for _ in stt(fake, closing).transcribe_stream(audio(0.2)):
            pass


async def test_server_close_mid_stream_is_typed_and_not_replayed(fake: FakeDeepgram, closing: Closer) -> None:
    fake.utterances = [Utterance.of("first words here", 0.0)]
    fake.close_after_s = (0.5, 1011, "NET-0001: no audio received")
    got: list[STTResult] = []
    with pytest.raises(ProviderServerError, match="NET-0001"):
        async for result in stt(fake, closing).transcribe_stream(audio(2.0)):
            got.append(result)
    assert [r.text for r in got] == ["first"] and len(fake.sessions) == 1

    fake.close_after_s = (0.2, 1008, "DATA-0000: could not process audio")
    with pytest.raises(InvalidRequestError, match="DATA-0000"):
        async for _ in stt(fake, closing).transcribe_stream(audio(1.0)):
            pass

    fake.close_after_s = None
    fake.drop_after_s = 0.3
    with pytest.raises(ProviderConnectionError):
        async for _ in stt(fake, closing).transcribe_stream(audio(1.0)):
            pass


async def test_audio_source_failure_propagates_and_closes_the_socket(
    fake: FakeDeepgram, closing: Closer
) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield PIECE
        await asyncio.sleep(0.05)
        raise RuntimeError("microphone unplugged")

    with pytest.raises(RuntimeError, match="microphone unplugged"):
        async for _ in stt(fake, closing).transcribe_stream(failing()):
            pass
    for _ in range(100):
        if fake.sessions[0].closed_by_client:
            break
        await asyncio.sleep(0.01)
    assert fake.sessions[0].closed_by_client


async def test_consumer_stopping_early_closes_the_socket(fake: FakeDeepgram, closing: Closer) -> None:
    fake.utterances = [Utterance.of("stop me now please", 0.0)]
    stream = stt(fake, closing).transcribe_stream(audio(5.0))
    first = await anext(stream)
    assert first.text == "stop" and not first.is_final
    await stream.aclose()  # what a barge-in or a hang-up does
    for _ in range(100):
        if fake.sessions[0].closed_by_client:
            break
        await asyncio.sleep(0.01)
    assert fake.sessions[0].closed_by_client


def test_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPGRAM_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="DEEPGRAM_API_KEY"):
        DeepgramSTTProvider()
    with pytest.raises(ConfigError, match="DEEPGRAM_API_KEY"):
        DeepgramTTSProvider()


# ---------------------------------------------------------------------------------------------- Aura TTS


def tts(fake: FakeDeepgram, closing: Closer, **kw: object) -> DeepgramTTSProvider:
    options: dict[str, object] = {"api_key": fake.api_key, "base_url": fake.base_url, "retry": FAST}
    options.update(kw)
    return closing(DeepgramTTSProvider(**options))  # type: ignore[arg-type]


async def test_aura_streams_linear16_exactly(fake: FakeDeepgram, closing: Closer) -> None:
    provider = tts(fake, closing, sample_rate=16000)
    chunks = [c async for c in provider.speak_stream("Hello from Aura.", TTSConfig(voice="aura-2-zeus-en"))]
    assert len(chunks) > 3 and all(c.sample_rate == 16000 and len(c.pcm) % 2 == 0 for c in chunks)
    assert b"".join(c.pcm for c in chunks) == tone(len("Hello from Aura."), 16000)
    request = fake.speak_requests[0]
    assert request.body == {"text": "Hello from Aura."}
    assert request.query["model"] == "aura-2-zeus-en" and request.query["sample_rate"] == "16000"
    assert request.headers["Authorization"] == f"Token {fake.api_key}"


async def test_aura_errors_mapped_and_retried(fake: FakeDeepgram, closing: Closer) -> None:
    with pytest.raises(AuthenticationError, match="Invalid credentials"):
        await tts(fake, closing, api_key="bad").speak("hi")
    assert len(fake.speak_requests) == 1

    fake.push(Failure(429, "slow down", retry_after="0"), Failure(500, "oops"))
    result = await tts(fake, closing).speak("ok")
    assert result.audio == tone(2, 24000) and len(fake.speak_requests) == 4

    fake.push(*[Failure(503, "down")] * 3)
    with pytest.raises(ProviderServerError, match="down"):
        await tts(fake, closing).speak("hi")


async def test_aura_socket_speaks_text_pieces_as_they_arrive(fake: FakeDeepgram, closing: Closer) -> None:
    heard_audio = asyncio.Event()
    waited_for_audio: list[bool] = []

    async def answer() -> AsyncIterator[str]:
        yield "Hello there. "
        await asyncio.wait_for(heard_audio.wait(), 5)
        waited_for_audio.append(True)
        yield "How are "
        yield "you"

    chunks = []
    async for chunk in tts(fake, closing).speak_text_stream(answer(), TTSConfig(voice="aura-2-zeus-en")):
        chunks.append(chunk)
        heard_audio.set()
    assert waited_for_audio == [True]  # audio of the first sentence came before the rest of the text
    assert b"".join(c.pcm for c in chunks) == tone(len("Hello there."), 24000) + tone(
        len(" How are you"), 24000
    )
    session = fake.speak_sessions[0]
    assert session.query["model"] == "aura-2-zeus-en" and session.query["encoding"] == "linear16"
    assert session.controls == ["Speak", "Speak", "Speak", "Flush", "Close"]
    assert session.headers["Authorization"] == f"Token {fake.api_key}"


async def test_aura_socket_failures_are_typed(fake: FakeDeepgram, closing: Closer) -> None:
    with pytest.raises(AuthenticationError):
        async for _ in tts(fake, closing, api_key="bad").speak_text_stream(_texts("hi.")):
            pass
    fake.speak_drop_after_frames = 1
    got = []
    with pytest.raises(ProviderConnectionError):
        async for chunk in tts(fake, closing).speak_text_stream(
            _texts("A long first sentence here.", " More.")
        ):
            got.append(chunk)
    assert len(got) == 1


async def _texts(*pieces: str) -> AsyncIterator[str]:
    for piece in pieces:
        yield piece


@pytest.mark.live
@pytest.mark.skipif(
    not (os.environ.get("LLMRTC_LIVE_TESTS") and os.environ.get("DEEPGRAM_API_KEY")),
    reason="live test: set LLMRTC_LIVE_TESTS=1 and DEEPGRAM_API_KEY",
)
async def test_live_deepgram_round_trip(closing: Closer) -> None:
    speech = await closing(DeepgramTTSProvider(sample_rate=16000)).speak("The weather is sunny today.")
    finals: list[str] = []

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(speech.audio), 3200):
            yield speech.audio[i : i + 3200]
            await asyncio.sleep(0.1)

    async for result in closing(DeepgramSTTProvider()).transcribe_stream(pieces()):
        if result.is_final and result.text:
            finals.append(result.text)
    assert "sunny" in " ".join(finals).lower()
