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
remainder resumes. Without it the turn is cancelled at onset. A cancelled turn sends ``tts_cancelled`` and
records what was actually heard (``Conversation.interrupt``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from llmrtc.audio.wav import pcm16_to_wav
from llmrtc.errors import LLMRTCError, ProtocolError
from llmrtc.events import (
    ErrorEvent,
    LLMChunkEvent,
    LLMFinalEvent,
    StageChangeEvent,
    ToolCallEvent,
    ToolResultEvent,
    TTSAudioEvent,
    TTSStartEvent,
    TurnEvent,
)
from llmrtc.providers.base import STTProvider
from worker.config import WorkerSettings
from worker.floor import Floor
from worker.listeners import SpeechCallbacks
from worker.playout import AudioOut, Playout
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
    parse_client_message,
    redact_arguments,
)
from worker.room import ParticipantInfo

log = logging.getLogger("llmrtc.worker.session")

CancelReason = Literal["barge_in", "stop_request", "participant_left", "shutdown"]


class Conversation(Protocol):
    """What the session drives: a ConversationOrchestrator or a VoicePlaybookOrchestrator (via an adapter)."""

    def run_text_turn(self, text: str, *, speaker: str | None, turn_id: str) -> AsyncIterator[TurnEvent]: ...

    async def interrupt(self, turn_id: str, spoken_text: str) -> None: ...

    async def add_context_note(self, note: str) -> None: ...

    def say(self, text: str, *, turn_id: str) -> AsyncIterator[TurnEvent]:
        """Speak fixed text (the greeting) and record it as the assistant's."""
        ...


class RoomPort(Protocol):
    """What the session needs from the room (:class:`worker.room.RoomIO`)."""

    @property
    def audio(self) -> AudioOut: ...

    def send(self, event: ServerEvent, destination: list[str] | None = None) -> None: ...

    def set_agent_state(self, state: AgentState) -> None: ...

    def user_transcription(self, identity: str, text: str, segment_id: str) -> None: ...

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


@dataclass
class _Participant:
    info: ParticipantInfo
    listener: Listener | None = None
    speaking: bool = False
    transcribing: int = 0


