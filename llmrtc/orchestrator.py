"""ConversationOrchestrator: a plain voice assistant, the one-stage playbook of the one turn engine.

A turn is an async iterator of :mod:`llmrtc.events`: STT -> LLM (+ tools) -> sentence chunks -> TTS. The
LLM's text is cut into sentences as it streams and each one is synthesized while the LLM goes on, so the
first audio comes long before the answer is complete.

There is one turn engine in llmrtc (:class:`~llmrtc.playbooks.orchestrator.PlaybookOrchestrator`, with its
voice half :class:`~llmrtc.playbooks.voice.VoicePlaybookOrchestrator`). A plain assistant is a playbook of
one stage whose prompt is :attr:`OrchestratorConfig.system_prompt`, whose tools are every tool of the
registry (read again at each turn, so tools added later are offered) and whose turns run tools between
streamed rounds (single-phase). History, the tool loop, guardrails, hooks, metrics and recording are
therefore the same code in both modes:

- ``history_limit``: how many past messages the LLM sees (tool exchanges are never split);
  ``max_stored_messages``: how many are kept in memory.
- A completed turn records the user message, every tool round (assistant ``tool_calls`` message, then one
  ``tool`` message per call) and the final answer, once the answer was heard to the end.
- A failed turn (LLM error, guardrail) records the user message and the tool calls that completed: everyone
  saw the question, so the LLM keeps it.
- An interrupted turn (barge-in) records the user message, the completed tool calls and only what was
  heard, as one assistant message with ``interrupted=True``.
- Multi-person rooms: a user message carries ``name=speaker`` and the words as said; providers render the
  name where the vendor API has no name field. ``speaker_labels="prefix"`` sends ``"[Alice] ..."`` instead.
- No retries here: providers retry (``PROVIDER_MAX_RETRIES``), once.

Barge-in: close the iterator (``aclose()``, or cancel the task iterating it) and/or call
:meth:`ConversationOrchestrator.interrupt` with what was heard; with a :class:`~llmrtc.playout.Playout`
the playout says what was heard.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from llmrtc.chunking import Chunker
from llmrtc.conversation import DEFAULT_SYSTEM_PROMPT, ConversationProviders, OrchestratorConfig
from llmrtc.errors import ConfigError
from llmrtc.metrics import MetricsAdapter
from llmrtc.playbooks.types import Playbook, Stage
from llmrtc.playbooks.voice import VoicePlaybookOrchestrator
from llmrtc.providers.base import LLMProvider
from llmrtc.tools import ToolExecutor, ToolRegistry
from llmrtc.turns import SpeechTurn, TurnOutcome
from llmrtc.types import GenerationConfig

log = logging.getLogger("llmrtc.orchestrator")

ASSISTANT_STAGE = "assistant"
"""The id of the plain assistant's one stage (and of its playbook)."""


def assistant_playbook(config: OrchestratorConfig, tool_names: list[str]) -> Playbook:
    """The one-stage playbook of a plain assistant with these settings and tools."""
    llm = GenerationConfig(
        temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens, model=config.model
    )
    stage = Stage(
        id=ASSISTANT_STAGE,
        name="Assistant",
        system_prompt=config.system_prompt,
        tools=tool_names,
        two_phase=False,
        llm_config=llm,
    )
    return Playbook(id=ASSISTANT_STAGE, stages=[stage], initial_stage=ASSISTANT_STAGE)


class ConversationOrchestrator(VoicePlaybookOrchestrator):
    """Runs the turns of one conversation (one room) and keeps its history: a plain assistant.

    One turn at a time. The turn API (``run_turn_stream``, ``run_text_turn_stream``, ``run_turn``,
    ``run_text_turn``, ``transcribe``, ``interrupt``, ``load_history``) is
    :class:`~llmrtc.voice_base.VoiceOrchestratorBase`'s.
    """

    def __init__(
        self,
        providers: ConversationProviders,
        config: OrchestratorConfig | None = None,
        *,
        tools: ToolRegistry | None = None,
        tool_executor: ToolExecutor | None = None,
        hooks: Any = None,
        metrics: MetricsAdapter | None = None,
        chunker: Chunker | Callable[[str], list[str]] | None = None,
        session_id: str | None = None,
    ) -> None:
        if not isinstance(providers.llm, LLMProvider):
            raise ConfigError("ConversationProviders.llm must be an LLMProvider")
        config = config or OrchestratorConfig()
        registry = (
            tools if tools is not None else (tool_executor.registry if tool_executor else ToolRegistry())
        )
        self.tools = registry
        super().__init__(
            providers,
            assistant_playbook(config, registry.names()),
            registry,
            config=config,
            chunker=chunker,
            hooks=hooks,
            metrics=metrics,
            session_id=session_id,
            max_tool_calls_per_turn=max(10, config.max_tool_rounds * 4),
            executor=tool_executor,
        )
        self.tool_executor = self.playbook_orchestrator.executor

    def _refresh_tools(self) -> None:
        """Offer every tool the registry holds now (tools may be added after construction)."""
        self.engine.current_stage.tools = self.tools.names()

    async def _produce(self, turn: SpeechTurn, message: Any, emitter: Any, speaker: Any) -> None:
        self._refresh_tools()
        await super()._produce(turn, message, emitter, speaker)


__all__ = [
    "ASSISTANT_STAGE",
    "DEFAULT_SYSTEM_PROMPT",
    "ConversationOrchestrator",
    "ConversationProviders",
    "OrchestratorConfig",
    "TurnOutcome",
    "assistant_playbook",
]
