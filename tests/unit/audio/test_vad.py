"""Silero VAD engines: both runtimes, batched evaluation equal to single-stream evaluation."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from llmrtc.audio.vad import VADEngine, get_shared_engine, load_model
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
    stream.reset()
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
    stream = engine.open_stream()
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
