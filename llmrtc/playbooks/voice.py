"""VoicePlaybookOrchestrator: STT -> playbook turn -> sentence chunks -> streaming TTS.

It offers the same methods and yields the same :mod:`llmrtc.events` as
:class:`~llmrtc.orchestrator.ConversationOrchestrator` (``run_turn_stream``, ``run_text_turn_stream``,
``run_turn``, ``run_text_turn``, ``interrupt``, ``add_context_note``, ``history``), plus
:class:`~llmrtc.events.StageChangeEvent`, so the worker drives either one the same way.

The speech half is the conversation orchestrator's own: the STT step, vision fallback, sentence chunker and
streaming-TTS speaker of :class:`~llmrtc.speech.SpeechPipeline`, with the turn plumbing of
:mod:`llmrtc.turns`; only the LLM half is :class:`~llmrtc.playbooks.orchestrator.PlaybookOrchestrator`.
Phase 1 of a two-phase turn is silent; the answer is spoken sentence by sentence while it streams.

Barge-in: close the iterator or cancel the task iterating it, and/or call :meth:`interrupt` with what was
heard. The history then keeps the completed tool calls and only the spoken part of the answer (see
:mod:`llmrtc.playbooks.orchestrator` for the exact rules and per-tool interruption).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import aclosing
from typing import Any

from llmrtc.chunking import Chunker
from llmrtc.errors import ConfigError
from llmrtc.events import (
    ErrorEvent,
    LLMChunkEvent,
    LLMFinalEvent,
    TranscriptEvent,
    TTSCompleteEvent,
    TurnCompleteEvent,
    TurnEvent,
)
from llmrtc.hooks import HookContext, HookRunner, Stopwatch
from llmrtc.metrics import MetricNames, MetricsAdapter, safe_metrics
from llmrtc.orchestrator import ConversationProviders, OrchestratorConfig
from llmrtc.playbooks.engine import PlaybookEngine
from llmrtc.playbooks.hooks import PlaybookHooks
from llmrtc.playbooks.orchestrator import PlaybookOrchestrator
from llmrtc.playbooks.types import Playbook, Stage
from llmrtc.providers.resilience import RetryPolicy
from llmrtc.speech import SpeechPipeline
from llmrtc.tools import ToolExecutor, ToolRegistry
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

log = logging.getLogger("llmrtc.playbooks.voice")

_ANSWER = 0
"""The emitter round of the spoken answer (held until the guardrail passed, when one is set)."""


class VoicePlaybookOrchestrator:
    """A voice conversation driven by a playbook.

    ``providers`` gives the LLM, STT, TTS (and optional vision); ``config`` the speech settings of the
    conversation orchestrator (STT/TTS configs, ``streaming_tts``, guardrail hold; its LLM settings are
    unused: the playbook decides prompts, tools and generation config). The playbook options are those of
    :class:`PlaybookOrchestrator`.
    """

    def __init__(
        self,
        providers: ConversationProviders,
        playbook: Playbook | PlaybookEngine,
        registry: ToolRegistry | None = None,
        *,
        config: OrchestratorConfig | None = None,
        chunker: Chunker | Callable[[str], list[str]] | None = None,
        hooks: Any = None,
        metrics: MetricsAdapter | None = None,
        playbook_hooks: Sequence[PlaybookHooks] = (),
        session_id: str | None = None,
        max_tool_calls_per_turn: int = 10,
        phase1_timeout_s: float = 60.0,
        llm_retries: int = 3,
        retry_policy: RetryPolicy | None = None,
        history_limit: int = 50,
        tool_timeout_s: float = 30.0,
        executor: ToolExecutor | None = None,
    ) -> None:
        self.session_id = session_id or uuid.uuid4().hex[:12]
        self.hooks = hooks if isinstance(hooks, HookRunner) else HookRunner(hooks)
        self.metrics = safe_metrics(metrics)
        self.playbook_orchestrator = PlaybookOrchestrator(
            providers.llm,
            playbook,
            registry,
            max_tool_calls_per_turn=max_tool_calls_per_turn,
            phase1_timeout_s=phase1_timeout_s,
            llm_retries=llm_retries,
            retry_policy=retry_policy,
            history_limit=history_limit,
            tool_timeout_s=tool_timeout_s,
            executor=executor,
            hooks=self.hooks,
            playbook_hooks=playbook_hooks,
            metrics=metrics,
            session_id=self.session_id,
        )
        self._config = config or OrchestratorConfig()
        self.speech = SpeechPipeline(
            providers, self._config, hooks=self.hooks, metrics=self.metrics, chunker=chunker
        )
        """The speech steps of the turns (STT, user message, streaming TTS): :mod:`llmrtc.speech`."""
        self.providers = providers
        self._active: dict[str, SpeechTurn] = {}

    # ------------------------------------------------------------------------------------------ state

    @property
    def config(self) -> OrchestratorConfig:
        return self._config

    @property
    def engine(self) -> PlaybookEngine:
        return self.playbook_orchestrator.engine

    @property
    def current_stage(self) -> Stage:
        return self.engine.current_stage

    @property
    def history(self) -> list[Message]:
        """The recorded messages, oldest first (the system prompt is not included)."""
        return self.playbook_orchestrator.history

    def add_context_note(self, text: str) -> None:
        """Record a note the LLM should know (e.g. "Alice joined the room") as a system message."""
        self.playbook_orchestrator.add_context_note(text)

    def reset(self) -> None:
        """Forget the conversation history (the playbook state is kept; see ``engine.reset``)."""
        self.playbook_orchestrator.clear_history()

    def load_history(self, messages: Sequence[Message]) -> None:
        """Replace the history with ``messages`` (e.g. a stored session's): copied, at most ``history_limit``
        kept, broken tool exchanges dropped, as :meth:`PlaybookOrchestrator.load_history`. Raises
        :class:`~llmrtc.errors.ConfigError` while a turn runs or when an item is not a message."""
        self._refuse_while_running("load_history")
        self.playbook_orchestrator.load_history(messages)

    def snapshot(self) -> dict[str, Any]:
        """The playbook engine's state as JSON-safe data: :meth:`PlaybookEngine.snapshot`."""
        return self.playbook_orchestrator.snapshot()

    def restore(self, data: dict[str, Any]) -> None:
        """Continue the playbook from a :meth:`snapshot` without re-entering its stage
        (:class:`~llmrtc.errors.PlaybookError` for a bad snapshot, :class:`~llmrtc.errors.ConfigError`
        while a turn runs)."""
        self._refuse_while_running("restore")
        self.playbook_orchestrator.restore(data)

    def _refuse_while_running(self, what: str) -> None:
        if self._active:
            raise ConfigError(f"{what} cannot run while a turn is running")

    # ------------------------------------------------------------------------------------------ turns

    def run_turn_stream(
        self,
        audio: bytes,
        attachments: Sequence[VisionAttachment] | None = None,
        *,
        speaker: str | None = None,
        turn_id: str | None = None,
    ) -> AsyncIterator[TurnEvent]:
        """One spoken turn: ``audio`` is the WAV of one utterance. Yields the turn's events."""
        return self._stream(audio, None, attachments, speaker, turn_id, None)

    def run_text_turn_stream(
        self,
        text: str,
        attachments: Sequence[VisionAttachment] | None = None,
        *,
        speaker: str | None = None,
        turn_id: str | None = None,
        speak: bool | None = None,
    ) -> AsyncIterator[TurnEvent]:
        """One typed turn; spoken too when a TTS provider is set (``speak=False`` to only write)."""
        return self._stream(None, text, attachments, speaker, turn_id, speak)

    async def run_turn(
        self,
        audio: bytes,
        attachments: Sequence[VisionAttachment] | None = None,
        *,
        speaker: str | None = None,
        turn_id: str | None = None,
    ) -> TurnOutcome:
        """:meth:`run_turn_stream`, collected."""
        return await collect_outcome(
            self.run_turn_stream(audio, attachments, speaker=speaker, turn_id=turn_id)
        )

    async def run_text_turn(
        self,
        text: str,
        attachments: Sequence[VisionAttachment] | None = None,
        *,
        speaker: str | None = None,
        turn_id: str | None = None,
        speak: bool | None = None,
    ) -> TurnOutcome:
        """:meth:`run_text_turn_stream`, collected."""
        return await collect_outcome(
            self.run_text_turn_stream(text, attachments, speaker=speaker, turn_id=turn_id, speak=speak)
        )

    def interrupt(self, turn_id: str, spoken_text: str | None = None) -> bool:
        """Barge-in: stop turn ``turn_id`` (if running) and record only ``spoken_text`` as its answer.

        Works on the running turn and on a recently finished one (its audio may still be playing out). With
        ``spoken_text=None`` a running turn records the sentences the consumer fully took. Returns whether
        a turn was found.
        """
        turn = self._active.get(turn_id)
        if turn is not None:
            turn.interrupted = True
            if spoken_text is not None:
                turn.spoken_override = spoken_text
            if turn.producer is not None and not turn.producer.done():
                turn.producer.cancel()
            return True
        return self.playbook_orchestrator.interrupt(turn_id, spoken_text)

    # ------------------------------------------------------------------------------------------ the turn

    async def _stream(
        self,
        audio: bytes | None,
        text: str | None,
        attachments: Sequence[VisionAttachment] | None,
        speaker: str | None,
        turn_id: str | None,
        speak: bool | None,
    ) -> AsyncGenerator[TurnEvent, None]:
        tid = turn_id or uuid.uuid4().hex[:12]
        if tid in self._active:
            raise ConfigError(f"turn {tid!r} is already running")
        turn = SpeechTurn(
            id=tid,
            speaker=speaker,
            ctx=HookContext(session_id=self.session_id, turn_id=tid, participant=speaker),
            watch=Stopwatch(),
            speak=self.providers.tts is not None and (speak is None or speak),
        )
        self._active[tid] = turn
        queue: asyncio.Queue[QueueItem] = asyncio.Queue()
        self.metrics.increment(MetricNames.TURNS)
        await self.hooks.call("on_turn_start", turn.ctx)
        try:
            if audio is not None:
                result = await self.speech.transcribe(turn, audio) if audio else STTResult(text="")
            else:
                result = STTResult(text=text or "")
            yield TranscriptEvent(tid, result, speaker)
            if not result.text.strip():
                log.info("empty transcript, no LLM call (%s)", turn.ctx.ids())
                turn.outcome = "empty"
                yield TurnCompleteEvent(tid, "", {"empty_transcript": True})
                return
            message = await self.speech.user_message(turn, result.text, attachments)
            if turn.interrupted:
                return
            turn.producer = asyncio.create_task(self._produce(turn, message, queue), name=f"pb-turn-{tid}")
            while True:
                event = await queue.get()
                if isinstance(event, EndOfTurn) or turn.interrupted:
                    break
                if isinstance(event, TurnCompleteEvent):
                    turn.outcome = "completed"
                elif isinstance(event, ErrorEvent) and event.component != "tts":
                    turn.outcome = "error"
                yield event
                turn.consumed(event)
        except TurnFailed as failed:
            turn.outcome = "error"
            yield ErrorEvent(tid, failed.error, failed.component)
        finally:
            producer = turn.producer
            if producer is not None and not producer.done():
                producer.cancel()
            if producer is not None:
                await asyncio.gather(producer, return_exceptions=True)
            if turn.outcome == "running" or (turn.outcome == "completed" and turn.interrupted):
                self._record_interruption(turn)
            self._active.pop(tid, None)
            timing = turn.watch.timing()
            self.metrics.timing(MetricNames.TURN_DURATION, timing.duration_ms, {"outcome": turn.outcome})
            await self.hooks.call("on_turn_end", turn.ctx.child(metadata={"outcome": turn.outcome}), timing)

    def _record_interruption(self, turn: SpeechTurn) -> None:
        """After barge-in the answer keeps only what was spoken (or shown, when nothing is spoken)."""
        turn.outcome = "interrupted"
        self.metrics.increment(MetricNames.INTERRUPTIONS)
        spoken = turn.spoken_text()
        self.playbook_orchestrator.interrupt(turn.id, spoken)
        log.info("playbook turn interrupted (%s): recorded %d spoken chars", turn.ctx.ids(), len(spoken))

    async def _produce(self, turn: SpeechTurn, message: Message, queue: asyncio.Queue[QueueItem]) -> None:
        emitter = TurnEmitter(queue, self.speech.hold_output())
        speaker = self.speech.speaker(turn, emitter)
        chunker = self.speech.stream_chunker(speaker)
        try:
            events = self.playbook_orchestrator.stream_message(message, turn_id=turn.id)
            async with aclosing(events):
                async for event in events:
                    if isinstance(event, LLMChunkEvent):
                        emitter.emit(event, _ANSWER)
                        if chunker is not None and speaker is not None:
                            for piece in chunker.push(event.content):
                                speaker.say(piece, _ANSWER)
                    elif isinstance(event, LLMFinalEvent):
                        turn.final_text = event.result.full_text
                        if speaker is not None:
                            pieces = chunker.flush() if chunker is not None else [event.result.full_text]
                            for piece in pieces:
                                speaker.say(piece, _ANSWER)
                        emitter.release(_ANSWER)
                        emitter.emit(event)
                    elif isinstance(event, TurnCompleteEvent):
                        if speaker is not None:
                            await speaker.finish()
                            if speaker.started:
                                emitter.emit(TTSCompleteEvent(turn.id))
                        emitter.emit(event)
                    elif isinstance(event, ErrorEvent):
                        emitter.drop(_ANSWER)
                        emitter.emit(event)
                    else:
                        emitter.emit(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: fail the turn, never crash the worker
            log.exception("playbook voice turn failed unexpectedly (%s)", turn.ctx.ids())
            failed = await self.speech.fail(turn, exc, "orchestrator")
            emitter.emit(ErrorEvent(turn.id, failed.error, failed.component))
        finally:
            if speaker is not None:
                await speaker.aclose()
            queue.put_nowait(END_OF_TURN)


__all__ = ["VoicePlaybookOrchestrator"]
