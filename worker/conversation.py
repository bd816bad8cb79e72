"""The room's conversation: the llmrtc voice pipeline behind the interface the room session drives.

:func:`build_conversation` makes the one voice pipeline of llmrtc for a room: a plain assistant
(:class:`~llmrtc.orchestrator.ConversationOrchestrator`, a one-stage playbook) or a playbook
(:class:`~llmrtc.playbooks.voice.VoicePlaybookOrchestrator`), both with the agent's tools, hooks and the
worker's metrics. :class:`OrchestratorConversation` adapts it to :class:`worker.session.Conversation`:
STT through the pipeline (hooks and metrics fire), turns played through the room's
:class:`~llmrtc.playout.Playout`, and ``say`` (the greeting: fixed text spoken through the TTS provider,
played through the same playout, and recorded as the assistant's).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from llmrtc.conversation import ConversationProviders, OrchestratorConfig
from llmrtc.errors import ConfigError, PlaybookError
from llmrtc.events import (
    LLMFinalEvent,
    TTSAudioEvent,
    TTSCompleteEvent,
    TTSStartEvent,
    TurnCompleteEvent,
    TurnEvent,
)
from llmrtc.hooks import HookRunner
from llmrtc.metrics import MetricsAdapter
from llmrtc.playbooks.types import Playbook
from llmrtc.playbooks.voice import VoicePlaybookOrchestrator
from llmrtc.playout import Playout
from llmrtc.providers.base import LLMProvider, STTProvider, TTSProvider, VisionProvider
from llmrtc.stt_interim import InterimSTT
from llmrtc.tools import ToolRegistry
from llmrtc.types import LLMResult, STTResult, TTSChunk, VisionAttachment
from worker.config import WorkerSettings

log = logging.getLogger("llmrtc.worker.conversation")


@dataclass
class Providers:
    """One room's providers (built off the job's event loop by :meth:`worker.agent.Agent.create_providers`)."""

    llm: LLMProvider
    stt: STTProvider
    tts: TTSProvider
    vision: VisionProvider | None = None

    async def aclose(self) -> None:
        for provider in (self.llm, self.stt, self.tts, self.vision):
            if provider is None:
                continue
            try:
                await provider.aclose()
            except Exception as exc:
                log.warning("closing %s failed: %s", provider.name, exc)


def providers_from_env() -> Providers:
    """The providers the environment selects (``LLM_PROVIDER``, ``OPENAI_API_KEY``, ...).

    Raises :class:`ConfigError` saying what is missing for STT, LLM and TTS.
    """
    from llmrtc.providers.registry import create_llm_from_env, create_stt_from_env, create_tts_from_env

    problems: list[str] = []
    built: dict[str, Any] = {}
    for kind, create in (
        ("STT", create_stt_from_env),
        ("LLM", create_llm_from_env),
        ("TTS", create_tts_from_env),
    ):
        try:
            built[kind] = create()
        except ConfigError as exc:
            problems.append(f"{kind}: {exc.message}")
    if problems:
        raise ConfigError(
            "no provider is configured for "
            + ", ".join(p.split(":", 1)[0] for p in problems)
            + ".\n  "
            + "\n  ".join(problems)
            + "\n  The quickest start: OPENAI_API_KEY=... (OpenAI for all three), or OPENAI_BASE_URL=... "
            "pointing at any OpenAI-compatible server, or LOCAL_ONLY=true (Ollama, Faster-Whisper, Piper)."
        )
    return Providers(llm=built["LLM"], stt=built["STT"], tts=built["TTS"])


class OrchestratorConversation:
    """One room's conversation on the llmrtc voice pipeline."""

    def __init__(self, orchestrator: VoicePlaybookOrchestrator, tts: TTSProvider) -> None:
        self.orchestrator = orchestrator
        self._tts = tts
        self._interim: InterimSTT | None = None

    @property
    def hooks(self) -> HookRunner:
        """The pipeline's hooks (the worker calls the connection and speech hook points through them)."""
        return self.orchestrator.hooks

    @property
    def session_id(self) -> str:
        return self.orchestrator.session_id

    async def transcribe(self, wav: bytes, *, speaker: str | None, utterance_id: str) -> STTResult:
        """STT of one utterance through the pipeline (``on_stt_*`` hooks, STT metrics, error mapping)."""
        return await self.orchestrator.transcribe(wav, speaker=speaker, utterance_id=utterance_id)

    def run_text_turn(
        self,
        text: str,
        *,
        speaker: str | None,
        turn_id: str,
        playout: Playout | None = None,
        attachments: list[VisionAttachment] | None = None,
    ) -> AsyncIterator[TurnEvent]:
        return self.orchestrator.run_text_turn_stream(
            text, attachments, speaker=speaker, turn_id=turn_id, playout=playout
        )

    async def interrupt(self, turn_id: str, spoken_text: str) -> None:
        self.orchestrator.interrupt(turn_id, spoken_text)

    def discard(self, turn_id: str) -> None:
        """A preemptive reply the user talked over: turn ``turn_id`` records nothing (cancel it next)."""
        self.orchestrator.discard(turn_id)

    def gate_tools(self, turn_id: str, wait: Callable[[], Awaitable[None]] | None) -> None:
        """Tools with side effects of turn ``turn_id`` (a preemptive reply) wait for ``wait()``."""
        self.orchestrator.gate_tools(turn_id, wait)

    def streaming_stt(self, interval_s: float) -> STTProvider:
        """An STT with interim results: the pipeline's own when it streams them, else the batch STT
        re-transcribing the growing utterance at most every ``interval_s`` (:class:`InterimSTT`)."""
        stt = self.orchestrator.providers.stt
        if stt is None:
            raise ConfigError("interim transcripts need an STT provider")
        if stt.capabilities.interim_results:
            return stt
        if self._interim is None or self._interim.inner is not stt or self._interim.interval_s != interval_s:
            self._interim = InterimSTT(stt, interval_s=interval_s)
        return self._interim

    async def add_context_note(self, note: str) -> None:
        self.orchestrator.add_context_note(note)

    async def say(
        self, text: str, *, turn_id: str, playout: Playout | None = None
    ) -> AsyncIterator[TurnEvent]:
        """Speak fixed text (the greeting) and record it once it was heard."""
        yield TTSStartEvent(turn_id)
        if playout is not None:
            playout.start()
        tts = self.orchestrator.speech.deadlines.tts(self._tts)  # TTS_FIRST_BYTE_TIMEOUT_S bounds it too
        async for chunk in tts.speak_stream(text):
            if playout is not None:
                playout.feed(chunk.pcm, chunk.sample_rate, text, False, chunk.words)
            yield TTSAudioEvent(turn_id, chunk, text, 0)
        last = TTSChunk(b"", self._tts.sample_rate)
        if playout is not None:
            playout.feed(last.pcm, last.sample_rate, text, True)
            playout.finish()
            await playout.wait_done()
        yield TTSAudioEvent(turn_id, last, text, 0, last_in_segment=True)
        await self.add_context_note(f'You (the assistant) greeted the room, saying: "{text}"')
        yield LLMFinalEvent(turn_id, LLMResult(full_text=text))
        yield TTSCompleteEvent(turn_id)
        yield TurnCompleteEvent(turn_id, text=text)