@dataclass
class _Turn:
    turn_id: str
    playout: Playout
    speakers: set[str]
    task: asyncio.Task[None] | None = None
    cancel_reason: CancelReason = "barge_in"
    cancelled_by: str | None = None


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
        stt: STTProvider,
        listener_factory: ListenerFactory,
        *,
        room_name: str = "",
    ) -> None:
        self.settings = settings
        self._room = room
        self._conv = conversation
        self._stt = stt
        self._make_listener = listener_factory
        self._room_name = room_name
        self.floor = Floor(settings.floor_policy, settings.floor_attribute, tuple(settings.addressing_names))
        self._participants: dict[str, _Participant] = {}
        self._queue: deque[Utterance] = deque()
        self._queued = asyncio.Event()
        self._turn: _Turn | None = None
        self._barge: _BargeIn | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._loop_task: asyncio.Task[None] | None = None
        self._empty = asyncio.Event()
        self._agent_speaking = False
        self._closed = False

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
        if self._turn is not None and self._turn.task is not None:
            self._turn.cancel_reason = "shutdown"
            self._turn.task.cancel()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._barge is not None and self._barge.timer is not None:
            self._barge.timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for p in list(self._participants.values()):
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
        self._empty.clear()
        log.info("participant joined", extra={"room": self._room_name, "participant": participant.identity})
        self._spawn(self._note(f"{participant.name} joined the room."), "llmrtc-note")
        if self.settings.greeting:
            self._enqueue(
                Utterance(participant.identity, participant.name, self.settings.greeting, "greeting")
            )

    def on_participant_left(self, identity: str) -> None:
        state = self._participants.pop(identity, None)
        if state is None:
            return
        log.info("participant left", extra={"room": self._room_name, "participant": identity})
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
        state.speaking = True
        self._room.send(SpeechStartMsg(participant_identity=identity))

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

    def on_speech_end(self, identity: str, pcm16k: bytes) -> None:
        state = self._participants.get(identity)
        if state is None or self._closed:
            return
        state.speaking = False
        duration_ms = len(pcm16k) * 1000 // 32000
        self._room.send(SpeechEndMsg(participant_identity=identity, duration_ms=duration_ms))
        state.transcribing += 1
        self._spawn(self._transcribe(state, pcm16k), f"llmrtc-stt-{identity}")

    async def _transcribe(self, state: _Participant, pcm16k: bytes) -> None:
        identity = state.info.identity
        text = ""
        try:
            result = await self._stt.transcribe(pcm16_to_wav(pcm16k, 16000))
            text = result.text.strip()
        except LLMRTCError as exc:
            log.warning(
                "transcription failed: %s", exc, extra={"room": self._room_name, "participant": identity}
            )
            self._room.send(ErrorMsg(code=exc.code, message=f"transcription failed: {exc.message}"))
        finally:
            state.transcribing -= 1
        barge = self._barge
        if barge is not None and barge.identity == identity:
            self._resolve_barge_in(confirmed=bool(text))
        if not text or identity not in self._participants:
            return
        self._publish_transcript(state.info, text, "speech")
        if self.floor.takes_floor(state.info, text):
            self._enqueue(Utterance(identity, state.info.name, text, "speech"))
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
        self, info: ParticipantInfo, text: str, source: Literal["speech", "text"]
    ) -> None:
        segment = f"seg_{next(self._ids)}"
        self._room.send(
            TranscriptMsg(
                participant_identity=info.identity,
                participant_name=info.name,
                text=text,
                final=True,
                source=source,
            )
        )
        self._room.user_transcription(info.identity, text, segment)

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
            turn_id = f"turn_{next(self._ids)}"
            turn = _Turn(turn_id, Playout(self._room.audio), {u.identity for u in batch})
            turn.playout = Playout(
                self._room.audio, on_first_audio=functools.partial(self._on_first_audio, turn)
            )
            self._turn = turn
            turn.task = asyncio.create_task(self._run_turn(turn, batch), name=f"llmrtc-{turn_id}")
            try:
                await asyncio.wait([turn.task])
            finally:
                if not turn.task.done():
                    turn.cancel_reason = "shutdown"
                    turn.task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await turn.task
                self._turn = None
                if self._barge is not None and self._barge.turn is turn:
                    self._resolve_barge_in(confirmed=False)
                if not self._closed:
                    self._set_agent_speaking(False)

    def _on_first_audio(self, turn: _Turn) -> None:
        self._room.send(TTSStartMsg(turn_id=turn.turn_id))
        self._set_agent_speaking(True)

    def _cancel_turn(self, reason: CancelReason, by: str | None) -> None:
        turn = self._turn
        if turn is None or turn.task is None or turn.task.done():
            return
        turn.cancel_reason = reason
        turn.cancelled_by = by
        turn.playout.pause()
        turn.task.cancel()

    async def _run_turn(self, turn: _Turn, batch: list[Utterance]) -> None:
        first = batch[0]
        extra = {"room": self._room_name, "turn": turn.turn_id, "participant": first.identity}
        log.info("turn started (%s)", first.source, extra=extra)
        self._room.set_agent_state("thinking")
        playout_task = asyncio.create_task(turn.playout.run(), name=f"llmrtc-playout-{turn.turn_id}")
        segment = f"agent_{turn.turn_id}"
        events: AsyncIterator[TurnEvent]
        if first.source == "greeting":
            events = self._conv.say(first.text, turn_id=turn.turn_id)
        elif len(batch) == 1:
            events = self._conv.run_text_turn(first.text, speaker=first.name, turn_id=turn.turn_id)
        else:
            merged = "\n".join(f"{u.name}: {u.text}" for u in batch)
            events = self._conv.run_text_turn(merged, speaker=None, turn_id=turn.turn_id)
        try:
            try:
                async for event in events:
                    self._on_turn_event(turn, event, segment)
            finally:
                closer = getattr(events, "aclose", None)
                if closer is not None:
                    await _maybe_await(closer())
            turn.playout.finish()
            await playout_task
            if turn.playout.started:
                self._room.send(TTSCompleteMsg(turn_id=turn.turn_id))
            self._room.agent_transcription(segment, "", final=True)
            log.info("turn complete", extra=extra)
        except asyncio.CancelledError:
            spoken = turn.playout.spoken_text()
            await turn.playout.aclose(playout_task)
            self._room.agent_transcription(segment, "", final=True)
            self._room.send(
                TTSCancelledMsg(turn_id=turn.turn_id, reason=turn.cancel_reason, by=turn.cancelled_by)
            )
            log.info("turn cancelled (%s)", turn.cancel_reason, extra=extra)
            with contextlib.suppress(LLMRTCError):
                await asyncio.shield(self._conv.interrupt(turn.turn_id, spoken))
            raise
        except LLMRTCError as exc:
            await turn.playout.aclose(playout_task)
            log.warning("turn failed: %s", exc, extra=extra)
            self._room.send(ErrorMsg(code=exc.code, message=exc.message, turn_id=turn.turn_id))
        except Exception as exc:
            await turn.playout.aclose(playout_task)
            log.exception("turn crashed", extra=extra)
            self._room.send(
                ErrorMsg(
                    code="internal_error",
                    message=f"the turn failed: {type(exc).__name__}",
                    turn_id=turn.turn_id,
                )
            )

    def _on_turn_event(self, turn: _Turn, event: TurnEvent, segment: str) -> None:
        tid = turn.turn_id
        if isinstance(event, LLMChunkEvent):
            if event.content:
                self._room.send(LLMChunkMsg(turn_id=tid, content=event.content))
                self._room.agent_transcription(segment, event.content)
        elif isinstance(event, LLMFinalEvent):
            self._room.send(LLMMsg(turn_id=tid, text=event.result.full_text))
        elif isinstance(event, TTSAudioEvent):
            turn.playout.feed(event.chunk.pcm, event.chunk.sample_rate, event.text, event.last_in_segment)
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
            log.warning("turn error: %s", event.error.message, extra={"room": self._room_name, "turn": tid})
            self._room.send(ErrorMsg(code=event.error.code, message=event.error.message, turn_id=tid))


async def _maybe_await(value: object) -> None:
    if inspect.isawaitable(value):
        await value


__all__ = ["Conversation", "ListenerFactory", "RoomPort", "RoomSession", "Utterance"]
