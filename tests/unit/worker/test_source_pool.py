"""The agent audio sources kept after a server-ended room (``worker.audio_sources.SourcePool``) serve later rooms on
other threads and event loops, as jobs of the thread executor do."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from livekit import rtc

from worker.audio_sources import SourcePool
from worker.room import FRAME_MS, AgentAudio

RATE = 24000
T = TypeVar("T")


def _frame() -> rtc.AudioFrame:
    samples = RATE * FRAME_MS // 1000
    return rtc.AudioFrame(b"\x01\x00" * samples, RATE, 1, samples)


def _in_thread(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``coro_fn()`` on a new event loop of a new thread (a job of the thread executor); its result."""
    out: list[T] = []
    thread = threading.Thread(target=lambda: out.append(asyncio.run(coro_fn())))
    thread.start()
    thread.join(10)
    return out[0]


def test_a_kept_source_is_reused_on_another_loop() -> None:
    pool = SourcePool()

    async def first_room() -> rtc.AudioSource:
        source = pool.take(RATE, 1, 60)
        for _ in range(10):
            await source.capture_frame(_frame())  # more than the queue: a capture waits for the 10 ms tick
        await pool.give(source, 60)
        return source

    async def next_room() -> tuple[rtc.AudioSource, float]:
        source = pool.take(RATE, 1, 60)
        assert source._loop is asyncio.get_running_loop()
        for _ in range(10):
            await source.capture_frame(_frame())
        queued = source.queued_duration
        await source.wait_for_playout()
        await source.aclose()
        return source, queued

    kept = _in_thread(first_room)
    assert pool.idle() == 1
    reused, queued = _in_thread(next_room)
    assert reused is kept
    assert pool.idle() == 0
    assert 0.0 < queued <= 0.11  # the queue accounting starts afresh on the new loop


def test_other_formats_get_a_new_source() -> None:
    pool = SourcePool()

    async def room() -> None:
        source = pool.take(RATE, 1, 60)
        await pool.give(source, 60)
        other = pool.take(16000, 1, 60)
        assert other is not source
        await other.aclose()
        assert pool.take(RATE, 1, 60) is source

    asyncio.run(room())


async def test_agent_audio_hands_a_pinned_source_back_and_closes_a_freed_one() -> None:
    first = AgentAudio(RATE)
    await first.aclose(pinned=True)  # the server ended the room: the SDK keeps the source alive anyway
    reused = AgentAudio(RATE)
    assert reused._source is first._source
    await reused.aclose()  # unpublished normally: closed, with the track's handle
    assert reused._source._ffi_handle.disposed
    assert reused.track._ffi_handle.disposed
