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

Barge-in: close the iterator or cancel the task iterating it, and/or call :meth:`interrupt` with what was
heard. Without ``spoken_text``, the spoken part is the sentences the consumer fully took (it asked for the
event after their last audio). The history then keeps the completed tool calls and only the spoken part of
the answer (see :mod:`llmrtc.playbooks.orchestrator` for the exact rules and per-tool interruption).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import aclosing
from typing import Any

from llmrtc.chunking import Chunker
from llmrtc.events import ErrorEvent, LLMChunkEvent, LLMFinalEvent, TTSCompleteEvent, TurnCompleteEvent
from llmrtc.metrics import MetricNames, MetricsAdapter
from llmrtc.orchestrator import ConversationProviders, OrchestratorConfig
from llmrtc.playbooks.engine import PlaybookEngine
from llmrtc.playbooks.hooks import PlaybookHooks
from llmrtc.playbooks.orchestrator import PlaybookOrchestrator
from llmrtc.playbooks.types import Playbook, Stage
from llmrtc.providers.resilience import RetryPolicy
from llmrtc.speech import StreamingSpeaker
from llmrtc.tools import ToolExecutor, ToolRegistry
from llmrtc.turns import SpeechTurn, TurnEmitter
from llmrtc.types import Message
from llmrtc.voice_base import VoiceOrchestratorBase

log = logging.getLogger("llmrtc.playbooks.voice")

_ANSWER = 0
"""The emitter round of the spoken answer (held until the guardrail passed, when one is set)."""


class VoicePlaybookOrchestrator(VoiceOrchestratorBase[SpeechTurn]):
    """A voice conversation driven by a playbook.

    ``providers`` gives the LLM, STT, TTS (and optional vision); ``config`` the speech settings of the
    conversation orchestrator (STT/TTS configs, ``streaming_tts``, guardrail hold; its LLM settings are
    unused: the playbook decides prompts, tools and generation config). The playbook options are those of
    :class:`PlaybookOrchestrator`. The turn API is :class:`~llmrtc.voice_base.VoiceOrchestratorBase`'s.
    """

    _logger = log
    _producer_name = "pb-turn"
    _taken_on_delivery = False

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

    def reset(self) -> None:
        """Forget the conversation history (the playbook state is kept; see ``engine.reset``)."""
        self.playbook_orchestrator.clear_history()

    def _replace_history(self, messages: Sequence[Message]) -> None:
        """At most ``history_limit`` kept, as :meth:`PlaybookOrchestrator.load_history`."""
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

    def _settle(self, turn: SpeechTurn) -> None:
        """After barge-in the answer keeps only what was spoken (or shown, when nothing is spoken)."""
        if turn.outcome == "running" or (turn.outcome == "completed" and turn.interrupted):
            turn.outcome = "interrupted"
            self.metrics.increment(MetricNames.INTERRUPTIONS)
            spoken = turn.spoken_text()
            self.playbook_orchestrator.interrupt(turn.id, spoken)
            log.info("playbook turn interrupted (%s): recorded %d spoken chars", turn.ctx.ids(), len(spoken))

    async def _produce(
        self, turn: SpeechTurn, message: Message, emitter: TurnEmitter, speaker: StreamingSpeaker | None
    ) -> None:
        """The playbook turn for ``message``; its answer is spoken sentence by sentence as it streams."""
        chunker = self.speech.stream_chunker(speaker)
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


__all__ = ["VoicePlaybookOrchestrator"]
