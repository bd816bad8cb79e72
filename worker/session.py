"""One room's conversation: participants, the turn queue, one agent turn at a time, barge-in.

Speech flows in as utterances from each participant's listener (:mod:`worker.listeners`); each utterance is
transcribed at once (so transcripts are attributed and shown while the agent talks), checked against the
floor policy (:mod:`worker.floor`) and queued. Typed text joins the same queue without STT. One task runs
the turns in order:

- ``TURN_QUEUE_POLICY=queue`` (default): each queued utterance gets its own turn, first come first served
  (at most ``MAX_QUEUED_TURNS``; the oldest is dropped, with a log line, beyond that).
- ``TURN_QUEUE_POLICY=merge``: everything queued while the agent was busy becomes one turn, one line per
  speaker (``Name: text``).

Barge-in: speech onset from a participant who may interrupt, while the agent's audio plays, pauses the audio
at once. With ``RESUME_FALSE_INTERRUPTION`` the turn is cancelled only when the interruption has words (its
transcript is not empty) or is still going on after ``FALSE_INTERRUPTION_TIMEOUT``; otherwise the unspoken
remainder resumes. Without it the turn is cancelled at onset.

Every turn is played through an :class:`llmrtc.playout.Playout` on the agent's track, which owns what was
heard: the pipeline commits a turn only once its audio was played to the end, and a cancelled turn records
exactly the playout's heard text, which ``tts_cancelled`` and ``turn_end`` carry. Every turn announced by
``turn_start`` ends with exactly one ``turn_end`` (completed, cancelled or error). STT runs through the
pipeline (:meth:`Conversation.transcribe`), so STT hooks and metrics fire; the connection and speech hook
points are called from here with the room, participant and turn ids. Error events carry a safe message
(:mod:`worker.errors`); the details go to the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from llmrtc.audio.backchannel import is_backchannel
from llmrtc.audio.wav import pcm16_to_wav
from llmrtc.errors import LLMRTCError, ProtocolError
from llmrtc.events import (
    ErrorEvent,
    LLMChunkEvent,
    LLMFinalEvent,
    StageChangeEvent,
    ToolCallEvent,
    ToolResultEvent,
    TTSStartEvent,
    TurnCompleteEvent,
    TurnEvent,
)
from llmrtc.hooks import HookContext, HookRunner, Stopwatch
from llmrtc.metrics import MetricNames, MetricsAdapter, safe_metrics
from llmrtc.playout import AudioOut, Playout
from llmrtc.providers.base import STTProvider
from llmrtc.turn_text import unfinished_reason
from llmrtc.types import STTResult, VisionAttachment
from worker.config import WorkerSettings
from worker.errors import error_message
from worker.floor import Floor
from worker.listeners import SpeechCallbacks
from worker.protocol import (
    AgentState,
    BargeInMsg,
    ErrorMsg,
    LLMChunkMsg,
    LLMMsg,
    ServerEvent,
    SpeechEndMsg,
    SpeechStartMsg,
    StageChangeMsg,
    StopSpeaking,
    TextInput,
    ToolCallMsg,
    ToolResultMsg,
    TranscriptMsg,
    TTSCancelledMsg,
    TTSCompleteMsg,
    TTSStartMsg,
    TurnEndMsg,
    TurnStartMsg,
    parse_client_message,
    redact_arguments,
)
from worker.room import ParticipantInfo
from worker.shedding import audio_dropped_event, late_turn_event
from worker.turn_taking import LiveTranscript, Preemptive, Prefetch, turn_detection_settings

log = logging.getLogger("llmrtc.worker.session")

CancelReason = Literal["barge_in", "stop_request", "participant_left", "shutdown"]


class Conversation(Protocol):
    """What the session drives: the llmrtc voice pipeline (:class:`worker.conversation.OrchestratorConversation`)."""

    @property
    def hooks(self) -> HookRunner: ...

    @property
    def session_id(self) -> str: ...

    async def transcribe(self, wav: bytes, *, speaker: str | None, utterance_id: str) -> STTResult: ...

    def run_text_turn(
        self,
        text: str,
        *,
        speaker: str | None,
        turn_id: str,
        playout: Playout | None = None,
        attachments: list[VisionAttachment] | None = None,
    ) -> AsyncIterator[TurnEvent]: ...

    async def add_context_note(self, note: str) -> None: ...

    def discard(self, turn_id: str) -> None:
        """A preemptive reply the user talked over: turn ``turn_id`` records nothing (it is cancelled next)."""
        ...

    def gate_tools(self, turn_id: str, wait: Callable[[], Awaitable[None]] | None) -> None:
        """Tools with side effects of turn ``turn_id`` wait for ``wait()`` (the confirmed turn)."""
        ...

    def streaming_stt(self, interval_s: float) -> STTProvider:
        """An STT with interim results (``transcribe_stream``) for the live transcripts."""
        ...

    def say(self, text: str, *, turn_id: str, playout: Playout | None = None) -> AsyncIterator[TurnEvent]:
        """Speak fixed text (the greeting) and record it as the assistant's."""
        ...


AttachmentSource = Callable[[list[str], str], Awaitable[list[VisionAttachment]]]
"""``(identities of the turn's speakers, turn id) -> images for the turn`` (vision in ``turn`` mode)."""


def new_id(prefix: str) -> str:
    """An id unique across jobs and workers (turn and segment ids must never repeat after a restart)."""
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


