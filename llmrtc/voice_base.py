"""VoiceOrchestratorBase: the turn lifecycle every voice orchestrator shares.

A turn runs in the same steps whatever produces the answer:

1. the turn is registered (one id runs once at a time), counted, and ``on_turn_start`` is called;
2. the utterance is transcribed (or the typed text taken) and yielded as a ``TranscriptEvent``; an empty
   transcript ends the turn with ``TurnCompleteEvent(metadata={"empty_transcript": True})``;
3. the user message is built (:meth:`llmrtc.speech.SpeechPipeline.user_message`, images described when the
   LLM cannot see) and kept as :attr:`llmrtc.turns.SpeechTurn.message`;
4. a producer task runs the subclass's :meth:`VoiceOrchestratorBase._produce` with a
   :class:`~llmrtc.turns.TurnEmitter` and (when the turn is spoken) a
   :class:`~llmrtc.speech.StreamingSpeaker`, while the caller's iterator yields the queued events;
5. however the turn ends (completed, failed, cancelled, interrupted) the producer is stopped, the subclass
   records the outcome (:meth:`VoiceOrchestratorBase._settle`), and ``on_turn_end`` gets the timing.

**What was heard.** A turn given a :class:`~llmrtc.playout.Playout` (the worker's agent track, the console's
WAV writer) is played through it: its audio is fed to the playout as it is released, the turn commits only
once the playout played it to the end, and a cut turn records exactly what the playout says was heard. A
turn without one counts a sentence heard when its last audio event was handed to the consumer.

:class:`~llmrtc.playbooks.voice.VoicePlaybookOrchestrator` is the one implementation; the plain
assistant (:class:`~llmrtc.orchestrator.ConversationOrchestrator`) is a one-stage playbook on it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from llmrtc.chunking import Chunker
from llmrtc.errors import ConfigError, ProviderTimeoutError
from llmrtc.events import ErrorEvent, TranscriptEvent, TTSAudioEvent, TurnCompleteEvent, TurnEvent
from llmrtc.hooks import HookContext, HookRunner, Stopwatch
from llmrtc.metrics import MetricNames, MetricsAdapter, safe_metrics
from llmrtc.speech import SpeechPipeline, SpeechProviders, SpeechSettings, StreamingSpeaker
from llmrtc.turns import (
    END_OF_TURN,
    EndOfTurn,
    QueueItem,
    SpeechTurn,
    TurnEmitter,
    TurnFailed,
    TurnOutcome,
    collect_outcome,
)
from llmrtc.types import Message, STTResult, VisionAttachment

if TYPE_CHECKING:
    from llmrtc.playout import Playout

TurnT = TypeVar("TurnT", bound=SpeechTurn)


class VoiceOrchestratorBase(ABC, Generic[TurnT]):
    """The public turn API of a voice orchestrator, on top of :class:`~llmrtc.speech.SpeechPipeline`.

    Subclasses produce a turn's answer in :meth:`_produce`, record how a turn ended in :meth:`_settle`
    (and, optionally, :meth:`_on_complete`), amend a finished turn in :meth:`_interrupt_finished`, and
    own the history (:attr:`history`, :meth:`add_context_note`, :meth:`reset`, :meth:`_replace_history`).
    ``turn_type`` is the :class:`~llmrtc.turns.SpeechTurn` (sub)class a turn is recorded in.
    """

    _logger: ClassVar[logging.Logger] = logging.getLogger("llmrtc.voice_base")
    """Where the turn lifecycle logs (each subclass names its module's logger)."""
    _producer_name: ClassVar[str] = "turn"
    """Prefix of the producer task's name (``<prefix>-<turn id>``)."""

    def __init__(
        self,
        providers: SpeechProviders,
        settings: SpeechSettings,
        *,
        turn_type: type[TurnT],
        hooks: Any = None,
        metrics: MetricsAdapter | None = None,
        chunker: Chunker | Callable[[str], list[str]] | None = None,
        session_id: str | None = None,
    ) -> None:
        self.session_id = session_id or uuid.uuid4().hex[:12]
        self.hooks = hooks if isinstance(hooks, HookRunner) else HookRunner(hooks)
        self.metrics = safe_metrics(metrics)
        self.speech = SpeechPipeline(
            providers, settings, hooks=self.hooks, metrics=self.metrics, chunker=chunker
        )
        """The speech steps of the turns (STT, user message, streaming TTS): :mod:`llmrtc.speech`."""
        self._turn_type = turn_type
        self._active: dict[str, TurnT] = {}

    # ------------------------------------------------------------------------------ history

    @property
    @abstractmethod
    def history(self) -> list[Message]:
        """The recorded messages, oldest first; the system prompt is not included."""

    @abstractmethod
    def add_context_note(self, text: str) -> None:
        """Record a note the LLM should know (e.g. "Alice joined the room") as a system message."""

    @abstractmethod
    def reset(self) -> None:
        """Forget the conversation history."""

    def load_history(self, messages: Sequence[Message]) -> None:
        """Replace the history with ``messages`` (e.g. a stored session's), oldest first, no system prompt.

        The messages are copied and made safe for the next LLM request: at most the orchestrator's stored
        message limit is kept, and tool calls without results (or results without calls) are dropped, so a
        damaged stored history cannot break a vendor request. Interrupt records of earlier turns are
        forgotten. Raises :class:`~llmrtc.errors.ConfigError` while a turn runs or when an item is not a
        message.
        """
        self._refuse_while_running("load_history")
        self._replace_history(messages)

    @abstractmethod
    def _replace_history(self, messages: Sequence[Message]) -> None:
        """:meth:`load_history` once no turn runs."""

    def _refuse_while_running(self, what: str) -> None:
        if self._active:
            raise ConfigError(f"{what} cannot run while a turn is running")

    # ------------------------------------------------------------------------------ public turns

    def run_turn_stream(
        self,
        audio: bytes,
        attachments: Sequence[VisionAttachment] | None = None,
        *,
        speaker: str | None = None,
        turn_id: str | None = None,
        playout: Playout | None = None,
    ) -> AsyncGenerator[TurnEvent, None]:
        """One spoken turn: ``audio`` is the WAV of one utterance. Yields the turn's events.

        With ``playout`` the answer is played through it and the turn commits once it was heard whole.
        """
        return self._stream(audio, None, attachments, speaker, turn_id, None, playout)

    def run_text_turn_stream(
        self,
        text: str,
        attachments: Sequence[VisionAttachment] | None = None,
        *,
        speaker: str | None = None,
        turn_id: str | None = None,
        speak: bool | None = None,
        playout: Playout | None = None,
    ) -> AsyncGenerator[TurnEvent, None]:
        """One typed (or already transcribed) turn; spoken too when a TTS provider is set (``speak=False`` to
        only write), through ``playout`` when given."""
        return self._stream(None, text, attachments, speaker, turn_id, speak, playout)

    async def transcribe(
        self, audio: bytes, *, speaker: str | None = None, utterance_id: str | None = None
    ) -> STTResult:
        """Transcribe one utterance (WAV bytes) through the pipeline: STT hooks, metrics and error mapping.

        The worker calls this as soon as an utterance ends (so transcripts are attributed and shown while
        the agent talks), then runs the turn with the text. Raises the STT's :class:`~llmrtc.errors.LLMRTCError`.
        """
        uid = utterance_id or uuid.uuid4().hex[:12]
        probe = SpeechTurn(
            id=uid,
            speaker=speaker,
            ctx=HookContext(session_id=self.session_id, turn_id=uid, participant=speaker),
            watch=Stopwatch(),
            speak=False,
        )
        try:
            return await self.speech.transcribe(probe, audio)
        except TurnFailed as failed:
            raise failed.error from None

    async def run_turn(
        self,
        audio: bytes,
        attachments: Sequence[VisionAttachment] | None = None,
        *,
        speaker: str | None = None,
        turn_id: str | None = None,
        playout: Playout | None = None,
    ) -> TurnOutcome:
        """:meth:`run_turn_stream`, collected."""
        return await collect_outcome(
            self.run_turn_stream(audio, attachments, speaker=speaker, turn_id=turn_id, playout=playout)
        )

    async def run_text_turn(
        self,
        text: str,
        attachments: Sequence[VisionAttachment] | None = None,
        *,
        speaker: str | None = None,
        turn_id: str | None = None,
        speak: bool | None = None,
        playout: Playout | None = None,
    ) -> TurnOutcome:
        """:meth:`run_text_turn_stream`, collected."""
        return await collect_outcome(
            self.run_text_turn_stream(
                text, attachments, speaker=speaker, turn_id=turn_id, speak=speak, playout=playout
            )
        )

    def interrupt(self, turn_id: str, spoken_text: str | None = None) -> bool:
        """Barge-in: stop turn ``turn_id`` (if running) and record only ``spoken_text`` as its answer.

        Works on the running turn and on a recently finished one (its audio may still be playing out). With
        ``spoken_text=None`` a running turn records the segments the consumer fully took. Returns whether
        a turn was found.
        """
        turn = self._active.get(turn_id)
        if turn is None:
            return self._interrupt_finished(turn_id, spoken_text)
        turn.interrupted = True
        if spoken_text is not None:
            turn.spoken_override = spoken_text
        if turn.producer is not None and not turn.producer.done():
            turn.producer.cancel()
        return True

    # ------------------------------------------------------------------------------ subclass hooks

    @abstractmethod
    async def _produce(
        self, turn: TurnT, message: Message, emitter: TurnEmitter, speaker: StreamingSpeaker | None
    ) -> None:
        """Produce the answer to ``message`` through ``emitter`` (and ``speaker``, when the turn is spoken),
        ending with ``TurnCompleteEvent``. A failed step raises :class:`~llmrtc.turns.TurnFailed`."""

    @abstractmethod
    def _settle(self, turn: TurnT) -> None:
        """Record how ``turn`` ended; called once its producer stopped, before it leaves the running set."""

    @abstractmethod
    def _interrupt_finished(self, turn_id: str, spoken_text: str | None) -> bool:
        """:meth:`interrupt` for a turn that is not running: amend it if it is recent; whether it was."""

    def _on_complete(self, turn: TurnT) -> None:
        """``TurnCompleteEvent`` is being handed to the consumer."""
        turn.outcome = "completed"

    def _note_heard(self, turn: TurnT) -> None:
        """The running ``turn`` is being cut: pass what was heard (:meth:`SpeechTurn.spoken_text`) on."""

    # ------------------------------------------------------------------------------ the turn

    async def _stream(
        self,
        audio: bytes | None,
        text: str | None,
        attachments: Sequence[VisionAttachment] | None,
        speaker: str | None,
        turn_id: str | None,
        speak: bool | None,
        playout: Playout | None = None,
    ) -> AsyncGenerator[TurnEvent, None]:
        tid = turn_id or uuid.uuid4().hex[:12]
        if tid in self._active:
            raise ConfigError(f"turn {tid!r} is already running")
        turn = self._turn_type(
            id=tid,
            speaker=speaker,
            ctx=HookContext(session_id=self.session_id, turn_id=tid, participant=speaker),
            watch=Stopwatch(),
            speak=self.speech.providers.tts is not None and (speak is None or speak),
            playout=playout,
        )
        self._active[tid] = turn
        queue: asyncio.Queue[QueueItem] = asyncio.Queue()
        watchdog: asyncio.TimerHandle | None = None
        self.metrics.increment(MetricNames.TURNS)
        await self.hooks.call("on_turn_start", turn.ctx)
        try:
            if audio is not None:
                result = await self.speech.transcribe(turn, audio) if audio else STTResult(text="")
            else:
                result = STTResult(text=text or "")
            yield TranscriptEvent(tid, result, speaker)
            if not result.text.strip():
                self._logger.info("empty transcript, no LLM call (%s)", turn.ctx.ids())
                turn.outcome = "empty"
                yield TurnCompleteEvent(tid, "", {"empty_transcript": True})
                return
            message = turn.message = await self.speech.user_message(turn, result.text, attachments)
            if turn.interrupted:
                return
            turn.producer = asyncio.create_task(
                self._run_producer(turn, message, queue), name=f"{self._producer_name}-{tid}"
            )
            budget = self.speech.deadlines.turn_budget_s
            if budget:
                watchdog = asyncio.get_running_loop().call_later(budget, self._budget_expired, turn)
            while True:
                event = await queue.get()
                if isinstance(event, EndOfTurn) or turn.interrupted:
                    break
                if isinstance(event, TurnCompleteEvent):
                    self._on_complete(turn)
                elif isinstance(event, ErrorEvent) and event.component != "tts":
                    turn.outcome = "error"
                turn.consumed(event)
                yield event
                queue.task_done()  # the consumer came back for more: it took this event
            if turn.budget_expired:
                turn.outcome = "error"
                late = ProviderTimeoutError(
                    f"no {'audio' if turn.speak else 'answer'} within the turn budget of {budget:g} s"
                )
                raise await self.speech.fail(turn, late, turn.step)
        except TurnFailed as failed:
            turn.outcome = "error"
            yield ErrorEvent(tid, failed.error, failed.component)
        finally:
            if watchdog is not None:
                watchdog.cancel()
            producer = turn.producer
            if producer is not None and not producer.done():
                if turn.outcome == "running":
                    turn.interrupted = True
                    self._note_heard(turn)  # before the producer stops, so the engine records it
                producer.cancel()
            if producer is not None:
                await asyncio.gather(producer, return_exceptions=True)
            self._settle(turn)
            self._active.pop(tid, None)
            timing = turn.watch.timing()
            self.metrics.timing(MetricNames.TURN_DURATION, timing.duration_ms, {"outcome": turn.outcome})
            await self.hooks.call("on_turn_end", turn.ctx.child(metadata={"outcome": turn.outcome}), timing)

    def _budget_expired(self, turn: TurnT) -> None:
        """The turn budget ran out: stop a turn that has not started its output (nothing was heard)."""
        started = turn.first_audio if turn.speak else bool(turn.shown)
        producer = turn.producer
        if started or producer is None or producer.done() or turn.interrupted:
            return
        self._logger.warning("turn budget exhausted waiting on %s (%s)", turn.step, turn.ctx.ids())
        turn.budget_expired = True
        self._note_heard(turn)  # nothing was heard: the engine records the question and no answer
        producer.cancel()

    async def _run_producer(self, turn: TurnT, message: Message, queue: asyncio.Queue[QueueItem]) -> None:
        playout = turn.playout

        def feed(event: TurnEvent) -> None:
            if playout is not None and isinstance(event, TTSAudioEvent):
                chunk = event.chunk
                playout.feed(chunk.pcm, chunk.sample_rate, event.text, event.last_in_segment, chunk.words)

        emitter = TurnEmitter(queue, self.speech.hold_output(), on_deliver=feed if playout else None)
        speaker = self.speech.speaker(turn, emitter)
        try:
            await self._produce(turn, message, emitter, speaker)
        except TurnFailed as failed:
            turn.outcome = "error"
            emitter.emit(ErrorEvent(turn.id, failed.error, failed.component))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or an unexpected provider failure: fail the turn, never crash
            self._logger.exception("turn failed unexpectedly (%s)", turn.ctx.ids())
            turn.outcome = "error"
            unexpected = await self.speech.fail(turn, exc, "orchestrator")
            emitter.emit(ErrorEvent(turn.id, unexpected.error, unexpected.component))
        finally:
            if speaker is not None:
                await speaker.aclose()
            queue.put_nowait(END_OF_TURN)


__all__ = ["VoiceOrchestratorBase"]