def load_room_playbook(settings: WorkerSettings, tools: ToolRegistry) -> Playbook | None:
    """The ``PLAYBOOK`` file, or ``None``; :class:`ConfigError` for an invalid one."""
    if settings.playbook is None:
        return None
    from llmrtc.playbooks.loader import load_playbook

    try:
        return load_playbook(settings.playbook, registry=tools)
    except PlaybookError as exc:
        raise ConfigError(f"PLAYBOOK={settings.playbook}: {exc.message}") from exc


def build_conversation(
    settings: WorkerSettings,
    providers: Providers,
    session_id: str | None = None,
    *,
    tools: ToolRegistry | None = None,
    playbook: Playbook | None = None,
    hooks: Any = None,
    metrics: MetricsAdapter | None = None,
) -> OrchestratorConversation:
    """The room's voice pipeline: a plain assistant (``SYSTEM_PROMPT``) or, with a playbook, the playbook.

    ``tools`` defaults to ``TOOLS`` (loaded per call, so each room gets its own registry); ``playbook`` to
    ``PLAYBOOK``. ``HISTORY_LIMIT`` (how many past messages the LLM sees) applies in both modes. Raises
    :class:`ConfigError` for an invalid playbook or tools spec.
    """
    from llmrtc.orchestrator import ConversationOrchestrator
    from llmrtc.playbooks.loader import load_tools

    registry = tools if tools is not None else load_tools(settings.tools or None)
    conv_providers = ConversationProviders(
        llm=providers.llm, stt=providers.stt, tts=providers.tts, vision=providers.vision
    )
    config = OrchestratorConfig(
        system_prompt=settings.system_prompt,
        history_limit=settings.history_limit,
        **settings.deadline_overrides(),
    )
    if playbook is None:
        playbook = load_room_playbook(settings, registry)
    orchestrator: VoicePlaybookOrchestrator
    if playbook is not None:
        orchestrator = VoicePlaybookOrchestrator(
            conv_providers,
            playbook,
            registry,
            config=config,
            session_id=session_id,
            hooks=hooks,
            metrics=metrics,
        )
    else:
        orchestrator = ConversationOrchestrator(
            conv_providers, config, tools=registry, session_id=session_id, hooks=hooks, metrics=metrics
        )
    return OrchestratorConversation(orchestrator, providers.tts)


__all__ = [
    "OrchestratorConversation",
    "Providers",
    "build_conversation",
    "load_room_playbook",
    "providers_from_env",
]
