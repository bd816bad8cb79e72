"""Native audio sources that a server-ended room left pinned, kept for the next rooms of the process
(:class:`SourcePool`; the upstream cause is in its docstring)."""

from __future__ import annotations

import asyncio
import threading

from livekit import rtc

TICK_S = 0.02
"""Two of the native source's 10 ms ticks: long enough for a capture still pending to be released."""


class SourcePool:
    """Native audio sources that a room's end left pinned, reused by the next rooms of this process.

    livekit's Rust core leaks every local track of a session that the *server* ends (room deleted, participant
    removed, the dev server removing the agent when the last human leaves; livekit/rust-sdks#1443, open, fix
    proposed in #1444): on the signal's leave it closes the publisher PeerConnection first, then its
    ``unpublish_track`` fails on ``remove_track`` before detaching the track, so the stopped ``RtpSender``
    keeps the track, and the track its native source, for the life of the process. A source with a queue
    owns a thread (``AudioSourceCapture``, ``AudioSourceCapt`` in ``/proc``) running a 10 ms timer: with
    jobs on threads, one thread and ~2-5 ms/s of idle CPU per room served. Nothing the Python SDK offers frees
    it afterwards (disposing the handles of the source, track, publication, participant and room, or a late
    FFI disconnect: measured, no effect); a client-ended room does not leak (its unpublish runs first).

    Such a source still works: the stopped sender removed its sink, so a new track on it plays only into its
    new room. :meth:`worker.room.RoomIO.aclose` hands it back here and :class:`worker.room.AgentAudio` takes one of the same format
    before creating one: the threads follow the peak of concurrent rooms, not the rooms served. Only the sources
    of rooms that ended before their track could be unpublished come here (a source freed normally is closed).
    """

    _REBOUND = ("_loop", "_join_handle", "_join_fut", "_q_size", "_last_capture")
    """The SDK's per-loop state of an ``rtc.AudioSource`` (livekit 1.1), reset when another loop takes it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # jobs on threads take and give from their own loops
        self._idle: dict[tuple[int, int, int], list[rtc.AudioSource]] = {}

    def take(self, sample_rate: int, num_channels: int, queue_ms: int) -> rtc.AudioSource:
        """A kept source of this format bound to the running loop, or a new one."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to bind a kept source to: the SDK's own default
            return rtc.AudioSource(sample_rate, num_channels, queue_size_ms=queue_ms)
        with self._lock:
            idle = self._idle.get((sample_rate, num_channels, queue_ms))
            source = idle.pop() if idle else None
        if source is None:
            return rtc.AudioSource(sample_rate, num_channels, queue_size_ms=queue_ms)
        source._loop = loop
        source._join_handle = None
        source._join_fut = None
        source._q_size = 0.0
        source._last_capture = 0.0
        return source

    async def give(self, source: rtc.AudioSource, queue_ms: int) -> None:
        """Keep ``source`` (its track can no longer send) for a later room; close it if this SDK's
        ``AudioSource`` is not the one :meth:`take` knows how to move to another loop."""
        if not all(hasattr(source, name) for name in self._REBOUND):
            await source.aclose()
            return
        source.clear_queue()
        if source._join_handle is not None:
            source._join_handle.cancel()  # a timer of this loop
            source._join_handle = None
        await asyncio.sleep(TICK_S)  # the source's 10 ms tick releases a capture still pending
        with self._lock:
            self._idle.setdefault((source.sample_rate, source.num_channels, queue_ms), []).append(source)

    def idle(self) -> int:
        with self._lock:
            return sum(len(sources) for sources in self._idle.values())


SOURCES = SourcePool()
"""This process's pool (jobs on threads share it)."""


__all__ = ["SOURCES", "SourcePool"]
