"""``worker.room.AgentAudio`` hands the native source a frame only when it fits (the SDK's own wait for room
receives every native event of the process meanwhile), and a clear drops a frame still waiting for room."""

from __future__ import annotations

import asyncio
import statistics
import time

import numpy as np
import pytest
from livekit import rtc

from worker.room import FRAME_MS, QUEUE_MS, AgentAudio

RATE = 24000


def _tone(seconds: float) -> bytes:
    t = np.arange(int(RATE * seconds)) / RATE
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16).tobytes()


class _Spy:
    """Wraps the source's ``capture_frame``: what was queued when each frame was handed over, how long the
    SDK's capture took, and the frame's loudness."""

    def __init__(self, audio: AgentAudio) -> None:
        self.source = audio._source
        self.queued_at_capture: list[float] = []
        self.loud: list[bool] = []
        self.capture_s: list[float] = []
        real = self.source.capture_frame

        async def capture_frame(frame: rtc.AudioFrame) -> None:
            self.queued_at_capture.append(self.source.queued_duration)
            self.loud.append(bool(np.abs(np.frombuffer(bytes(frame.data), np.int16)).max() > 0))
            start = time.monotonic()
            await real(frame)
            self.capture_s.append(time.monotonic() - start)

        self.source.capture_frame = capture_frame  # type: ignore[method-assign]


async def test_frames_are_handed_over_only_when_they_fit() -> None:
    audio = AgentAudio(RATE)
    spy = _Spy(audio)
    try:
        await audio.capture(_tone(0.6), RATE)
        await audio.flush()
        assert len(spy.queued_at_capture) == round(600 / FRAME_MS)
        room = (QUEUE_MS - FRAME_MS) / 1000
        assert max(spy.queued_at_capture) <= room + 0.005
        assert spy.queued_at_capture[-1] >= room - 0.02  # paced at the queue's edge, not ahead of it
        # the wait for room is ours, on a timer: the SDK's capture (subscribed to every native event of the
        # process while it runs) returns at once instead of waiting a frame's time
        assert statistics.median(spy.capture_s) < FRAME_MS / 1000 / 2
        await audio.wait_for_playout()
    finally:
        await audio.aclose()


async def test_a_clear_drops_the_frame_waiting_for_room_and_counts_it() -> None:
    audio = AgentAudio(RATE)
    spy = _Spy(audio)
    try:
        feeding = asyncio.create_task(audio.capture(_tone(1.0), RATE))
        await asyncio.sleep(0.2)  # the queue is full: a frame waits for room, the rest is pending
        frame_s = FRAME_MS / 1000
        assert audio._waiting_s == pytest.approx(frame_s)
        handed = len(spy.loud)
        pending_s = len(audio._pending) / 2 / RATE
        assert handed * frame_s + frame_s + pending_s == pytest.approx(1.0)
        queued = audio.queued_s
        dropped = audio.clear()
        assert dropped == pytest.approx(queued + frame_s + pending_s, abs=0.002)
        await asyncio.wait_for(feeding, 2.0)
        await asyncio.sleep(0.3)
        after = spy.loud[handed:]
        assert after == [False] * -(
            -150 // FRAME_MS
        )  # only the silence after a clear; the waiting frame is gone
        assert audio._waiting_s == 0
    finally:
        await audio.aclose()


async def test_speech_after_a_clear_does_not_wait_behind_its_silence() -> None:
    audio = AgentAudio(RATE)
    spy = _Spy(audio)
    try:
        audio.clear()  # a barge-in or a cancelled reply: silence follows the cut...
        await asyncio.sleep(0.03)
        assert audio.queued_s > 0.05  # (the queue fills with it)
        await audio.capture(_tone(0.2), RATE)  # ...until the next answer, which starts at once
        first_loud = spy.loud.index(True)
        assert spy.queued_at_capture[first_loud] < 0.005
        await audio.flush()
        await audio.wait_for_playout()
    finally:
        await audio.aclose()
