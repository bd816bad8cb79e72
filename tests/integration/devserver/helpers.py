"""Media helpers for the compatibility suite: publish a sine or moving frames, analyse what arrives."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import numpy as np
from livekit import rtc

SAMPLE_RATE = 48000
FRAME = 480  # 10 ms


@contextlib.asynccontextmanager
async def publish_sine(
    room: rtc.Room, frequency: float = 440.0, name: str = "sine"
) -> AsyncIterator[rtc.LocalTrackPublication]:
    """Publish a microphone track playing a continuous sine for the life of the context."""
    source = rtc.AudioSource(SAMPLE_RATE, 1)
    track = rtc.LocalAudioTrack.create_audio_track(name, source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    publication = await room.local_participant.publish_track(track, options)

    async def feed() -> None:
        n = 0
        while True:
            x = np.arange(n, n + FRAME)
            n += FRAME
            pcm = (np.sin(2 * np.pi * frequency * x / SAMPLE_RATE) * 12000).astype(np.int16)
            await source.capture_frame(rtc.AudioFrame(pcm.tobytes(), SAMPLE_RATE, 1, FRAME))

    task = asyncio.create_task(feed())
    try:
        yield publication
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await source.aclose()


@contextlib.asynccontextmanager
async def publish_video(
    room: rtc.Room, width: int = 320, height: int = 240, fps: float = 15.0
) -> AsyncIterator[rtc.LocalTrackPublication]:
    """Publish a camera track of changing grey frames."""
    source = rtc.VideoSource(width, height)
    track = rtc.LocalVideoTrack.create_video_track("camera", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA)
    publication = await room.local_participant.publish_track(track, options)

    async def feed() -> None:
        i = 0
        while True:
            level = (i * 7) % 255
            buf = bytearray(np.full((height, width, 4), level, dtype=np.uint8).tobytes())
            source.capture_frame(rtc.VideoFrame(width, height, rtc.VideoBufferType.RGBA, buf))
            i += 1
            await asyncio.sleep(1 / fps)

    task = asyncio.create_task(feed())
    try:
        yield publication
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await source.aclose()


class AudioRecorder:
    """Collects a remote audio track as 48 kHz mono int16."""

    def __init__(self, track: rtc.Track) -> None:
        self._stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
        self.chunks: list[np.ndarray] = []
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for event in self._stream:
            self.chunks.append(np.frombuffer(event.frame.data, dtype=np.int16).copy())

    def samples(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, dtype=np.int16)

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._stream.aclose()


class VideoCounter:
    """Counts frames of a remote video track and remembers their size."""

    def __init__(self, track: rtc.Track) -> None:
        self._stream = rtc.VideoStream(track)
        self.frames = 0
        self.size = (0, 0)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for event in self._stream:
            self.frames += 1
            self.size = (event.frame.width, event.frame.height)

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._stream.aclose()


def dominant_frequency(samples: np.ndarray) -> float:
    """The strongest frequency of ``samples`` (Hz, 48 kHz)."""
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * SAMPLE_RATE / len(samples))


def window_rms(samples: np.ndarray, window: int) -> np.ndarray:
    """RMS of consecutive windows of ``window`` samples."""
    usable = len(samples) // window * window
    shaped = samples[:usable].astype(np.float64).reshape(-1, window)
    return np.sqrt(np.mean(shaped**2, axis=1))
