"""Playout of one agent turn: the owner of "what the listener heard".

A :class:`Playout` buffers everything synthesized for a turn, with a cursor at what was handed to the audio
output (:class:`AudioOut`, e.g. the worker's LiveKit track or the console's WAV writer). From the cursor and
what the output still has queued it knows how much audio was *played*, and from that the text *heard*:

- each sentence (TTS segment) played to its end counts whole;
- of the sentence being played, the words whose end time was played count, when the TTS provider reported
  word timestamps (:attr:`llmrtc.types.TTSChunk.words`); otherwise a share of its words proportional to
  the share of its audio played (an estimate: words are assumed evenly spread over the audio).

A :meth:`Playout.pause` (barge-in) clears the output's queue at once (audio stops within one frame) and moves
the cursor back by what was dropped, so a :meth:`Playout.resume` after a false interruption continues exactly
where the listeners stopped hearing, and :meth:`Playout.heard_text` stays exact. The voice orchestrators feed
it as audio is released and wait on :meth:`Playout.wait_done` before a turn commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from llmrtc.audio.codec import Resampler
from llmrtc.types import WordTiming

log = logging.getLogger("llmrtc.playout")

FRAME_MS = 10


class AudioOut(Protocol):
    """Where a playout's audio goes (the worker's agent track, a console WAV writer...)."""

    async def capture(self, pcm: bytes, sample_rate: int) -> None:
        """Queue PCM16 mono for playing (may wait while the output's queue is full)."""
        ...

    async def flush(self) -> None:
        """Send any partial frame."""
        ...

    def clear(self) -> float:
        """Drop everything queued and not yet played; return how many seconds were dropped."""
        ...

    @property
    def queued_s(self) -> float:
        """Audio captured but not yet played, in seconds."""
        ...

    async def wait_for_playout(self) -> None:
        """Return once everything captured was played."""
        ...


@dataclass(slots=True)
class _Segment:
    start: int
    end: int
    text: str
    words: list[tuple[int, str]] = field(default_factory=list)
    """(byte offset where the word ends, word), when the provider gave timestamps."""


class Playout:
    """Plays one turn. :meth:`feed` audio as it is released, :meth:`finish` when all of it was fed."""

    def __init__(self, out: AudioOut, on_first_audio: Callable[[], None] | None = None) -> None:
        self._out = out
        self._on_first_audio = on_first_audio
        self._pcm = bytearray()
        self._rate = 0
        self._resamplers: dict[int, Resampler] = {}
        self._cursor = 0
        self._segments: list[_Segment] = []
        self._open: _Segment | None = None
        self._data = asyncio.Event()
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._ended = asyncio.Event()
        self._finished = False
        self._stopped = False
        self._task: asyncio.Task[None] | None = None
        self.started = False
        self.done = False

    # ------------------------------------------------------------------------------------------ state

    @property
    def paused(self) -> bool:
        return not self._resumed.is_set()

    @property
    def playing(self) -> bool:
        """Audio is being heard now (started, not paused, not done)."""
        return self.started and not self.paused and not self.done

    @property
    def completed(self) -> bool:
        """Everything fed was played to the end (the turn's answer was heard whole)."""
        return self.done and not self._stopped and self._cursor >= len(self._pcm)

    @property
    def sample_rate(self) -> int:
        return self._rate

    @property
    def fed_s(self) -> float:
        """Seconds of audio fed so far."""
        return len(self._pcm) / 2 / self._rate if self._rate else 0.0

    # ------------------------------------------------------------------------------------------ feeding

    def feed(
        self,
        pcm: bytes,
        sample_rate: int,
        text: str = "",
        end_of_segment: bool = False,
        words: Sequence[WordTiming] = (),
    ) -> None:
        """Add audio of the current sentence ``text``; ``end_of_segment`` closes the sentence.

        ``words`` are word timings relative to the start of the sentence's audio.
        """
        if self._stopped:
            return
        if not self._rate:
            self._rate = sample_rate
        elif sample_rate != self._rate:
            resampler = self._resamplers.get(sample_rate)
            if resampler is None:
                resampler = self._resamplers[sample_rate] = Resampler(sample_rate, self._rate)
            pcm = resampler.process(pcm)
            if end_of_segment:
                pcm += resampler.flush()
                del self._resamplers[sample_rate]
        if self._open is None:
            self._open = _Segment(len(self._pcm), len(self._pcm), text)
        segment = self._open
        for word in words:
            segment.words.append((segment.start + int(word.end_s * self._rate) * 2, word.text))
        self._pcm.extend(pcm)
        segment.end = len(self._pcm)
        if text:
            segment.text = text
        if end_of_segment:
            if segment.text.strip():
                self._segments.append(segment)
            self._open = None
        self._data.set()

    def truncate_open(self, chars_per_s: float = 14.0) -> None:
        """The sentence being fed gets no more audio (its synthesis failed or was stopped): from now on its
        words count by the share of its *expected* audio that was played, not of the audio that came.

        The expected length comes from the speech rate of this turn's finished sentences, else from
        ``chars_per_s``; without word timings this is an estimate, like every partial sentence.
        """
        segment = self._open
        if segment is None or not segment.text.strip() or not self._rate:
            return
        done = [s for s in self._segments if s.text.strip()]
        chars = sum(len(s.text) for s in done)
        per_char = sum(s.end - s.start for s in done) / chars if chars else self._rate * 2 / chars_per_s
        expected = segment.start + int(len(segment.text) * per_char) // 2 * 2
        segment.end = max(segment.end, expected)
        self._segments.append(segment)
        self._open = None

    def finish(self) -> None:
        """Everything was fed: :meth:`run` ends once it was played."""
        for resampler in self._resamplers.values():  # the resamplers' last samples
            tail = resampler.flush()
            if tail:
                self._pcm.extend(tail)
                if self._open is not None:
                    self._open.end = len(self._pcm)
        self._resamplers.clear()
        self._finished = True
        self._data.set()

    # ------------------------------------------------------------------------------------------ control

    def pause(self) -> None:
        """Stop the audio now; keep what was not heard for :meth:`resume`."""
        if self.paused or self.done:
            return
        self._resumed.clear()
        if not self.started:
            return  # none of it reached the output: nothing to stop (what is there is another turn's)
        dropped = self._out.clear()
        if self._rate:
            back = int(dropped * self._rate) * 2
            self._cursor = max(0, self._cursor - back)

    def resume(self) -> None:
        self._resumed.set()

    def stop(self) -> None:
        """Stop for good (the turn was cancelled); what was heard stays known."""
        if not self.done:
            heard = self.heard_bytes()
            if not self.paused:
                self._out.clear()
            self._cursor = heard
            self._stopped = True
        self.done = True
        self._resumed.set()
        self._data.set()
        self._ended.set()

    async def wait_done(self) -> bool:
        """Wait until the playout ended; whether everything was played (False: it was stopped)."""
        await self._ended.wait()
        return self.completed

    # ------------------------------------------------------------------------------------------ heard

    def heard_bytes(self) -> int:
        """How many bytes of the turn's audio were played."""
        if self.paused or self.done:
            return self._cursor
        return max(0, self._cursor - int(self._out.queued_s * self._rate) * 2)

    @property
    def heard_s(self) -> float:
        return self.heard_bytes() / 2 / self._rate if self._rate else 0.0

    def heard_text(self) -> str:
        """The text of the speech heard so far (see the module doc for the rule)."""
        heard = self.heard_bytes()
        parts: list[str] = []
        segments = list(self._segments)
        if self._open is not None and self._open.text.strip():
            segments.append(self._open)
        for segment in segments:
            if segment.end <= heard:
                parts.append(segment.text)
                continue
            if heard > segment.start:
                if segment.words:
                    kept = [w for end, w in segment.words if end <= heard]
                else:
                    words = segment.text.split()
                    share = (heard - segment.start) / max(1, segment.end - segment.start)
                    kept = words[: int(len(words) * share)]
                if kept:
                    parts.append(" ".join(kept))
            break
        return " ".join(p.strip() for p in parts if p.strip())

    spoken_text = heard_text
    """Alias of :meth:`heard_text`."""

    # ------------------------------------------------------------------------------------------ playing

    def start(self) -> None:
        """Run :meth:`run` in a task of its own (idempotent)."""
        if self._task is None and not self.done:
            self._task = asyncio.create_task(self.run(), name="llmrtc-playout")

    async def run(self) -> None:
        """Feed the output until everything was played (or :meth:`stop`); a failing output ends it."""
        try:
            await self._run()
        except Exception as exc:
            log.error("agent audio output failed: %s", exc)
            self._stopped = True
        finally:
            self.done = True
            self._ended.set()

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

    async def aclose(self, task: asyncio.Task[None] | None = None) -> None:
        """Stop and wait for the task running :meth:`run` (``task``, or the one :meth:`start` made)."""
        self.stop()
        task = task or self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


__all__ = ["FRAME_MS", "AudioOut", "Playout"]
