"""Build the room's conversation from settings: a plain assistant or a playbook, behind one interface.

:class:`OrchestratorConversation` adapts a ``ConversationOrchestrator`` or a ``VoicePlaybookOrchestrator``
(same methods, same turn events) to :class:`worker.session.Conversation`, and adds ``say`` (the greeting:
fixed text spoken through the TTS provider and recorded as the assistant's).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from llmrtc.errors import ConfigError, PlaybookError
from llmrtc.events import (
    LLMFinalEvent,
    TTSAudioEvent,
    TTSCompleteEvent,
    TTSStartEvent,
    TurnCompleteEvent,
    TurnEvent,
)
from llmrtc.providers.base import LLMProvider, STTProvider, TTSProvider
from llmrtc.types import LLMResult, TTSChunk
from worker.config import WorkerSettings

log = logging.getLogger("llmrtc.worker.conversation")


@dataclass
class Providers:
    llm: LLMProvider
    stt: STTProvider
    tts: TTSProvider

    async def aclose(self) -> None:
        for provider in (self.llm, self.stt, self.tts):
            try:
                await provider.aclose()
            except Exception as exc:
                log.warning("closing %s failed: %s", provider.name, exc)


def providers_from_env() -> Providers:
    """The providers the environment selects (``LLM_PROVIDER``, ``OPENAI_API_KEY``, ...).

    Raises :class:`ConfigError` saying what to set when none is configured.
    """
    from llmrtc.providers.registry import create_llm_from_env, create_stt_from_env, create_tts_from_env

    return Providers(llm=create_llm_from_env(), stt=create_stt_from_env(), tts=create_tts_from_env())


async def _maybe(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


class OrchestratorConversation:
    """One room's conversation on an llmrtc orchestrator."""

    def __init__(self, orchestrator: Any, tts: TTSProvider) -> None:
        self.orchestrator = orchestrator
        self._tts = tts

    def run_text_turn(self, text: str, *, speaker: str | None, turn_id: str) -> AsyncIterator[TurnEvent]:
        stream: AsyncIterator[TurnEvent] = self.orchestrator.run_text_turn_stream(
            text, speaker=speaker, turn_id=turn_id
        )
        return stream

    async def interrupt(self, turn_id: str, spoken_text: str) -> None:
        await _maybe(self.orchestrator.interrupt(turn_id, spoken_text))

    async def add_context_note(self, note: str) -> None:
        await _maybe(self.orchestrator.add_context_note(note))

    async def say(self, text: str, *, turn_id: str) -> AsyncIterator[TurnEvent]:
        yield TTSStartEvent(turn_id)
        async for chunk in self._tts.speak_stream(text):
            yield TTSAudioEvent(turn_id, chunk, text, 0)
        yield TTSAudioEvent(turn_id, TTSChunk(b"", self._tts.sample_rate), text, 0, last_in_segment=True)
        await self.add_context_note(f'You (the assistant) greeted the room, saying: "{text}"')
        yield LLMFinalEvent(turn_id, LLMResult(full_text=text))
        yield TTSCompleteEvent(turn_id)
        yield TurnCompleteEvent(turn_id, text=text)


def build_conversation(
    settings: WorkerSettings, providers: Providers, session_id: str | None = None
) -> OrchestratorConversation:
    """A plain assistant (``SYSTEM_PROMPT``) or, with ``PLAYBOOK`` set, the playbook's voice orchestrator.

    ``TOOLS`` is loaded per call (each room gets its own registry). Raises :class:`ConfigError` for an
    invalid playbook or tools spec.
    """
    from llmrtc.orchestrator import ConversationOrchestrator, ConversationProviders, OrchestratorConfig
    from llmrtc.playbooks.loader import load_tools

    conv_providers = ConversationProviders(llm=providers.llm, stt=providers.stt, tts=providers.tts)
    tools = load_tools(settings.tools or None)
    config = OrchestratorConfig(system_prompt=settings.system_prompt, history_limit=settings.history_limit)
    orchestrator: Any
    if settings.playbook is not None:
        from llmrtc.playbooks.loader import load_playbook
        from llmrtc.playbooks.voice import VoicePlaybookOrchestrator

        try:
            playbook = load_playbook(settings.playbook, registry=tools)
        except PlaybookError as exc:
            raise ConfigError(f"PLAYBOOK={settings.playbook}: {exc.message}") from exc
        orchestrator = VoicePlaybookOrchestrator(
            conv_providers, playbook, tools, config=config, session_id=session_id
        )
    else:
        orchestrator = ConversationOrchestrator(conv_providers, config, tools=tools, session_id=session_id)
    return OrchestratorConversation(orchestrator, providers.tts)


__all__ = ["OrchestratorConversation", "Providers", "build_conversation", "providers_from_env"]
