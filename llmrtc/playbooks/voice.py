"""VoicePlaybookOrchestrator: STT -> playbook turn -> sentence chunks -> streaming TTS.

It offers the same methods and yields the same :mod:`llmrtc.events` as
:class:`~llmrtc.orchestrator.ConversationOrchestrator` (``run_turn_stream``, ``run_text_turn_stream``,
``run_turn``, ``run_text_turn``, ``interrupt``, ``add_context_note``, ``history``), plus
:class:`~llmrtc.events.StageChangeEvent`, so the worker drives either one the same way.

Everything but the LLM half is the conversation orchestrator's own: the turn lifecycle and API of
:class:`~llmrtc.voice_base.VoiceOrchestratorBase`, the STT step, vision fallback, sentence chunker and
streaming-TTS speaker of :class:`~llmrtc.speech.SpeechPipeline`, and the turn plumbing of
:mod:`llmrtc.turns`; the LLM half is :class:`~llmrtc.playbooks.orchestrator.PlaybookOrchestrator`.
Phase 1 of a two-phase turn is silent; the answer is spoken sentence by sentence while it streams.

This is the one voice pipeline: the plain assistant (:class:`~llmrtc.orchestrator.ConversationOrchestrator`)
is a one-stage playbook run by this class. Each LLM round's text and audio are released only after that
round's ``on_llm_end`` (guardrail) passed, when a guardrail is set. The turn commits (recorded, counted,
transitions evaluated, :class:`~llmrtc.events.StageChangeEvent` emitted) only after its audio was heard to
the end: with a :class:`~llmrtc.playout.Playout`, once the playout played it all; without one, once the
consumer took the last audio event.

Barge-in: close the iterator or cancel the task iterating it, and/or call :meth:`interrupt` with what was
heard. Without ``spoken_text``, the spoken part is what the playout played (or the sentences the consumer
took). The history then keeps the completed tool calls and only the heard part of the answer, marked
``interrupted``, and the stage does not change (see :mod:`llmrtc.playbooks.orchestrator` for the exact
rules and per-tool interruption).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import Any

from llmrtc.chunking import Chunker
from llmrtc.conversation import ConversationProviders, OrchestratorConfig
from llmrtc.deadlines import Deadlines
from llmrtc.events import (
    ErrorEvent,
    LLMChunkEvent,
    LLMFinalEvent,
    ToolCallEvent,
    ToolResultEvent,
    TTSCompleteEvent,
    TurnCompleteEvent,
)
from llmrtc.metrics import MetricNames, MetricsAdapter
from llmrtc.playbooks.engine import PlaybookEngine
from llmrtc.playbooks.hooks import PlaybookHooks
from llmrtc.playbooks.orchestrator import PlaybookOrchestrator
from llmrtc.playbooks.types import Playbook, Stage
from llmrtc.speech import StreamingSpeaker
from llmrtc.tools import ToolExecutor, ToolRegistry
from llmrtc.turns import SpeechTurn, TurnEmitter
from llmrtc.types import Message
from llmrtc.voice_base import VoiceOrchestratorBase

log = logging.getLogger("llmrtc.playbooks.voice")


class VoicePlaybookOrchestrator(VoiceOrchestratorBase[SpeechTurn]):
    """A voice conversation driven by a playbook.

    ``providers`` gives the LLM, STT, TTS (and optional vision); ``config`` the speech settings of the
    conversation orchestrator (STT/TTS configs, ``streaming_tts``, guardrail hold, ``history_limit``,
    ``max_stored_messages``, ``max_tool_rounds``, ``speaker_labels``; the playbook decides prompts, tools
    and generation config). The other options are those of :class:`PlaybookOrchestrator`. The turn API is
    :class:`~llmrtc.voice_base.VoiceOrchestratorBase`'s.
    """

    _logger = log
    _producer_name = "pb-turn"

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
        tool_timeout_s: float = 30.0,
        executor: ToolExecutor | None = None,
    ) -> None:
        self._config = config or OrchestratorConfig()
        super().__init__(
            providers,
            self._config,
            turn_type=SpeechTurn,
            hooks=hooks,
            metrics=metrics,
            chunker=chunker,
            session_id=session_id,
        )
        self.playbook_orchestrator = PlaybookOrchestrator(
            providers.llm,
            playbook,
            registry,
            max_tool_calls_per_turn=max_tool_calls_per_turn,
            max_tool_rounds=self._config.max_tool_rounds,
            phase1_timeout_s=phase1_timeout_s,
            history_limit=self._config.history_limit,
            max_stored_messages=self._config.max_stored_messages,
            speaker_labels=self._config.speaker_labels,
            tool_timeout_s=tool_timeout_s,
            executor=executor,
            hooks=self.hooks,
            playbook_hooks=playbook_hooks,
            metrics=metrics,
            session_id=self.session_id,
            deadlines=Deadlines.from_settings(self._config),
        )
        self.providers = providers

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

    def discard(self, turn_id: str) -> bool:
        """Preemptive generation: the running turn ``turn_id`` is about to be cancelled before any of its
        audio was heard (the user went on speaking); it records nothing, not even the user's message, and
        counts as no interruption. Returns whether the turn is running."""
        turn = self._active.get(turn_id)
        if turn is not None:
            turn.outcome = "discarded"
        return self.playbook_orchestrator.discard(turn_id) or turn is not None

    def gate_tools(self, turn_id: str, wait: Callable[[], Awaitable[None]] | None) -> None:
        """Preemptive generation: :meth:`PlaybookOrchestrator.gate_tools` (tools with side effects of turn
        ``turn_id`` wait for ``wait()``, the confirmed turn)."""
        self.playbook_orchestrator.gate_tools(turn_id, wait)

    def reset(self) -> None:
        """Forget the conversation history (the playbook state is kept; see ``engine.reset``)."""
        self.playbook_orchestrator.clear_history()

    def _replace_history(self, messages: Sequence[Message]) -> None:
        """At most ``max_stored_messages`` kept, as :meth:`PlaybookOrchestrator.load_history`."""
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

    # ------------------------------------------------------------------------------------------ the turn

    def _interrupt_finished(self, turn_id: str, spoken_text: str | None) -> bool:
        return self.playbook_orchestrator.interrupt(turn_id, spoken_text)

    def _note_heard(self, turn: SpeechTurn) -> None:
        """Tell the engine what was heard of the turn being cut (it records exactly that)."""
        self.playbook_orchestrator.interrupt(turn.id, turn.spoken_text())

    def _settle(self, turn: SpeechTurn) -> None:
        """After barge-in the answer keeps only what was heard (or shown, when nothing is spoken); after a
        failure, what was heard of the answer before it (the engine recorded the question without it)."""
        if turn.outcome == "error" and turn.speak:
            heard = turn.spoken_text()
            if heard:
                self.playbook_orchestrator.interrupt(turn.id, heard)
            return
        if turn.outcome == "running" or (turn.outcome == "completed" and turn.interrupted):
            turn.outcome = "interrupted"
            self.metrics.increment(MetricNames.INTERRUPTIONS)
            spoken = turn.spoken_text()
            self.playbook_orchestrator.interrupt(turn.id, spoken)
            log.info("turn interrupted (%s): recorded %d heard chars", turn.ctx.ids(), len(spoken))

    async def _produce(
        self, turn: SpeechTurn, message: Message, emitter: TurnEmitter, speaker: StreamingSpeaker | None
    ) -> None:
        """The engine's turn for ``message``, spoken sentence by sentence as it streams.

        Each LLM round is an emitter round: held until its guardrail passed (the engine runs
        ``on_llm_end`` before it yields the round's tool calls or the final answer), then released.
        """
        round_no = 0
        in_tools = False
        chunker = self.speech.stream_chunker(speaker)

        def close_round() -> None:
            if speaker is not None:
                pieces = chunker.flush() if chunker is not None else []
                for piece in pieces:
                    speaker.say(piece, round_no)
            emitter.release(round_no)

        async def heard_to_the_end() -> None:
            if speaker is not None:
                await speaker.finish()
            playout = turn.playout
            if playout is not None and speaker is not None and speaker.started:
                playout.finish()
                if not await playout.wait_done():
                    # the audio was cut without the turn being cancelled (output failure): a cut turn
                    turn.interrupted = True
                    self._note_heard(turn)
                    raise asyncio.CancelledError
            if speaker is not None and speaker.failed:
                # the TTS failed (its error event went out): only what was played is the answer, and the
                # turn ends in that error, without a tts_complete
                turn.outcome = "error"
                turn.interrupted = True
                if playout is not None:
                    playout.truncate_open()  # a sentence cut by the failure counts by the share played
                self._note_heard(turn)
                raise asyncio.CancelledError
            if playout is None and speaker is not None and speaker.started:
                # no playout: the answer counts as heard once the consumer took its last audio event
                await emitter.queue.join()
            if speaker is not None and speaker.started:
                emitter.emit(TTSCompleteEvent(turn.id))

        if turn.playout is not None:
            turn.playout.start()
        events = self.playbook_orchestrator.stream_message(
            message, turn_id=turn.id, before_commit=heard_to_the_end
        )
        async with aclosing(events):
            async for event in events:
                if isinstance(event, LLMChunkEvent):
                    in_tools = False
                    emitter.emit(event, round_no)
                    if chunker is not None and speaker is not None:
                        for piece in chunker.push(event.content):
                            speaker.say(piece, round_no)
                elif isinstance(event, ToolCallEvent):
                    if turn.step != "tts":
                        turn.step = "tool"
                    if not in_tools:  # the round before these calls passed its guardrail
                        in_tools = True
                        close_round()
                        round_no += 1
                        chunker = self.speech.stream_chunker(speaker)
                    emitter.emit(event)
                elif isinstance(event, LLMFinalEvent):
                    turn.final_text = event.result.full_text
                    if speaker is not None and chunker is None:
                        speaker.say(event.result.full_text, round_no)  # streaming_tts off: all at once
                    close_round()
                    emitter.emit(event)
                elif isinstance(event, ErrorEvent):
                    emitter.drop(round_no)
                    if turn.playout is not None:
                        turn.playout.truncate_open()
                        turn.playout.stop()  # the turn failed: what was played so far is what was heard
                    emitter.emit(event)
                elif isinstance(event, TurnCompleteEvent):
                    emitter.emit(_with_tts_usage(event, turn.tts_characters))
                else:
                    if isinstance(event, ToolResultEvent) and turn.step == "tool":
                        turn.step = "llm"
                    emitter.emit(event)


def _with_tts_usage(event: TurnCompleteEvent, characters: int) -> TurnCompleteEvent:
    """The engine's turn-complete event with the characters synthesized added to its usage."""
    metadata = dict(event.metadata)
    usage = metadata.get("usage")
    merged: dict[str, object] = dict(usage) if isinstance(usage, dict) else {}
    merged["tts_characters"] = characters
    metadata["usage"] = merged
    return TurnCompleteEvent(event.turn_id, event.text, metadata)


__all__ = ["VoicePlaybookOrchestrator"]
