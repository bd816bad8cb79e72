"""OpenAI realtime transcription on the wire: the real ``openai`` SDK's realtime client against a local session."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from llmrtc.audio.wav import pcm16_to_wav
from llmrtc.errors import AuthenticationError, ConfigError, ProviderConnectionError, RateLimitError
from llmrtc.providers.openai_realtime import OpenAIRealtimeSTTProvider
from llmrtc.types import STTConfig, STTResult
from tests.providers.conftest import Closer
from tests.providers.fakes.openai_realtime import FakeOpenAIRealtime, Speech
from tests.providers.helpers import FAST, serving
from tests.providers.stream_gate import Gate

PIECE = b"\x01\x00" * 1600  # 100 ms at 16 kHz


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAIRealtime]:
    async with serving(FakeOpenAIRealtime()) as server:
        yield server


def make(fake: FakeOpenAIRealtime, closing: Closer, **kw: object) -> OpenAIRealtimeSTTProvider:
    options: dict[str, object] = {
        "api_key": fake.api_key,
        "base_url": fake.base_url,
        "retry": FAST,
        "timeout_s": 5,
    }
    options.update(kw)
    return closing(OpenAIRealtimeSTTProvider(**options))  # type: ignore[arg-type]


async def audio(seconds: float, gate: Gate | None = None) -> AsyncIterator[bytes]:
    for i in range(round(seconds * 10)):
        if gate is not None and i == gate.at_piece:
            await gate.wait()
        yield PIECE
        await asyncio.sleep(0.01)  # ten times faster than real time, yet paced like a microphone


async def test_deltas_then_finals_per_utterance_while_audio_streams(
    fake: FakeOpenAIRealtime, closing: Closer
) -> None:
    fake.speech = [Speech("Hello there.", 0.2, 0.9), Speech("What time is it?", 1.8, 2.6)]
    gate = Gate(at_piece=16)  # 1.6 s of 4: after the first utterance ends (0.9 s + 500 ms of silence)
    results: list[STTResult] = []
    stt = make(fake, closing, language="en", prompt="a clock")
    async for result in stt.transcribe_stream(audio(4.0, gate), STTConfig(model="gpt-4o-mini-transcribe")):
        results.append(result)
        if result.is_final:
            gate.event.set()
    assert [(r.text, r.is_final, r.end_of_utterance) for r in results] == [
        ("Hello", False, False),
        ("Hello there.", False, False),
        ("Hello there.", True, True),
        ("What", False, False),
        ("What time", False, False),
        ("What time is", False, False),
        ("What time is it?", False, False),
        ("What time is it?", True, True),
    ]
    assert gate.opened_by_result  # the first utterance was final before the audio ended
    assert [r.duration_s for r in results if r.is_final] == [
        pytest.approx(0.7),
        pytest.approx(0.8),
    ]  # VAD spans
    session = fake.sessions[0]
    assert session.query == {"intent": "transcription"}
    assert session.headers["Authorization"] == f"Bearer {fake.api_key}"
    update = session.received[0]
    assert update["type"] == "session.update"
    audio_input = update["session"]["audio"]["input"]
    assert update["session"]["type"] == "transcription"
    assert audio_input["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio_input["transcription"] == {
        "model": "gpt-4o-mini-transcribe",
        "language": "en",
        "prompt": "a clock",
    }
    assert audio_input["turn_detection"]["type"] == "server_vad"
    assert abs(session.audio_bytes - 4.0 * 24000 * 2) <= 256  # resampled 16 kHz -> 24 kHz
    # The service's VAD committed both utterances; the one commit at the end found nothing left.
    assert session.types_received().count("input_audio_buffer.commit") == 1
    assert (
        session.sent[-1]["type"] == "error"
        and session.sent[-1]["error"]["code"] == "input_audio_buffer_commit_empty"
    )


async def test_input_ending_inside_speech_commits_the_buffer(
    fake: FakeOpenAIRealtime, closing: Closer
) -> None:
    fake.speech = [Speech("one two three four", 0.1, 2.1)]
    results = [r async for r in make(fake, closing).transcribe_stream(audio(1.2))]
    assert [(r.text, r.is_final) for r in results if r.is_final] == [("one two", True)]
    assert fake.sessions[0].types_received()[-1] == "input_audio_buffer.commit"


async def test_transcribe_wav_and_failed_utterance_skipped(fake: FakeOpenAIRealtime, closing: Closer) -> None:
    fake.speech = [Speech("lost words", 0.1, 0.5, fail=True), Speech("good morning", 1.2, 1.6)]
    wav = pcm16_to_wav(b"\x05\x00" * 48000 * 3, 48000)
    result = await make(fake, closing).transcribe(wav)
    assert result.text == "good morning" and result.duration_s == pytest.approx(3.0)


async def test_bad_key_auth_error_not_retried(fake: FakeOpenAIRealtime, closing: Closer) -> None:
    with pytest.raises(AuthenticationError):
        async for _ in make(fake, closing, api_key="sk-wrong").transcribe_stream(audio(0.2)):
            pass
    assert fake.sessions == []


async def test_handshake_retried_and_error_events_typed(fake: FakeOpenAIRealtime, closing: Closer) -> None:
    fake.speech = [Speech("hi", 0.1, 0.3)]
    fake.reject_status = [503]
    results = [r async for r in make(fake, closing).transcribe_stream(audio(1.0))]
    assert [r.text for r in results if r.is_final] == ["hi"]

    fake.error_after_s = (0.5, "rate_limit_error", "rate_limit_exceeded", "Too many sessions")
    with pytest.raises(RateLimitError, match="Too many sessions"):
        async for _ in make(fake, closing).transcribe_stream(audio(1.0)):
            pass

    fake.drop_after_s = 0.3
    with pytest.raises(ProviderConnectionError):
        async for _ in make(fake, closing).transcribe_stream(audio(1.0)):
            pass


async def test_consumer_stopping_early_closes_the_socket(fake: FakeOpenAIRealtime, closing: Closer) -> None:
    fake.speech = [Speech("stop here now", 0.1, 0.4)]
    stream = make(fake, closing).transcribe_stream(audio(10.0))
    assert (await anext(stream)).text == "stop"
    await stream.aclose()
    for _ in range(100):
        if fake.sessions[0].closed_by_client:
            break
        await asyncio.sleep(0.01)
    assert fake.sessions[0].closed_by_client


def test_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIRealtimeSTTProvider()


@pytest.mark.live
@pytest.mark.skipif(
    not (os.environ.get("LLMRTC_LIVE_TESTS") and os.environ.get("OPENAI_API_KEY")),
    reason="live test: set LLMRTC_LIVE_TESTS=1 and OPENAI_API_KEY",
)
async def test_live_realtime_transcription(closing: Closer) -> None:
    from llmrtc.audio.codec import resample_pcm16
    from llmrtc.providers.openai import OpenAITTSProvider

    speech = await closing(OpenAITTSProvider()).speak("The meeting starts at noon.")
    pcm = resample_pcm16(speech.audio, speech.sample_rate, 16000) + b"\x00\x00" * 16000

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(pcm), 3200):
            yield pcm[i : i + 3200]
            await asyncio.sleep(0.1)

    finals = [
        r.text async for r in closing(OpenAIRealtimeSTTProvider()).transcribe_stream(pieces()) if r.is_final
    ]
    assert "noon" in " ".join(finals).lower()
