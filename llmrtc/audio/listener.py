"""The per-participant speech pipeline: audio at any rate in, speech events out.

:class:`SpeechListener` combines resampling to 16 kHz, a stream of the shared (batched) Silero engine, the
:class:`~llmrtc.audio.segmenter.Segmenter` and, while the agent talks, the barge-in
:class:`~llmrtc.audio.interruption.InterruptionDetector`::

    listener = SpeechListener(sample_rate=48_000, name="alice")
    async for event in listener.listen(frames):      # frames: AsyncIterable[bytes] of PCM16 mono
        if isinstance(event, SpeechEnd):
            await stt.transcribe(encode_wav(event.pcm))

or push audio yourself: ``events = await listener.push(pcm)`` and ``await listener.aclose()`` at the end.
Set ``listener.agent_speaking = True`` while the agent's voice plays to get :class:`Interruption` events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable

from llmrtc.audio.codec import Resampler
from llmrtc.audio.interruption import Interruption, InterruptionDetector, OnsetRule
from llmrtc.audio.segmenter import WINDOW_BYTES, Probability, Segmenter, SegmenterConfig, SegmenterEvent
from llmrtc.audio.vad import DEFAULT_SILENCE_FLOOR_DBFS, VADEngine, VADRuntime, get_shared_engine
from llmrtc.errors import AudioError

logger = logging.getLogger(__name__)

ListenerEvent = SegmenterEvent | Interruption


class SpeechListener:
    """VAD, segmentation and barge-in detection for one audio stream (one participant's track).

    ``sample_rate`` is the rate of the PCM16 mono audio you push (resampled to 16 kHz inside). ``engine``
    defaults to the process-wide shared engine of ``runtime``. Probability events are only returned when
    ``emit_probabilities`` is set. ``batched=False`` evaluates on the calling thread instead of the
    engine's shared batches (simplest for a single stream; same decisions). Audio quieter than
    ``silence_floor_dbfs`` scores as silence without a model call (:class:`~llmrtc.audio.vad.VADStream`;
    ``None``: every window is evaluated).
    """

    def __init__(
        self,
        *,
        sample_rate: int = 16_000,
        config: SegmenterConfig | None = None,
        onset_rule: OnsetRule | None = None,
        engine: VADEngine | None = None,
        runtime: VADRuntime | None = None,
        name: str | None = None,
        emit_probabilities: bool = False,
        batched: bool = True,
        on_event: Callable[[ListenerEvent], None] | None = None,
        silence_floor_dbfs: float | None = DEFAULT_SILENCE_FLOOR_DBFS,
    ) -> None:
        self.engine = engine or (get_shared_engine(runtime) if runtime else get_shared_engine())
        self.name = name
        self.sample_rate = sample_rate
        self._resampler = Resampler(sample_rate, 16_000)
        self._vad = self.engine.open_stream(name, silence_floor_dbfs=silence_floor_dbfs)
        self.segmenter = Segmenter(config)
        self.detector = InterruptionDetector(onset_rule)
        self._emit_probabilities = emit_probabilities
        self._batched = batched
        self._on_event = on_event
        self._pending = bytearray()  # 16 kHz audio sent to the VAD, not yet matched with a probability
        self._agent_speaking = False
        self._closed = False

    @property
    def agent_speaking(self) -> bool:
        """While true, onsets are checked against the barge-in rule and reported as :class:`Interruption`."""
        return self._agent_speaking

    @agent_speaking.setter
    def agent_speaking(self, value: bool) -> None:
        if value and not self._agent_speaking:
            self.detector.reset()
        self._agent_speaking = value

    @property
    def speaking(self) -> bool:
        """Whether the participant is in an utterance now."""
        return self.segmenter.speaking

    async def push(self, pcm: bytes) -> list[ListenerEvent]:
        """Feed PCM16 mono at ``sample_rate``; returns the events it caused, in order.

        Cancelling a ``push`` closes the listener (the audio in flight cannot be matched up any more).
        """
        audio = self._prepare(pcm)
        if not self._batched:
            return self._consume(self._vad.process_sync(audio))
        try:
            probs = await self._vad.process(audio)
        except asyncio.CancelledError:
            # the windows in flight are lost to us, so the audio and the probabilities would no longer line
            # up: a cancelled push ends the listener
            self.close()
            raise
        return self._consume(probs)

    def push_sync(self, pcm: bytes) -> list[ListenerEvent]:
        """Like :meth:`push`, evaluated on this thread."""
        return self._consume(self._vad.process_sync(self._prepare(pcm)))

    def _prepare(self, pcm: bytes, *, resampled: bool = False) -> bytes:
        if self._closed:
            raise AudioError(f"listener {self.name or ''} is closed")
        if len(pcm) % 2:
            raise AudioError(f"PCM16 needs an even number of bytes, got {len(pcm)}")
        audio = pcm if resampled else self._resampler.process(pcm)
        self._pending += audio
        return audio

    def _consume(self, probs: list[float]) -> list[ListenerEvent]:
        events: list[ListenerEvent] = []
        for p in probs:
            window = bytes(self._pending[:WINDOW_BYTES])
            del self._pending[:WINDOW_BYTES]
            for seg_ev in self.segmenter.push(p, window):
                if isinstance(seg_ev, Probability) and not self._emit_probabilities:
                    continue
                events.append(seg_ev)
            if self._agent_speaking:
                hit = self.detector.push(p)
                if hit is not None:
                    logger.info(
                        "barge-in from %s at %.2f s (onset %.2f s)", self.name, hit.time_s, hit.onset_s
                    )
                    events.append(hit)
        if self._on_event is not None:
            for ev in events:
                self._on_event(ev)
        return events

    async def aclose(self) -> list[ListenerEvent]:
        """End of the stream: closes an utterance in progress and releases the VAD stream."""
        if self._closed:
            return []
        tail = self._resampler.flush()
        events: list[ListenerEvent] = []
        if tail:
            audio = self._prepare(tail, resampled=True)
            probs = await self._vad.process(audio) if self._batched else self._vad.process_sync(audio)
            events += self._consume(probs)
        self._closed = True
        self._vad.close()
        ends: list[ListenerEvent] = list(self.segmenter.flush())
        if self._on_event is not None:
            for ev in ends:
                self._on_event(ev)
        return events + ends

    async def listen(self, frames: AsyncIterable[bytes]) -> AsyncIterator[ListenerEvent]:
        """Push every frame of ``frames`` and yield the events as they happen; closes at the end."""
        try:
            async for frame in frames:
                for ev in await self.push(frame):
                    yield ev
        except BaseException:
            self.close()
            raise
        for ev in await self.aclose():
            yield ev

    def close(self) -> None:
        """Release the VAD stream now, dropping an utterance in progress (no events)."""
        if not self._closed:
            self._closed = True
            self._vad.close()