class RoomPort(Protocol):
    """What the session needs from the room (:class:`worker.room.RoomIO`)."""

    @property
    def audio(self) -> AudioOut: ...

    def send(self, event: ServerEvent, destination: list[str] | None = None) -> None: ...

    def set_agent_state(self, state: AgentState) -> None: ...

    def user_transcription(self, identity: str, text: str, segment_id: str, final: bool = True) -> None: ...

    def agent_transcription(self, segment_id: str, delta: str, final: bool = False) -> None: ...


class Listener(Protocol):
    """One participant's VAD, segmenter and onset rule (:class:`worker.listeners.ParticipantListener`)."""

    agent_speaking: bool

    def push(self, pcm16k: bytes) -> None: ...

    async def aclose(self) -> None: ...


ListenerFactory = Callable[[str, SpeechCallbacks], Listener]
"""``(identity, callbacks) -> Listener`` (:class:`worker.listeners.ListenerFactory`)."""


@dataclass
class Utterance:
    identity: str
    name: str
    text: str
    source: Literal["speech", "text", "greeting"] = "speech"
    at: float = field(default_factory=time.monotonic)
    """When the utterance ended (end of speech, or when the text arrived)."""
    preempt: Preemptive | None = None
    """A preemptive reply: its turn is held until the utterance really ends (:mod:`worker.turn_taking`)."""
    audio_s: float = 0.0
    """Seconds of speech transcribed for it (usage)."""


@dataclass
class _Participant:
    info: ParticipantInfo
    listener: Listener | None = None
    speaking: bool = False
    transcribing: int = 0
    joined: Stopwatch = field(default_factory=Stopwatch)
    speech_started: float = 0.0
    segment: str = ""
    """The segment id of the utterance in progress (its interim and final transcripts share it)."""
    live: LiveTranscript | None = None
    preempt: Preemptive | None = None
    pieces: list[asyncio.Future[str]] = field(default_factory=list)
    """Transcriptions of the pieces of a long utterance cut by ``VAD_MAX_UTTERANCE_S`` while the person
    went on talking, or of words that stopped mid-sentence (``TURN_TEXT_CHECK``): held until the utterance
    really ends, then answered as one turn."""
    piece_timer: asyncio.TimerHandle | None = None
    held_ms: int = 0
    end_announced: bool = False
    """The held pieces' speech end was already announced (words held because they stopped mid-sentence)."""

    def drop_pieces(self) -> None:
        """Forget held pieces (the person left, or the session closes)."""
        if self.piece_timer is not None:
            self.piece_timer.cancel()
            self.piece_timer = None
        for piece in self.pieces:
            piece.cancel()
        self.pieces = []
        self.held_ms = 0
        self.end_announced = False


@dataclass
class _Turn:
    turn_id: str
    playout: Playout
    speakers: set[str]
    ended_at: float = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None
    cancel_reason: CancelReason = "barge_in"
    cancelled_by: str | None = None
    failed: bool = False
    late_told: bool = False
    """``turn_late`` was sent (or the turn is a greeting, which is never late)."""
    late_timer: asyncio.TimerHandle | None = None
    """Sends ``turn_late`` when the turn has not been heard ``TURN_LATE_S`` after the speech ended."""
    preempt: Preemptive | None = None
    """Set while the turn is a preemptive reply not confirmed yet: held, silent, recorded by nobody."""


@dataclass
class _BargeIn:
    identity: str
    turn: _Turn
    timer: asyncio.Task[None] | None = None


