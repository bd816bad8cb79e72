"""Faster-Whisper: the OpenAI-compatible transcription server on the wire, and the in-process library."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest

from llmrtc.errors import ConfigError, InvalidRequestError, ProviderConnectionError, ProviderServerError
from llmrtc.providers.faster_whisper import (
    FasterWhisperLocalSTTProvider,
    FasterWhisperSTTProvider,
    transcription_url,
    wav_to_float32_16k,
)
from llmrtc.providers.resilience import RetryPolicy
from llmrtc.types import STTConfig
from tests.providers.conftest import Closer
from tests.providers.fakes._audio import sine_wav
from tests.providers.fakes.openai import Failure, FakeOpenAI, Transcript
from tests.providers.helpers import serving


def speechlike_wav(rate: int = 16000, seconds: float = 0.5, channels: int = 1) -> bytes:
    return sine_wav(seconds, rate, freq=300, amplitude=9000, channels=channels)


async def test_reference_name_faster_whisper_provider(fast_retry: RetryPolicy, closing: Closer) -> None:
    """The reference's ``new FasterWhisperProvider({baseUrl})`` as ``FasterWhisperProvider(base_url=...)``."""
    from llmrtc.providers.faster_whisper import FasterWhisperProvider

    async with serving(FakeOpenAI()) as server:
        server.push_transcript(Transcript("hello from the reference name"))
        stt = closing(FasterWhisperProvider(base_url=server.root_url, retry=fast_retry))
        assert isinstance(stt, FasterWhisperSTTProvider)
        result = await stt.transcribe(sine_wav(0.2, 16000, freq=440, amplitude=3000))
    assert result.text == "hello from the reference name"
    assert server.requests[0].path == "/v1/audio/transcriptions"


def test_transcription_url_forms() -> None:
    assert transcription_url("http://h:8000") == "http://h:8000/v1/audio/transcriptions"
    assert transcription_url("http://h:8000/v1/") == "http://h:8000/v1/audio/transcriptions"
    assert transcription_url("http://h/api/v1") == "http://h/api/v1/audio/transcriptions"
    assert transcription_url("http://h/v1/audio/transcriptions") == "http://h/v1/audio/transcriptions"


async def test_server_transcription_payload(fast_retry: RetryPolicy, closing: Closer) -> None:
    async with serving(FakeOpenAI()) as server:
        server.push_transcript(Transcript("  the quick brown fox ", language="en", duration=0.5))
        stt = closing(FasterWhisperSTTProvider(server.root_url, language="en", retry=fast_retry))
        audio = speechlike_wav()
        result = await stt.transcribe(audio, STTConfig(prompt="animals"))
        assert result.text == "the quick brown fox" and result.language == "en" and result.duration_s == 0.5
        sent = server.requests[0]
        assert sent.path == "/v1/audio/transcriptions"
        assert sent.body == {
            "model": "Systran/faster-whisper-small",
            "response_format": "verbose_json",
            "language": "en",
            "prompt": "animals",
        }
        assert sent.files["file"] == audio
        assert "Authorization" not in sent.headers


async def test_server_errors_retried_and_connection(fast_retry: RetryPolicy, closing: Closer) -> None:
    async with serving(FakeOpenAI()) as server:
        stt = closing(FasterWhisperSTTProvider(server.root_url, retry=fast_retry))
        server.push_transcript(Failure(503, "model loading"), Transcript("ok"))
        assert (await stt.transcribe(speechlike_wav())).text == "ok"
        server.push_transcript(*[Failure(500, "cuda oom")] * 3)
        with pytest.raises(ProviderServerError, match="cuda oom"):
            await stt.transcribe(speechlike_wav())
        server.push_transcript(Failure(422, "bad file"))
        with pytest.raises(InvalidRequestError):
            await stt.transcribe(b"not audio")
        assert len(server.requests) == 2 + 3 + 1
    with pytest.raises(ProviderConnectionError):
        await stt.transcribe(speechlike_wav())


def test_wav_to_float32_resamples_and_downmixes() -> None:
    samples = wav_to_float32_16k(speechlike_wav(rate=48000, seconds=0.25, channels=2))
    assert samples.dtype == np.float32 and abs(len(samples) - 4000) <= 1
    assert 0.25 < float(np.abs(samples).max()) <= 0.3


async def test_local_missing_model_says_what_to_do(tmp_path: Path) -> None:
    pytest.importorskip("faster_whisper")
    stt = FasterWhisperLocalSTTProvider(tmp_path / "nope")
    with pytest.raises(ConfigError, match="does not exist"):
        await stt.init()
    stt = FasterWhisperLocalSTTProvider(tmp_path)
    with pytest.raises(ConfigError, match=r"no model\.bin"):
        await stt.transcribe(speechlike_wav())
    stt = FasterWhisperLocalSTTProvider("tiny-model-that-cannot-be-fetched", local_files_only=True)
    with pytest.raises(ConfigError, match="could not load model"):
        await stt.init()
    with pytest.raises(ConfigError):
        FasterWhisperLocalSTTProvider("  ")


async def test_local_rejects_non_wav(tmp_path: Path) -> None:
    stt = FasterWhisperLocalSTTProvider(tmp_path)
    with pytest.raises(InvalidRequestError, match="16-bit WAV"):
        await stt.transcribe(b"RIFF....garbage")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("faster_whisper")
    from tests.providers.tiny_whisper import build_tiny_whisper

    return build_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny")


async def test_local_transcribes_with_a_real_ctranslate2_model(tiny_model: Path) -> None:
    """A tiny offline CTranslate2 Whisper (built by the test) that always says "hello world" proves the
    whole in-process path: WAV decode + resample, features, CTranslate2 decoding, tokenizer, result."""
    stt = FasterWhisperLocalSTTProvider(tiny_model, compute_type="int8", num_workers=2)
    await stt.init()
    try:
        result = await stt.transcribe(speechlike_wav(rate=48000, seconds=0.75, channels=2))
        assert result.text == "hello world"
        assert result.language == "en" and result.duration_s == pytest.approx(0.75, abs=0.01)
        both = await asyncio.gather(
            stt.transcribe(speechlike_wav(seconds=0.3)), stt.transcribe(speechlike_wav(seconds=0.4))
        )
        assert [r.duration_s for r in both] == [pytest.approx(0.3, abs=0.01), pytest.approx(0.4, abs=0.01)]
    finally:
        await stt.aclose()


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("FASTER_WHISPER_URL"), reason="FASTER_WHISPER_URL not set")
async def test_live_faster_whisper_server(closing: Closer) -> None:
    stt = closing(FasterWhisperSTTProvider(os.environ["FASTER_WHISPER_URL"]))
    result = await stt.transcribe(speechlike_wav())
    assert isinstance(result.text, str)
