"""SpeechListener: the per-participant pipeline on 48 kHz speech, async and sync."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from llmrtc.audio.interruption import Interruption
from llmrtc.audio.listener import ListenerEvent, SpeechListener
from llmrtc.audio.segmenter import Probability, SpeechEnd, SpeechStart
from llmrtc.audio.vad import VADEngine
from llmrtc.errors import AudioError
from tests.fixtures import fixture_truth

from .conftest import load_pcm


async def frames_of(pcm: bytes, frame_bytes: int) -> AsyncIterator[bytes]:
    for i in range(0, len(pcm), frame_bytes):
        yield pcm[i : i + frame_bytes]


async def test_listen_finds_the_utterance_in_48k_audio(engine: VADEngine) -> None:
    pcm, rate = load_pcm("capital_48k")
    assert rate == 48_000
    listener = SpeechListener(sample_rate=48_000, engine=engine, name="alice")
    events = [ev async for ev in listener.listen(frames_of(pcm, 960 * 2))]  # 20 ms frames
    starts = [e for e in events if isinstance(e, SpeechStart)]
    ends = [e for e in events if isinstance(e, SpeechEnd)]
    truth = fixture_truth("capital_48k")["utterances"][0]
    assert len(starts) == len(ends) == 1
    assert abs(ends[0].start_s - truth["start_s"]) <= 0.1
    assert abs(ends[0].end_s - truth["end_s"]) <= 0.1
    assert ends[0].sample_rate == 16_000
    assert ends[0].pcm_duration_s > ends[0].duration_s
    assert not [e for e in events if isinstance(e, Probability)]  # not asked for


async def test_barge_in_only_while_agent_speaks(onnx_engine: VADEngine) -> None:
    pcm, _ = load_pcm("hello_16k")
    quiet = SpeechListener(engine=onnx_engine)
    events = await quiet.push(pcm) + await quiet.aclose()
    assert not [e for e in events if isinstance(e, Interruption)]

    seen: list[ListenerEvent] = []
    loud = SpeechListener(engine=onnx_engine, emit_probabilities=True, on_event=seen.append)
    loud.agent_speaking = True
    events = await loud.push(pcm) + await loud.aclose()
    hits = [e for e in events if isinstance(e, Interruption)]
    assert len(hits) == 1
    assert seen == events
    assert len([e for e in events if isinstance(e, Probability)]) == len(pcm) // 1024


def test_sync_and_batched_paths_agree(onnx_engine: VADEngine) -> None:
    pcm, _ = load_pcm("multi_16k")
    a = SpeechListener(engine=onnx_engine, batched=False)
    events = a.push_sync(pcm)
    assert len([e for e in events if isinstance(e, SpeechEnd)]) == 4


async def test_closed_listener_rejects_audio(onnx_engine: VADEngine) -> None:
    listener = SpeechListener(engine=onnx_engine)
    with pytest.raises(AudioError):
        await listener.push(b"\x00")
    await listener.aclose()
    assert await listener.aclose() == []
    with pytest.raises(AudioError):
        await listener.push(b"\x00\x00")


async def test_breaking_out_of_listen_releases_the_stream(onnx_engine: VADEngine) -> None:
    pcm, _ = load_pcm("multi_16k")
    listener = SpeechListener(engine=onnx_engine)
    gen = listener.listen(frames_of(pcm, 640))
    async for ev in gen:
        if isinstance(ev, SpeechStart):
            break
    await gen.aclose()
    assert listener._vad.closed


async def test_cancelled_push_closes_the_listener(onnx_engine: VADEngine) -> None:
    pcm, _ = load_pcm("hello_16k")
    listener = SpeechListener(engine=onnx_engine)
    task = asyncio.create_task(listener.push(pcm))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(AudioError):
        await listener.push(pcm)