class RoomSession:
    """The conversation of one room. Feed it room events; :meth:`aclose` ends every task it started."""

    def __init__(
        self,
        settings: WorkerSettings,
        room: RoomPort,
        conversation: Conversation,
        listener_factory: ListenerFactory,
        *,
        room_name: str = "",
        metrics: MetricsAdapter | None = None,
        attachments: AttachmentSource | None = None,
        on_humans: Callable[[int], None] | None = None,
    ) -> None:
        self.settings = settings
        self._on_humans = on_humans
        self._room = room
        self._conv = conversation
        self._make_listener = listener_factory
        self._room_name = room_name
        self._metrics = safe_metrics(metrics)
        self._attachments = attachments
        self.floor = Floor(settings.floor_policy, settings.floor_attribute, tuple(settings.addressing_names))
        hold_ms = turn_detection_settings(settings).unfinished_hold_ms(settings.vad_min_silence_ms)
        self._unfinished_hold_s = None if hold_ms is None else hold_ms / 1000
        """How much longer a turn whose words stop mid-sentence waits for more (``None``: not checked)."""
        self._participants: dict[str, _Participant] = {}
        self._queue: deque[Utterance] = deque()
        self._queued = asyncio.Event()
        self._turn: _Turn | None = None
        self._barge: _BargeIn | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._free_since = 0.0
        self.usage: dict[str, float] = {}
        """What this room's completed turns consumed so far (the sum of their ``turn_end.usage``)."""
        """When the agent last became free (its previous turn ended): queueing behind an answer is not lateness."""
        self._empty = asyncio.Event()
        self._agent_speaking = False
        self._closed = False
        self.shutdown_turn: str | None = None
        """The turn the session's shutdown cancelled (its ``turn_end`` may not have reached a room that was already
        gone: then the next worker announces it, see :meth:`worker.persistence.RoomPersistence.mark_lost`)."""

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._room.set_agent_state("listening")
        self._loop_task = asyncio.create_task(self._turn_loop(), name=f"llmrtc-turns-{self._room_name}")

    async def wait_empty(self) -> None:
        """Return once the last human has left (after at least one joined)."""
        await self._empty.wait()

    @property
    def humans(self) -> list[str]:
        return list(self._participants)

    async def aclose(self) -> None:
        """Cancel the running turn and every task; close every listener."""
        if self._closed:
            return
        self._closed = True
        if self.usage:
            log.info("room usage: %s", self.usage, extra={"room": self._room_name, "usage": self.usage})
        if self._turn is not None and self._turn.task is not None:
            self._turn.cancel_reason = "shutdown"
            self._turn.task.cancel()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._barge is not None and self._barge.timer is not None:
            self._barge.timer.cancel()
        for p in self._participants.values():
            _stop_live(p)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for p in list(self._participants.values()):
            p.drop_pieces()
            if p.listener is not None:
                await p.listener.aclose()
        self._participants.clear()

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------------------------------ room events

    def on_participant_joined(self, participant: ParticipantInfo) -> None:
        if self._closed or participant.identity in self._participants:
            return
        state = _Participant(participant)
        if self.floor.listens_to(participant):
            state.listener = self._new_listener(participant.identity)
        self._participants[participant.identity] = state
        self._humans_changed()
        self._empty.clear()
        log.info("participant joined", extra={"room": self._room_name, "participant": participant.identity})
        self._spawn(self._hook("on_connection", participant.identity), "llmrtc-hook")
        self._spawn(self._note(f"{participant.name} joined the room."), "llmrtc-note")
        if self.settings.greeting:
            self._enqueue(
                Utterance(participant.identity, participant.name, self.settings.greeting, "greeting")
            )

    def on_participant_left(self, identity: str) -> None:
        state = self._participants.pop(identity, None)
        if state is None:
            return
        self._humans_changed()
        log.info("participant left", extra={"room": self._room_name, "participant": identity})
        _stop_live(state)
        if state.preempt is not None:
            self._drop_preempt(state.preempt, "the speaker left")
        state.drop_pieces()
        self._spawn(self._hook("on_disconnect", identity, state.joined.timing()), "llmrtc-hook")
        if state.listener is not None:
            self._spawn(state.listener.aclose(), "llmrtc-listener-close")
        self._queue = deque(u for u in self._queue if u.identity != identity)
        if self._barge is not None and self._barge.identity == identity:
            self._resolve_barge_in(confirmed=False)
        self._spawn(self._note(f"{state.info.name} left the room."), "llmrtc-note")
        if not self._participants:
            if self._turn is not None:
                self._cancel_turn("participant_left", identity)
            self._empty.set()

    def on_participant_attributes(self, participant: ParticipantInfo) -> None:
        state = self._participants.get(participant.identity)
        if state is None:
            return
        state.info = participant
        listens = self.floor.listens_to(participant)
        if listens and state.listener is None:
            state.listener = self._new_listener(participant.identity)
        elif not listens and state.listener is not None:
            self._spawn(state.listener.aclose(), "llmrtc-listener-close")
            state.listener = None

    def _humans_changed(self) -> None:
        if self._on_humans is not None:
            try:
                self._on_humans(len(self._participants))
            except Exception:
                log.exception("humans callback failed", extra={"room": self._room_name})

    def _ctx(self, identity: str | None, turn_id: str | None = None) -> HookContext:
        return HookContext(session_id=self._conv.session_id, turn_id=turn_id, participant=identity)

    async def _hook(self, name: str, identity: str | None, *args: object) -> None:
        await self._conv.hooks.call(name, self._ctx(identity), *args)

    def _new_listener(self, identity: str) -> Listener:
        listener = self._make_listener(identity, self)
        listener.agent_speaking = self._agent_speaking
        return listener

    def _set_agent_speaking(self, speaking: bool) -> None:
        """Tell every listener whether the agent's voice plays (barge-in detection runs only then)."""
        self._agent_speaking = speaking
        for p in self._participants.values():
            if p.listener is not None:
                p.listener.agent_speaking = speaking
        self._room.set_agent_state("speaking" if speaking else "listening")

    def on_audio(self, identity: str, pcm16k: bytes) -> None:
        state = self._participants.get(identity)
        if state is not None and state.listener is not None:
            state.listener.push(pcm16k)

    def on_audio_dropped(self, identity: str, seconds: float) -> None:
        """The VAD could not keep up with ``identity``'s audio and dropped ``seconds`` of it: tell them."""
        self._metrics.increment(MetricNames.WORKER_SHED, 1, {"what": "audio"})
        self._room.send(audio_dropped_event(seconds), destination=[identity])

    def on_data(self, identity: str, payload: bytes) -> None:
        state = self._participants.get(identity)
        try:
            message = parse_client_message(payload)
        except ProtocolError as exc:
            log.warning(
                "rejected client message: %s",
                exc.code,
                extra={"room": self._room_name, "participant": identity, "bytes": len(payload)},
            )
            self._room.send(ErrorMsg(code=exc.code, message=exc.message), destination=[identity])
            return
        if state is None:
            self._room.send(
                ErrorMsg(
                    code="unknown_participant", message="only participants of this room may send messages"
                ),
                destination=[identity],
            )
            return
        if isinstance(message, StopSpeaking):
            if self._turn is None:
                return
            if not self.floor.may_interrupt(state.info):
                self._room.send(
                    ErrorMsg(code="floor_denied", message="you may not stop the agent in this room"),
                    destination=[identity],
                )
                return
            # stop means stop: the requester's queued turns go too (the client clears its own queue view)
            self._queue = deque(u for u in self._queue if u.identity != identity)
            self._cancel_turn("stop_request", identity)
            return
        assert isinstance(message, TextInput)
        text = message.text.strip()
        if not text:
            self._room.send(ErrorMsg(code="invalid_message", message="text is empty"), destination=[identity])
            return
        self._publish_transcript(state.info, text, "text")
        if not self.floor.takes_floor(state.info, text):
            self._room.send(
                ErrorMsg(code="floor_denied", message=f"the floor policy is {self.floor.policy!r}"),
                destination=[identity],
            )
            return
        self._enqueue(Utterance(identity, state.info.name, text, "text"))

    # ------------------------------------------------------------------------------------------ speech

    def on_speech_start(self, identity: str) -> None:
        state = self._participants.get(identity)
        if state is None or self._closed:
            return
        if state.piece_timer is not None:
            state.piece_timer.cancel()
            state.piece_timer = None
        if state.speaking and state.pieces:
            return  # the same utterance goes on after a length cut: nothing new started
        state.speaking = True
        state.speech_started = time.monotonic()
        state.segment = new_id("seg")
        self._room.send(SpeechStartMsg(participant_identity=identity))
        self._spawn(self._hook("on_speech_start", identity), "llmrtc-hook")
        self._start_live(state)

    # ------------------------------------------------------------------------------------------ turn taking

    def _start_live(self, state: _Participant) -> None:
        """Interim transcripts of the utterance that just started (``INTERIM_TRANSCRIPTS``)."""
        _stop_live(state)
        if not self.settings.interim_transcripts:
            return
        try:
            stt = self._conv.streaming_stt(self.settings.interim_interval_ms / 1000)
        except LLMRTCError as exc:
            log.warning("no interim transcripts: %s", exc, extra={"room": self._room_name})
            return
        identity, segment = state.info.identity, state.segment
        state.live = LiveTranscript(
            stt, functools.partial(self._on_interim, identity, segment), name=identity
        )

    def on_speech_audio(self, identity: str, pcm16k: bytes) -> None:
        """Audio of the utterance in progress: fed to its live transcript."""
        state = self._participants.get(identity)
        if state is not None and state.live is not None:
            state.live.feed(pcm16k)

    def _on_interim(self, identity: str, segment: str, text: str) -> None:
        state = self._participants.get(identity)
        if state is None or self._closed or state.segment != segment:
            return  # the utterance is over: its final transcript was (or is being) sent
        self._publish_transcript(state.info, text, "speech", segment, final=False)

    def on_turn_predicted(self, identity: str, pcm16k: bytes) -> None:
        """The end-of-turn model expects the turn to end (``PREEMPTIVE_GENERATION``): transcribe what was
        said so far and, when the agent is free, start the reply now, held until the utterance ends."""
        state = self._participants.get(identity)
        if (
            state is None
            or self._closed
            or not self.settings.preemptive_generation
            or not pcm16k
            or state.preempt is not None
            or state.pieces
            or self._turn is not None
            or self._queue
            or self._barge is not None
        ):
            return
        state.segment = state.segment or new_id("seg")
        stt = asyncio.ensure_future(self._stt(state, pcm16k, state.segment))
        preempt = Preemptive(identity, state.segment, stt)
        state.preempt = preempt
        preempt.stt.add_done_callback(lambda _: self._preempt_transcribed(state, preempt))

    def _preempt_transcribed(self, state: _Participant, preempt: Preemptive) -> None:
        if preempt.dropped or state.preempt is not preempt or preempt.stt.cancelled():
            return
        text = preempt.stt.result() if preempt.stt.exception() is None else ""
        if (
            not text
            or self._unfinished(text) is not None
            or self._closed
            or self._turn is not None
            or self._queue
            or self._barge is not None
            or not self.floor.takes_floor(state.info, text)
        ):
            return
        preempt.queued = True
        log.info(
            "end of turn predicted: preemptive reply started",
            extra={"room": self._room_name, "participant": state.info.identity},
        )
        self._enqueue(Utterance(state.info.identity, state.info.name, text, "speech", preempt=preempt))

    def on_turn_resumed(self, identity: str) -> None:
        """The person went on after a predicted end: a preemptive reply is dropped unheard."""
        state = self._participants.get(identity)
        if state is not None and state.preempt is not None:
            preempt, state.preempt = state.preempt, None
            self._drop_preempt(preempt, "the speaker went on")

    def _drop_preempt(self, preempt: Preemptive, why: str) -> None:
        """Cancel a preemptive reply: no audio was played, its turn records nothing, no message was sent."""
        if preempt.dropped:
            return
        preempt.dropped = True
        if not preempt.stt.done():
            preempt.stt.cancel()
        self._queue = deque(u for u in self._queue if u.preempt is not preempt)
        turn = self._turn
        if turn is not None and turn.preempt is preempt and turn.task is not None and not turn.task.done():
            self._conv.discard(turn.turn_id)
            turn.task.cancel()
        if preempt.queued:
            log.info("preemptive reply dropped: %s", why, extra={"room": self._room_name})

    def _confirm_preempt(self, preempt: Preemptive, ended: float) -> None:
        """The utterance ended as predicted: the held reply goes ahead (its end of speech is ``ended``)."""
        turn = self._turn
        if turn is not None and turn.preempt is preempt:
            turn.ended_at = ended
        for utterance in self._queue:
            if utterance.preempt is preempt:
                utterance.at = ended
        preempt.confirmed.set()

    def on_interruption(self, identity: str) -> None:
        """Speech met the onset rule while the agent spoke: barge-in."""
        state = self._participants.get(identity)
        turn = self._turn
        if (
            state is None
            or self._closed
            or turn is None
            or not self.settings.barge_in
            or not turn.playout.playing
            or self._barge is not None
            or not self.floor.may_interrupt(state.info)
        ):
            return
        log.info("barge-in", extra={"room": self._room_name, "participant": identity, "turn": turn.turn_id})
        turn.playout.pause()
        self._room.send(BargeInMsg(turn_id=turn.turn_id, participant_identity=identity))
        if not self.settings.resume_false_interruption:
            self._cancel_turn("barge_in", identity)
            return
        self._set_agent_speaking(False)
        barge = _BargeIn(identity, turn)
        barge.timer = asyncio.create_task(self._barge_in_timer(barge), name="llmrtc-barge-in")
        self._barge = barge

    def on_speech_end(self, identity: str, pcm16k: bytes, split: bool = False) -> None:
        """An utterance ended; ``split``: it was cut at the maximum utterance length, the person may go on.

        A cut piece is transcribed at once (its transcript is shown) but starts no turn: the pieces are held
        and answered as one turn when the utterance really ends (a silence of ``VAD_MIN_SILENCE_MS``), so a
        long monologue is never answered mid-sentence, and the speaker's own continued speech never barges in
        on an answer to its first half.
        """
        state = self._participants.get(identity)
        if state is None or self._closed:
            return
        if state.piece_timer is not None:
            state.piece_timer.cancel()
            state.piece_timer = None
        if split:
            state.transcribing += 1
            state.held_ms += len(pcm16k) * 1000 // 32000
            state.pieces.append(asyncio.ensure_future(self._transcribe_piece(state, pcm16k)))
            # if the cut fell on the last words, no speech start follows: the held pieces end the utterance
            wait_s = self.settings.vad_min_silence_ms / 1000 + 0.3
            state.piece_timer = asyncio.get_running_loop().call_later(
                wait_s, self._end_held_utterance, identity
            )
            return
        self._end_utterance(state, pcm16k)

    def _unfinished(self, text: str) -> str | None:
        """Why ``text`` stops mid-sentence, when the words are checked (``TURN_TEXT_CHECK``)."""
        if self._unfinished_hold_s is None:
            return None
        return unfinished_reason(text, self.settings.turn_text_language)

    def _hold_unfinished(self, state: _Participant, text: str, audio_ms: int) -> bool:
        """The words stop mid-sentence ("a flight to"): hold them as the first piece of the turn and wait
        up to the mid-thought silence for the rest; they are answered together (or alone, if nothing
        follows). ``True`` when held."""
        why = self._unfinished(text)
        if why is None or self._unfinished_hold_s is None:
            return False
        log.info(
            "the words stop mid-sentence (%s): waiting for the rest",
            why,
            extra={"room": self._room_name, "participant": state.info.identity},
        )
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        done.set_result(text)
        state.pieces.append(done)
        state.end_announced = True
        state.held_ms += audio_ms
        if state.piece_timer is not None:
            state.piece_timer.cancel()
            state.piece_timer = None
        if not state.speaking:  # already speaking again: that utterance's end takes these words along
            state.piece_timer = asyncio.get_running_loop().call_later(
                self._unfinished_hold_s, self._end_held_utterance, state.info.identity
            )
        return True

    def _end_held_utterance(self, identity: str) -> None:
        state = self._participants.get(identity)
        if state is None or self._closed or not state.pieces:
            return
        state.piece_timer = None
        self._end_utterance(state, b"")

    def _end_utterance(self, state: _Participant, pcm16k: bytes) -> None:
        identity = state.info.identity
        pieces, state.pieces = state.pieces, []
        state.speaking = False
        _stop_live(state)
        segment, state.segment = state.segment or new_id("seg"), ""
        preempt, state.preempt = state.preempt, None
        duration_ms = len(pcm16k) * 1000 // 32000 + state.held_ms
        state.held_ms = 0
        ended = time.monotonic()
        if pcm16k or not state.end_announced:  # held unfinished words announced their end already
            self._room.send(SpeechEndMsg(participant_identity=identity, duration_ms=duration_ms))
            self._spawn(self._hook("on_speech_end", identity, float(duration_ms)), "llmrtc-hook")
        state.end_announced = False
        state.transcribing += 1
        self._spawn(
            self._transcribe(state, pcm16k, ended, pieces, segment=segment, preempt=preempt),
            f"llmrtc-stt-{identity}",
        )

    async def _stt(self, state: _Participant, pcm16k: bytes, segment: str) -> str:
        """One piece of speech as text ("" when it failed: the room was told)."""
        try:
            result = await self._conv.transcribe(
                pcm16_to_wav(pcm16k, 16000), speaker=state.info.name, utterance_id=segment
            )
            return result.text.strip()
        except LLMRTCError as exc:
            extra = {"room": self._room_name, "participant": state.info.identity}
            # tell the speaker (and the room) that their words were lost, so they can say them again
            self._room.send(error_message(exc, "stt", extra=extra))
            return ""

    async def _transcribe_piece(self, state: _Participant, pcm16k: bytes) -> str:
        segment = new_id("seg")
        try:
            text = await self._stt(state, pcm16k, segment)
        finally:
            state.transcribing -= 1
        if text and state.info.identity in self._participants:
            self._publish_transcript(state.info, text, "speech", segment)
        return text

    async def _transcribe(
        self,
        state: _Participant,
        pcm16k: bytes,
        ended: float,
        pieces: list[asyncio.Future[str]] | None = None,
        *,
        segment: str | None = None,
        preempt: Preemptive | None = None,
    ) -> None:
        identity = state.info.identity
        segment = segment or new_id("seg")
        try:
            text = ""
            if preempt is not None and not preempt.dropped and pcm16k:
                # only silence followed the prediction: its transcription is this utterance's
                text = await _result_or_empty(preempt.stt)
            if not text:
                text = await self._stt(state, pcm16k, segment) if pcm16k else ""
        finally:
            state.transcribing -= 1
        held = [
            t for t in await asyncio.gather(*(pieces or []), return_exceptions=True) if isinstance(t, str)
        ]
        if text and identity in self._participants:
            self._publish_transcript(state.info, text, "speech", segment)
        text = " ".join(t for t in [*held, text] if t)
        if preempt is not None:
            confirmed = text and preempt.queued and not held and not preempt.dropped
            if confirmed and identity in self._participants:
                self._confirm_preempt(preempt, ended)
                return
            self._drop_preempt(preempt, "the utterance did not end as predicted")
        barge = self._barge
        if barge is not None and barge.identity == identity:
            # "mm-hm", "yeah" while the agent talks: listening, not interrupting; the answer goes on
            backchannel = bool(text) and is_backchannel(text, duration_s=len(pcm16k) / 32000 or None)
            self._resolve_barge_in(confirmed=bool(text) and not backchannel)
            if backchannel:
                log.info("backchannel: the agent goes on", extra={"room": self._room_name})
                return
        if not text or identity not in self._participants:
            return
        if pcm16k and self._hold_unfinished(state, text, len(pcm16k) * 1000 // 32000):
            return  # (the end of held words, pcm16k empty, is never held again)
        if self.floor.takes_floor(state.info, text):
            self._enqueue(
                Utterance(identity, state.info.name, text, "speech", at=ended, audio_s=len(pcm16k) / 32000)
            )
        else:
            log.info("not addressed to the agent", extra={"room": self._room_name, "participant": identity})

    async def _barge_in_timer(self, barge: _BargeIn) -> None:
        await asyncio.sleep(self.settings.false_interruption_timeout_s)
        if self._barge is not barge:
            return
        state = self._participants.get(barge.identity)
        if state is not None and state.speaking:
            self._resolve_barge_in(confirmed=True)
        elif state is None or state.transcribing == 0:
            self._resolve_barge_in(confirmed=False)

    def _resolve_barge_in(self, *, confirmed: bool) -> None:
        barge = self._barge
        if barge is None:
            return
        self._barge = None
        if barge.timer is not None and barge.timer is not asyncio.current_task():
            barge.timer.cancel()
        if barge.turn is not self._turn:
            return
        if confirmed:
            self._cancel_turn("barge_in", barge.identity)
        else:
            log.info(
                "false interruption: resuming", extra={"room": self._room_name, "turn": barge.turn.turn_id}
            )
            barge.turn.playout.resume()
            self._set_agent_speaking(True)

    def _publish_transcript(
        self,
        info: ParticipantInfo,
        text: str,
        source: Literal["speech", "text"],
        segment: str | None = None,
        *,
        final: bool = True,
    ) -> None:
        segment = segment or new_id("seg")
        self._room.send(
            TranscriptMsg(
                participant_identity=info.identity,
                participant_name=info.name,
                text=text,
                final=final,
                source=source,
                segment_id=segment,
            )
        )
        self._room.user_transcription(info.identity, text, segment, final=final)

    async def _note(self, note: str) -> None:
        try:
            await self._conv.add_context_note(note)
        except LLMRTCError as exc:
            log.warning("could not add a context note: %s", exc)

    # ------------------------------------------------------------------------------------------ turns

    def _enqueue(self, utterance: Utterance) -> None:
        if len(self._queue) >= self.settings.max_queued_turns:
            dropped = self._queue.popleft()
            log.warning(
                "turn queue full: dropping the oldest utterance",
                extra={"room": self._room_name, "participant": dropped.identity},
            )
            self._metrics.increment(MetricNames.WORKER_SHED, 1, {"what": "queued_turn"})
            # never a silent drop: the person whose words will not be answered is told
            self._room.send(
                ErrorMsg(
                    code="turn_dropped",
                    message="The agent had too much to answer and skipped one of your messages. "
                    "Please say it again.",
                    component="worker",
                    retryable=True,
                ),
                destination=[dropped.identity],
            )
        self._queue.append(utterance)
        self._queued.set()

    async def _next_turn(self) -> list[Utterance]:
        while not self._queue:
            self._queued.clear()
            await self._queued.wait()
        first = self._queue.popleft()
        if self.settings.queue_policy != "merge" or first.source == "greeting":
            return [first]
        batch = [first]
        while self._queue and self._queue[0].source != "greeting":
            batch.append(self._queue.popleft())
        return batch

    async def _turn_loop(self) -> None:
        while True:
            batch = await self._next_turn()
            turn_id = new_id("turn")
            turn = _Turn(
                turn_id, Playout(self._room.audio), {u.identity for u in batch}, ended_at=batch[-1].at
            )
            turn.playout = Playout(
                self._room.audio, on_first_audio=functools.partial(self._on_first_audio, turn)
            )
            self._turn = turn
            held = batch[0].preempt
            if held is not None and not held.confirmed.is_set():
                turn.preempt = held
                turn.playout.pause()  # nothing is heard before the turn is confirmed
                self._conv.gate_tools(turn_id, held.wait_confirmed)
            turn.task = asyncio.create_task(self._run_turn(turn, batch), name=f"llmrtc-{turn_id}")
            try:
                await asyncio.wait([turn.task])
            finally:
                if not turn.task.done():
                    turn.cancel_reason = "shutdown"
                    turn.task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await turn.task
                if turn.late_timer is not None:
                    turn.late_timer.cancel()
                self._turn = None
                self._free_since = time.monotonic()
                if self._barge is not None and self._barge.turn is turn:
                    self._resolve_barge_in(confirmed=False)
                if not self._closed:
                    self._set_agent_speaking(False)

    def _on_first_audio(self, turn: _Turn) -> None:
        # what the person perceives: from the end of their speech to the agent's first audio
        waited_s = time.monotonic() - turn.ended_at
        self._metrics.timing(MetricNames.TURN_FIRST_AUDIO, waited_s * 1000)
        if not turn.late_told and waited_s > self.settings.turn_late_s:  # started in time, plays late
            self._announce_late(turn, waited_s)
        self._room.send(TTSStartMsg(turn_id=turn.turn_id))
        self._set_agent_speaking(True)

    def _tell_late(self, turn: _Turn, since: float) -> None:
        """``TURN_LATE_S`` passed since the speech ended (``since``) and nothing of the answer was heard yet."""
        turn.late_timer = None
        if turn.late_told or turn.playout.started or self._turn is not turn or self._closed:
            return
        if turn.task is None or turn.task.done() or turn.task.cancelling():
            return  # ending (cancelled by a barge-in, say): it ends with its own event
        self._announce_late(turn, time.monotonic() - since, "turn not heard %.1f s after the speech ended")

    def _announce_late(self, turn: _Turn, waited_s: float, log_line: str | None = None) -> None:
        """Tell the room (once per turn) that ``turn`` is late: ``turn_late``, counted as a shed."""
        turn.late_told = True
        if log_line is not None:
            log.warning(log_line, waited_s, extra={"room": self._room_name, "turn": turn.turn_id})
        self._metrics.increment(MetricNames.WORKER_SHED, 1, {"what": "late_turn"})
        self._room.send(late_turn_event(turn.turn_id, waited_s))

    def _cancel_turn(self, reason: CancelReason, by: str | None) -> None:
        turn = self._turn
        if turn is None or turn.task is None or turn.task.done():
            return
        if turn.preempt is not None:  # a held preemptive reply: nobody heard or saw it, drop it unrecorded
            self._drop_preempt(turn.preempt, reason)
            return
        turn.cancel_reason = reason
        turn.cancelled_by = by
        turn.playout.pause()
        turn.task.cancel()

    async def _run_turn(self, turn: _Turn, batch: list[Utterance]) -> None:
        first = batch[0]
        tid = turn.turn_id
        extra = {"room": self._room_name, "turn": tid, "participant": first.identity}
        early: Prefetch[TurnEvent] | None = None
        if turn.preempt is not None:
            # a preemptive reply: the LLM (and TTS, into the paused playout) start now; nothing is sent or
            # heard until the utterance ends as predicted, and a drop cancels this task right here
            early = Prefetch(
                self._conv.run_text_turn(first.text, speaker=first.name, turn_id=tid, playout=turn.playout)
            )
            try:
                await turn.preempt.confirmed.wait()
            except BaseException:
                await early.aclose()
                await turn.playout.aclose()
                raise
            turn.preempt = None
            turn.playout.resume()
        log.info("turn started (%s)", first.source, extra=extra)
        speakers = [] if first.source == "greeting" else [u.identity for u in batch]
        self._room.send(TurnStartMsg(turn_id=tid, participant_identities=speakers, source=first.source))
        waited_s = time.monotonic() - max(first.at, self._free_since)
        turn.late_told = first.source == "greeting"
        if first.source != "greeting" and waited_s > self.settings.turn_late_s:  # late, and said so
            self._announce_late(turn, waited_s, "turn starts %.1f s after the speech ended")
        elif not turn.late_told:  # in time so far: told as soon as it is late, not once it finally plays
            turn.late_timer = asyncio.get_running_loop().call_later(
                self.settings.turn_late_s - waited_s, self._tell_late, turn, time.monotonic() - waited_s
            )
        self._room.set_agent_state("thinking")
        segment = new_id("agent")
        playout = turn.playout
        completed = False
        usage: dict[str, float] | None = None
        try:
            events: AsyncIterator[TurnEvent]
            if first.source == "greeting":
                events = self._conv.say(first.text, turn_id=tid, playout=playout)
            else:
                images = await self._turn_images(speakers, tid, extra)
                if len(batch) == 1:
                    text, speaker = first.text, first.name
                else:
                    text, speaker = "\n".join(f"{u.name}: {u.text}" for u in batch), None
                events = (
                    early
                    if early is not None
                    else self._conv.run_text_turn(
                        text, speaker=speaker, turn_id=tid, playout=playout, attachments=images or None
                    )
                )
            try:
                async for event in events:
                    if isinstance(event, TurnCompleteEvent):
                        completed = True
                        usage = _usage(event, batch)
                        for key, value in usage.items():
                            self.usage[key] = round(self.usage.get(key, 0.0) + value, 3)
                    self._on_turn_event(turn, event, segment)
            finally:
                closer = getattr(events, "aclose", None)
                if closer is not None:
                    await _maybe_await(closer())
            await playout.aclose()
            self._room.agent_transcription(segment, "", final=True)
            if completed and not turn.failed:
                if playout.started:
                    self._room.send(TTSCompleteMsg(turn_id=tid))
                self._room.send(TurnEndMsg(turn_id=tid, outcome="completed", usage=usage))
                log.info("turn complete", extra=extra)
            else:
                if not turn.failed:  # the stream ended without an answer and without an error event
                    self._room.send(
                        ErrorMsg(
                            code="turn_incomplete",
                            message="The agent could not finish its answer. Please try again.",
                            turn_id=tid,
                            component="worker",
                            retryable=True,
                        )
                    )
                heard = playout.heard_text() if playout.started else None
                self._room.send(TurnEndMsg(turn_id=tid, outcome="error", heard_text=heard))
        except asyncio.CancelledError:
            heard = playout.heard_text()
            await playout.aclose()
            self._room.agent_transcription(segment, "", final=True)
            self._room.send(
                TTSCancelledMsg(
                    turn_id=tid, reason=turn.cancel_reason, by=turn.cancelled_by, heard_text=heard
                )
            )
            self._room.send(
                TurnEndMsg(turn_id=tid, outcome="cancelled", reason=turn.cancel_reason, heard_text=heard)
            )
            log.info("turn cancelled (%s): %d heard chars", turn.cancel_reason, len(heard), extra=extra)
            if turn.cancel_reason == "shutdown":
                self.shutdown_turn = tid
            raise
        except Exception as exc:
            await playout.aclose()
            if not isinstance(exc, LLMRTCError):
                log.exception("turn crashed", extra=extra)
            self._room.send(error_message(exc, "worker", turn_id=tid, extra=extra))
            self._room.send(TurnEndMsg(turn_id=tid, outcome="error"))

    async def _turn_images(
        self, speakers: list[str], turn_id: str, extra: dict[str, str]
    ) -> list[VisionAttachment]:
        if self._attachments is None or not speakers:
            return []
        try:
            return await self._attachments(speakers, turn_id)
        except Exception:
            log.exception("could not take the turn's images (answering without them)", extra=extra)
            return []

    def _on_turn_event(self, turn: _Turn, event: TurnEvent, segment: str) -> None:
        tid = turn.turn_id
        if isinstance(event, LLMChunkEvent):
            if event.content:
                self._room.send(LLMChunkMsg(turn_id=tid, content=event.content))
                self._room.agent_transcription(segment, event.content)
        elif isinstance(event, LLMFinalEvent):
            self._room.send(LLMMsg(turn_id=tid, text=event.result.full_text))
        elif isinstance(event, TTSStartEvent):
            pass  # tts_start is sent when the first audio is actually played
        elif isinstance(event, ToolCallEvent):
            self._room.send(
                ToolCallMsg(
                    turn_id=tid,
                    call_id=event.call.call_id,
                    name=event.call.name,
                    arguments=redact_arguments(event.call.arguments),
                )
            )
        elif isinstance(event, ToolResultEvent):
            r = event.result
            self._room.send(
                ToolResultMsg(
                    turn_id=tid,
                    call_id=r.call_id,
                    name=r.tool_name,
                    success=r.success,
                    error=r.error_code or (None if r.success else "tool_failed"),
                    duration_ms=r.duration_ms,
                )
            )
        elif isinstance(event, StageChangeEvent):
            self._room.send(
                StageChangeMsg(
                    turn_id=tid,
                    from_stage=event.from_stage,
                    to_stage=event.to_stage,
                    transition_id=event.transition_id,
                    reason=event.reason,
                )
            )
        elif isinstance(event, ErrorEvent):
            turn.failed = True
            self._room.send(
                error_message(
                    event.error, event.component or "worker", turn_id=tid, extra={"room": self._room_name}
                )
            )


def _usage(event: TurnCompleteEvent, batch: list[Utterance]) -> dict[str, float]:
    """What a completed turn consumed: LLM tokens and TTS characters (from the pipeline), STT seconds."""
    reported = event.metadata.get("usage")
    usage = (
        {k: float(v) for k, v in reported.items() if isinstance(v, int | float)}
        if isinstance(reported, dict)
        else {}
    )
    usage["stt_audio_s"] = round(sum(u.audio_s for u in batch), 3)
    return usage


def _stop_live(state: _Participant) -> None:
    """Stop the live transcript of ``state``'s utterance (no interim result is sent after this)."""
    if state.live is not None:
        state.live.cancel()
        state.live = None


async def _result_or_empty(future: asyncio.Future[str]) -> str:
    """A preemptive transcription's text ("" if it failed or was cancelled)."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if future.cancelled():
            return ""
        raise
    except Exception:
        return ""


async def _maybe_await(value: object) -> None:
    if inspect.isawaitable(value):
        await value


__all__ = [
    "AttachmentSource",
    "Conversation",
    "ListenerFactory",
    "RoomPort",
    "RoomSession",
    "Utterance",
    "new_id",
]
