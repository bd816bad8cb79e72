"""Shedding load out loud: refusing jobs when full, and telling a room the worker cannot serve in time.

- **Job offers** (:func:`refuse_offer`): at or above ``WORKER_LOAD_THRESHOLD`` the worker declines (LiveKit
  offers the room to another worker). livekit-agents also declines by itself on the same figure, and the
  worker reports itself full, so offers rarely reach a full worker; this check closes the race between two
  load reports.
- **A room it cannot serve** (:func:`announce_busy`): a job that starts while the load has been at
  :data:`HARD_LOAD` (1.0: turns are late now) for ``SATURATED_AFTER_S`` (5 s) sends the ``worker_busy`` error event to everyone in the room,
  says :data:`BUSY_LINE` on its audio track, and leaves; the room's stored conversation is kept, so when the
  people come back (or the room is dispatched again) it continues.

Every shed counts ``llmrtc_worker_shed_total`` with ``what`` = ``job`` (an offer declined), ``room`` (a
room told and left), ``queued_turn`` (an utterance dropped from a full queue, ``turn_dropped`` to its
speaker), ``late_turn`` (a turn not heard ``TURN_LATE_S`` after the speech ended, ``turn_late`` to
the room) or ``audio`` (audio the VAD could not keep up with, ``audio_dropped`` to its speaker).
"""

from __future__ import annotations

import asyncio
import logging
import threading

from llmrtc.metrics import MetricNames, MetricsAdapter
from llmrtc.providers.base import TTSProvider
from llmrtc.types import TTSConfig
from worker.load import monitor
from worker.protocol import ErrorMsg
from worker.room import ParticipantInfo, RoomIO

log = logging.getLogger("llmrtc.worker.shedding")

HARD_LOAD = 1.0
"""At this load turns are late (the calibration point of :mod:`worker.load`)."""
BUSY_CODE = "worker_busy"
BUSY_MESSAGE = "All agents are busy right now. Please try again in a minute."
BUSY_LINE = "Sorry, I'm too busy to talk right now. Please try again in a minute."
BUSY_SPEECH_LIMIT_S = 8.0

_busy_audio: dict[tuple[str, int], bytes] = {}
_busy_lock = threading.Lock()


def refuse_offer(threshold: float) -> bool:
    """Whether a job offer should be declined now (the latest load reading is at or above ``threshold``)."""
    last = monitor().last
    return last is not None and last.load >= threshold


def cannot_serve() -> bool:
    """Whether a room starting now could not be answered in time: the load has been at :data:`HARD_LOAD`
    for :data:`worker.load.SATURATED_AFTER_S` (a burst of room starts alone does not count)."""
    return monitor().saturated()


def busy_event() -> ErrorMsg:
    return ErrorMsg(code=BUSY_CODE, message=BUSY_MESSAGE, component="worker", retryable=True)


def late_turn_event(turn_id: str, waited_s: float) -> ErrorMsg:
    """Nothing of a turn was heard ``waited_s`` after its speech ended (more than ``TURN_LATE_S``): it is
    answered, late."""
    return ErrorMsg(
        code="turn_late",
        message=f"Sorry for the wait ({waited_s:.0f} s): the agent is very busy.",
        turn_id=turn_id,
        component="worker",
        retryable=False,
    )


def audio_dropped_event(seconds: float) -> ErrorMsg:
    """The VAD fell so far behind a speaker's audio that ``seconds`` of it were dropped unheard."""
    return ErrorMsg(
        code="audio_dropped",
        message=f"The agent could not keep up and missed about {seconds:.0f} s of what you said. "
        "Please say it again.",
        component="worker",
        retryable=True,
    )


async def _busy_pcm(tts: TTSProvider, sample_rate: int) -> bytes:
    """The busy line as PCM at ``sample_rate``, synthesized once per process and TTS."""
    key = (type(tts).__qualname__, sample_rate)
    with _busy_lock:
        cached = _busy_audio.get(key)
    if cached is not None:
        return cached
    result = await tts.speak(BUSY_LINE, TTSConfig(sample_rate=sample_rate, format="pcm"))
    pcm = result.audio if result.sample_rate == sample_rate else b""
    if pcm:
        with _busy_lock:
            _busy_audio[key] = pcm
    return pcm


async def announce_busy(
    room_io: RoomIO, tts: TTSProvider, metrics: MetricsAdapter, *, room: str, sample_rate: int
) -> None:
    """Tell everyone in the room the worker is too busy (data event, then the spoken line), then return so
    the job can leave. The spoken line is best effort within :data:`BUSY_SPEECH_LIMIT_S`."""
    last = monitor().last
    log.warning(
        "too busy to serve room %s (load %.2f, %s): announcing and leaving",
        room,
        last.load if last else -1.0,
        last.bottleneck() if last else "?",
        extra={"room": room},
    )
    metrics.increment(MetricNames.WORKER_SHED, 1, {"what": "room"})
    room_io.send(busy_event())

    async def speak() -> None:
        pcm = await _busy_pcm(tts, sample_rate)
        if pcm:
            await room_io.audio.capture(pcm, sample_rate)
            await room_io.audio.flush()
            await room_io.audio.wait_for_playout()

    try:
        await asyncio.wait_for(speak(), BUSY_SPEECH_LIMIT_S)
    except Exception as exc:  # the event was sent; the spoken line is a courtesy
        log.warning("could not say the busy line: %s", exc, extra={"room": room})
    await room_io.drain(limit_s=2.0)


class _NoConversation:
    """The room handler of a job that only announces it is busy: ignores everything."""

    def on_participant_joined(self, participant: ParticipantInfo) -> None:
        pass

    def on_participant_left(self, identity: str) -> None:
        pass

    def on_participant_attributes(self, participant: ParticipantInfo) -> None:
        pass

    def on_audio(self, identity: str, pcm16k: bytes) -> None:
        pass

    def on_data(self, identity: str, payload: bytes) -> None:
        pass


async def serve_busy(
    room_io: RoomIO, tts: TTSProvider, metrics: MetricsAdapter, *, room: str, sample_rate: int
) -> None:
    """The whole job of a room this worker cannot serve: publish the track, announce, close the room I/O."""
    try:
        await room_io.start(_NoConversation())
        await announce_busy(room_io, tts, metrics, room=room, sample_rate=sample_rate)
    finally:
        await room_io.aclose()


__all__ = [
    "BUSY_CODE",
    "BUSY_LINE",
    "BUSY_MESSAGE",
    "HARD_LOAD",
    "announce_busy",
    "audio_dropped_event",
    "busy_event",
    "cannot_serve",
    "late_turn_event",
    "refuse_offer",
    "serve_busy",
]
