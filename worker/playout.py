"""Playout of one agent turn: buffer the turn's speech, feed the agent track, pause and resume on barge-in.

The buffer keeps everything synthesized for the turn, with a cursor at what was handed to the track. A pause
clears the track's queue at once (audio stops within one frame) and moves the cursor back by what was
dropped, so a resume after a false interruption continues exactly where the listeners stopped hearing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

import numpy as np

log = logging.getLogger("llmrtc.worker.playout")

FRAME_MS = 10


class AudioOut(Protocol):
    """The agent's audio track as the playout needs it (:class:`worker.room.AgentAudio`)."""

    async def capture(self, pcm: bytes, sample_rate: int) -> None: ...

    async def flush(self) -> None: ...

    def clear(self) -> float: ...

    @property
    def queued_s(self) -> float: ...

    async def wait_for_playout(self) -> None: ...


def _resample(pcm: bytes, src: int, dst: int) -> bytes:
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    if samples.size == 0:
        return b""
    n_out = round(samples.size * dst / src)
    x_new = np.linspace(0, samples.size - 1, n_out)
    return np.interp(x_new, np.arange(samples.size), samples).astype(np.int16).tobytes()


class Playout:
    """Plays one turn. ``feed`` audio as it is synthesized, ``finish`` when all of it was fed."""

    def __init__(self, out: AudioOut, on_first_audio: Callable[[], None] | None = None) -> None:
        self._out = out
        self._on_first_audio = on_first_audio
        self._pcm = bytearray()
        self._rate = 0
        self._cursor = 0
        self._segments: list[tuple[int, str]] = []
        self._data = asyncio.Event()
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._finished = False
        self.started = False
        self.done = False

    @property
    def paused(self) -> bool:
        return not self._resumed.is_set()

    @property
    def playing(self) -> bool:
        """Audio is being heard now (started, not paused, not done)."""
        return self.started and not self.paused and not self.done

    def feed(self, pcm: bytes, sample_rate: int, text: str = "", end_of_segment: bool = False) -> None:
        if not self._rate:
            self._rate = sample_rate
        elif sample_rate != self._rate:
            pcm = _resample(pcm, sample_rate, self._rate)
        self._pcm.extend(pcm)
        if end_of_segment and text:
            self._segments.append((len(self._pcm), text))
        self._data.set()

    def finish(self) -> None:
        self._finished = True
        self._data.set()

    def pause(self) -> None:
        """Stop the audio now; keep what was not heard for :meth:`resume`."""
        if self.paused or self.done:
            return
        self._resumed.clear()
        dropped = self._out.clear()
        if self._rate:
            back = int(dropped * self._rate) * 2
            self._cursor = max(0, self._cursor - back)

    def resume(self) -> None:
        self._resumed.set()

    def stop(self) -> None:
        """Stop for good (the turn was cancelled)."""
        if not self.done:
            heard = self.heard_bytes()
            self._out.clear()
            self._cursor = heard
        self.done = True
        self._resumed.set()
        self._data.set()

    def heard_bytes(self) -> int:
        if self.paused or self.done:
            return self._cursor
        return max(0, self._cursor - int(self._out.queued_s * self._rate) * 2)

    def spoken_text(self) -> str:
        """The text of the speech heard so far: whole sentences, plus a share of the words of the current one."""
        heard = self.heard_bytes()
        parts: list[str] = []
        start = 0
        for end, text in self._segments:
            if end <= heard:
                parts.append(text)
            else:
                words = text.split()
                share = (heard - start) / max(1, end - start)
                kept = words[: int(len(words) * share)]
                if kept:
                    parts.append(" ".join(kept))
                break
            start = end
        return " ".join(p.strip() for p in parts if p.strip())

    async def run(self) -> None:
        """Feed the track until everything was played (or :meth:`stop`); a failing track ends the playout."""
        try:
            await self._run()
        except Exception as exc:
            log.error("agent audio failed: %s", exc)
        finally:
            self.done = True

    async def _run(self) -> None:
        frame = 0
        while not self.done:
            await self._resumed.wait()
            if self.done:
                break
            if not frame and self._rate:
                frame = self._rate * FRAME_MS // 1000 * 2
            if frame and self._cursor < len(self._pcm):
                chunk = bytes(self._pcm[self._cursor : self._cursor + frame])
                self._cursor += len(chunk)
                if not self.started:
                    self.started = True
                    if self._on_first_audio is not None:
                        self._on_first_audio()
                await self._out.capture(chunk, self._rate)
                continue
            if self._finished:
                if self.started:
                    await self._out.flush()
                    await self._out.wait_for_playout()
                if self.paused or self._cursor < len(self._pcm):
                    continue
                break
            self._data.clear()
            await self._data.wait()

    async def aclose(self, task: asyncio.Task[None] | None) -> None:
        self.stop()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


__all__ = ["AudioOut", "Playout"]
