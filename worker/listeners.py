"""Per-participant listening: :class:`llmrtc.audio.listener.SpeechListener` fed from the room.

Each human gets a :class:`ParticipantListener`: 16 kHz PCM16 goes in (``push``, never blocks), one task
runs it through the listener (Silero VAD in the process-shared batched engine, the segmenter, and while the
agent talks the barge-in onset rule), and the events become the session's callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from llmrtc.audio.interruption import Interruption, OnsetRule
from llmrtc.audio.listener import SpeechListener
from llmrtc.audio.segmenter import SegmenterConfig, SpeechEnd, SpeechStart
from llmrtc.audio.turn_detection import TurnDecision, TurnDetectionSettings, TurnEvent, TurnSegmenter
from llmrtc.audio.vad import DEFAULT_SILENCE_FLOOR_DBFS, VADEngine, silence_peak
from llmrtc.errors import AudioError
from worker.config import WorkerSettings
from worker.eot_livekit import register as register_livekit_eot
from worker.turn_taking import turn_detection_settings

log = logging.getLogger("llmrtc.worker.listeners")

register_livekit_eot()  # TURN_DETECTION=livekit: LiveKit's model lives in the worker, never in llmrtc

MAX_BACKLOG_BYTES = 16000 * 2 * 10
"""Audio waiting for VAD beyond 10 s is dropped (with a log line): a stuck listener never grows unbounded."""


class SpeechCallbacks(Protocol):
    """What a listener reports (implemented by :class:`worker.session.RoomSession`)."""

    def on_speech_start(self, identity: str) -> None: ...

    def on_speech_end(self, identity: str, pcm16k: bytes, split: bool = False) -> None:
        """``split``: the utterance was cut at ``max_utterance_s`` while the person went on talking."""
        ...

    def on_interruption(self, identity: str) -> None: ...

    def on_speech_audio(self, identity: str, pcm16k: bytes) -> None:
        """More audio of the utterance in progress (the first piece starts with its pre-roll); only with
        ``stream_audio`` (interim transcripts)."""
        ...

    def on_turn_predicted(self, identity: str, pcm16k: bytes) -> None:
        """The end-of-turn model says the turn is complete (``pcm16k``: the utterance so far); the
        utterance ends after the short silence unless speech resumes. Only with ``predict``."""
        ...

    def on_turn_resumed(self, identity: str) -> None:
        """Speech resumed after a prediction: the turn goes on."""
        ...


def segmenter_config(settings: WorkerSettings) -> SegmenterConfig:
    return SegmenterConfig(
        threshold=settings.vad_threshold,
        min_speech_ms=settings.vad_min_speech_ms,
        max_silence_ms=settings.vad_min_silence_ms,
        pre_roll_ms=settings.vad_speech_pad_ms,
        post_roll_ms=min(settings.vad_speech_pad_ms, settings.vad_min_silence_ms),
        max_utterance_s=settings.vad_max_utterance_s,
    )


def onset_rule(settings: WorkerSettings) -> OnsetRule:
    return OnsetRule(min_speech_ms=settings.barge_in_min_speech_ms, threshold=settings.barge_in_threshold)


class ParticipantListener:
    """VAD, segmenter and barge-in detection for one participant's 16 kHz mono stream."""

    def __init__(
        self,
        identity: str,
        callbacks: SpeechCallbacks,
        *,
        config: SegmenterConfig | None = None,
        rule: OnsetRule | None = None,
        engine: VADEngine | None = None,
        turn: TurnDetectionSettings | None = None,
        stream_audio: bool = False,
        predict: bool = False,
        silence_floor_dbfs: float | None = DEFAULT_SILENCE_FLOOR_DBFS,
    ) -> None:
        self.identity = identity
        self._callbacks = callbacks
        self._listener = SpeechListener(
            sample_rate=16000,
            config=config,
            onset_rule=rule,
            engine=engine,
            name=f"vad-{identity}",
            silence_floor_dbfs=silence_floor_dbfs,
        )
        self._turn_events: list[tuple[TurnEvent, bytes]] = []
        self._segmenter: TurnSegmenter | None = None
        if turn is not None:
            # end of turn (TURN_DETECTION): the model runs on the process's shared runner thread
            self._segmenter = turn.segmenter(config, on_event=self._on_turn_event)
            self._listener.segmenter = self._segmenter
        self._stream_audio = stream_audio and self._segmenter is not None
        self._predict = predict
        self._streamed = 0  # windows of the utterance in progress passed to on_speech_audio
        self._pending = bytearray()
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"llmrtc-listener-{identity}")

    @property
    def stream_time_s(self) -> float:
        """Seconds of this participant's audio the VAD and the segmenter have processed."""
        return self._listener.segmenter.time_s

    @property
    def agent_speaking(self) -> bool:
        return self._listener.agent_speaking

    @agent_speaking.setter
    def agent_speaking(self, value: bool) -> None:
        """While true, speech that meets the onset rule is reported as an interruption."""
        self._listener.agent_speaking = value

    def _on_turn_event(self, event: TurnEvent) -> None:
        # called inside the segmenter's push: keep it (and the audio so far) for _run to report in order
        pcm = b""
        if isinstance(event, TurnDecision) and event.complete and self._predict and self._segmenter:
            pcm = self._segmenter.utterance_pcm()
        self._turn_events.append((event, pcm))

    def push(self, pcm16k: bytes) -> None:
        if len(self._pending) > MAX_BACKLOG_BYTES:
            log.warning("VAD backlog over 10 s: dropping audio", extra={"participant": self.identity})
            dropped_s = len(self._pending) / 2 / 16000
            self._pending.clear()
            tell = getattr(self._callbacks, "on_audio_dropped", None)  # never a silent drop
            if tell is not None:
                tell(self.identity, dropped_s)
        self._pending.extend(pcm16k)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._pending:
                continue
            piece = bytes(self._pending)
            self._pending.clear()
            try:
                events = await self._listener.push(piece)
            except AudioError as exc:
                self._turn_events.clear()
                log.error("VAD failed: %s", exc, extra={"participant": self.identity})
                continue
            turn_events, self._turn_events = self._turn_events, []
            for turn_event, pcm in turn_events:
                try:
                    if isinstance(turn_event, TurnDecision):
                        if turn_event.complete and self._predict:
                            self._callbacks.on_turn_predicted(self.identity, pcm)
                    elif self._predict:
                        self._callbacks.on_turn_resumed(self.identity)
                except Exception:
                    log.exception("turn callback failed", extra={"participant": self.identity})
            for event in events:
                try:
                    if isinstance(event, SpeechStart):
                        self._streamed = 0
                        self._callbacks.on_speech_start(self.identity)
                    elif isinstance(event, SpeechEnd):
                        self._streamed = 0
                        self._callbacks.on_speech_end(self.identity, event.pcm, split=event.split)
                    elif isinstance(event, Interruption):
                        self._callbacks.on_interruption(self.identity)
                except Exception:
                    log.exception("speech callback failed", extra={"participant": self.identity})
            if self._stream_audio and self._segmenter is not None and self._segmenter.speaking:
                have = self._segmenter.utterance_windows
                if have > self._streamed:
                    audio = self._segmenter.utterance_pcm(self._streamed)
                    self._streamed = have
                    try:
                        self._callbacks.on_speech_audio(self.identity, audio)
                    except Exception:
                        log.exception("speech audio callback failed", extra={"participant": self.identity})

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._listener.close()


class ListenerFactory:
    """Makes :class:`ParticipantListener` objects with the VAD and barge-in settings of ``settings``."""

    def __init__(self, settings: WorkerSettings, engine: VADEngine | None = None) -> None:
        self._config = segmenter_config(settings)
        self._rule = onset_rule(settings)
        self._engine = engine
        self._turn = turn_detection_settings(settings)
        self._turn.policy(settings.vad_min_silence_ms)  # a bad TURN_* combination fails here, with its name
        self._stream_audio = settings.interim_transcripts
        self._predict = settings.preemptive_generation
        floor = settings.vad_silence_floor_dbfs
        self._silence_floor: float | None = None if floor == "off" else floor
        silence_peak(self._silence_floor)  # a floor out of range fails here, not in the first room

    def __call__(self, identity: str, callbacks: SpeechCallbacks) -> ParticipantListener:
        return ParticipantListener(
            identity,
            callbacks,
            config=self._config,
            rule=self._rule,
            engine=self._engine,
            turn=self._turn,
            stream_audio=self._stream_audio,
            predict=self._predict,
            silence_floor_dbfs=self._silence_floor,
        )


__all__ = ["ListenerFactory", "ParticipantListener", "SpeechCallbacks", "onset_rule", "segmenter_config"]
