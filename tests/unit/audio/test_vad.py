"""Silero VAD engines: both runtimes, batched evaluation equal to single-stream evaluation."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from llmrtc.audio.segmenter import Segmenter, SegmenterConfig, SpeechEnd, SpeechStart
from llmrtc.audio.vad import DEFAULT_SILENCE_FLOOR_DBFS, VADEngine, get_shared_engine, load_model
from llmrtc.errors import AudioError, ConfigError

from .conftest import load_pcm

NAMES = ("multi_16k", "capital_16k", "noise_16k", "hello_16k")


def test_speech_scores_high_and_silence_low(engine: VADEngine) -> None:
    speech, _ = load_pcm("capital_16k")
    probs = engine.open_stream().process_sync(speech)
    assert len(probs) == len(speech) // 1024
    assert max(probs) > 0.9
    silence, _ = load_pcm("silence_16k")
    assert max(engine.open_stream().process_sync(silence)) < 0.1


def test_batched_equals_single(engine: VADEngine) -> None:
    pcms = [load_pcm(n)[0] for n in NAMES]
    single = [engine.open_stream().process_sync(p) for p in pcms]
    streams = [engine.open_stream() for _ in pcms]
    batched = engine.process_many(list(zip(streams, pcms, strict=True)))
    for s, b in zip(single, batched, strict=True):
        assert len(s) == len(b)
        np.testing.assert_allclose(
            s, b, atol=1e-4
        )  # torch: batch-size dependent kernels differ in the 5th decimal
        assert [p >= 0.5 for p in s] == [p >= 0.5 for p in b]


def test_chunking_does_not_change_results(onnx_engine: VADEngine) -> None:
    pcm, _ = load_pcm("hello_16k")
    whole = onnx_engine.open_stream().process_sync(pcm)
    stream = onnx_engine.open_stream()
    pieces: list[float] = []
    for i in range(0, len(pcm), 642):  # 321 samples: windows straddle the pieces
        pieces += stream.process_sync(pcm[i : i + 642])
    assert pieces == whole


async def test_async_streams_share_batches(engine: VADEngine) -> None:
    pcms = [load_pcm(n)[0][: 16000 * 4] for n in NAMES] * 8
    expected = [engine.open_stream().process_sync(p) for p in pcms]
    streams = [engine.open_stream() for _ in pcms]
    calls_before = engine.scheduler.calls

    async def feed(i: int) -> list[float]:
        out: list[float] = []
        for k in range(0, len(pcms[i]), 3200):  # 100 ms frames, like a live track
            out += await streams[i].process(pcms[i][k : k + 3200])
        return out

    results = await asyncio.gather(*(feed(i) for i in range(len(pcms))))
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_allclose(
            got, want, atol=1e-4
        )  # torch: batch-size dependent kernels differ in the 5th decimal
    windows = sum(len(r) for r in results)
    calls = engine.scheduler.calls - calls_before
    assert calls < windows / 4, f"{calls} model calls for {windows} windows: not batched"


def test_bad_input_is_a_typed_error(onnx_engine: VADEngine) -> None:
    stream = onnx_engine.open_stream()
    with pytest.raises(AudioError):
        stream.process_sync(b"\x00\x01\x02")
    stream.close()
    with pytest.raises(AudioError):
        stream.process_sync(b"\x00\x00")
    with pytest.raises(AudioError):
        onnx_engine.evaluate([onnx_engine.open_stream()], np.zeros((1, 100), dtype=np.float32))


def test_reset_restores_fresh_state(onnx_engine: VADEngine) -> None:
    pcm, _ = load_pcm("hello_16k")
    stream = onnx_engine.open_stream()
    first = stream.process_sync(pcm)
    speech, _ = load_pcm("capital_16k")
    loudest = int(np.argmax(onnx_engine.open_stream().process_sync(speech)))
    stream.process_sync(speech[: (loudest + 1) * 1024])  # stops mid-word: the latest score is high
    assert stream.last_probability > 0.5
    stream.reset()
    assert stream.last_probability == 0.0
    assert stream.process_sync(pcm) == first


def test_shared_engine_loads_once() -> None:
    assert get_shared_engine("onnx") is get_shared_engine("onnx")
    with pytest.raises(ConfigError):
        get_shared_engine("tensorflow")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        load_model("tflite")  # type: ignore[arg-type]


def test_event_loops_in_several_threads_share_one_engine() -> None:
    """As with livekit-agents' thread executor: one engine, one loop per job thread."""
    engine = VADEngine.load("onnx")
    pcms = [load_pcm(n)[0][: 16000 * 3] for n in NAMES]
    expected = [engine.open_stream().process_sync(p) for p in pcms]
    results: dict[int, list[float]] = {}

    def job(i: int) -> None:
        async def run() -> list[float]:
            stream = engine.open_stream()
            out: list[float] = []
            for k in range(0, len(pcms[i]), 640):
                out += await stream.process(pcms[i][k : k + 640])
            return out

        results[i] = asyncio.run(run())

    threads = [threading.Thread(target=job, args=(i,)) for i in range(len(pcms))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for i, want in enumerate(expected):
        np.testing.assert_allclose(results[i], want, atol=1e-5)
    engine.close()


async def test_closing_the_engine_fails_waiting_callers() -> None:
    engine = VADEngine.load("onnx", tick_ms=200.0)  # keep work queued long enough to close under it
    stream = engine.open_stream(silence_floor_dbfs=None)  # digital silence goes to the model too
    task = asyncio.create_task(stream.process(b"\x00" * 1024 * 4))
    await asyncio.sleep(0.02)
    engine.close()
    with pytest.raises(AudioError):
        await task
    sync_only = VADEngine(engine.model)
    s = sync_only.open_stream()
    s.process_sync(b"\x00" * 1024)
    s.close()
    assert sync_only._scheduler is None  # sync use never starts the batching thread


# ------------------------------------------------------------------------------------------ silence floor


def _padded(name: str, noise: float = 0.0) -> bytes:
    """``name`` between 2 s stretches of digital silence, twice, with Gaussian noise of ``noise`` (PCM16)."""
    speech = np.frombuffer(load_pcm(name)[0], dtype="<i2")
    quiet = np.zeros(32000, dtype=np.int16)
    sig = np.concatenate([quiet, speech, quiet, speech, quiet]).astype(np.float64)
    if noise:
        sig += np.random.default_rng(7).normal(0.0, noise, len(sig))
    return np.clip(np.round(sig), -32768, 32767).astype("<i2").tobytes()


def _bounds(probs: list[float], pcm: bytes) -> list[tuple[str, int]]:
    seg = Segmenter(SegmenterConfig(min_speech_ms=250, pre_roll_ms=200, post_roll_ms=200, max_silence_ms=600))
    out: list[tuple[str, int]] = []
    for i, p in enumerate(probs):
        for ev in seg.push(p, pcm[i * 1024 : (i + 1) * 1024]):
            if isinstance(ev, SpeechStart | SpeechEnd):
                out.append((type(ev).__name__, i))
    return out


@pytest.mark.parametrize("name", ["capital_16k", "multi_16k", "hello_16k"])
def test_silent_windows_skip_the_model_and_keep_the_decisions(onnx_engine: VADEngine, name: str) -> None:
    pcm = _padded(name)
    every = onnx_engine.open_stream(silence_floor_dbfs=None)
    want = every.process_sync(pcm)
    evaluated = onnx_engine.windows_evaluated
    gated = onnx_engine.open_stream()
    got = gated.process_sync(pcm)
    assert len(got) == len(want)
    # most of the clip is digital silence: those windows never reached the model, and scored 0
    assert gated.windows_skipped > len(got) / 3
    assert onnx_engine.windows_evaluated - evaluated == len(got) - gated.windows_skipped
    assert sum(p == 0.0 for p in got) >= gated.windows_skipped
    # the same utterances, each ending within a window (32 ms) of where it did and starting within two: the
    # windows over which Silero's score decays after a word still go to the model (skipping those too
    # ended utterances up to 3 windows early)
    a, b = _bounds(want, pcm), _bounds(got, pcm)
    assert [kind for kind, _ in a] == [kind for kind, _ in b] and len(a) >= 4
    for (kind, i), (_, j) in zip(a, b, strict=True):
        assert abs(j - i) <= (2 if kind == "SpeechStart" else 1), (a, b)


def test_a_noise_floor_above_the_threshold_is_evaluated_as_before(onnx_engine: VADEngine) -> None:
    pcm = _padded("capital_16k", noise=30.0)  # about -60 dBFS of hiss, peaks near -50 dBFS: audible
    want = onnx_engine.open_stream(silence_floor_dbfs=None).process_sync(pcm)
    gated = onnx_engine.open_stream()
    assert gated.process_sync(pcm) == want
    assert gated.windows_skipped == 0


async def test_silence_is_answered_without_the_batching_thread(onnx_engine: VADEngine) -> None:
    stream = onnx_engine.open_stream()
    calls, windows = onnx_engine.scheduler.calls, onnx_engine.scheduler.windows
    quiet = (np.random.default_rng(1).normal(0.0, 3.0, 16000).astype("<i2")).tobytes()  # peaks ~ -70 dBFS
    got: list[float] = []
    for k in range(0, len(quiet), 1024):
        got += await stream.process(quiet[k : k + 1024])
    assert got == [0.0] * (16000 // 512)
    assert (onnx_engine.scheduler.calls, onnx_engine.scheduler.windows) == (calls, windows)
    # sound after the silence goes to the model again, from Silero's state after silence
    speech, _ = load_pcm("capital_16k")
    probs = await stream.process(speech)
    assert max(probs) > 0.9
    assert onnx_engine.scheduler.windows - windows >= len(probs) - stream.windows_skipped


def test_the_silence_floor_is_checked() -> None:
    engine = get_shared_engine("onnx")
    with pytest.raises(ConfigError):
        engine.open_stream(silence_floor_dbfs=-10.0)
    with pytest.raises(ConfigError):
        engine.open_stream(silence_floor_dbfs=-200.0)
    assert DEFAULT_SILENCE_FLOOR_DBFS == -64.0
    assert engine.open_stream().silence_peak == pytest.approx(20.6, abs=0.1)
