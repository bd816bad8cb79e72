"""The settings and providers of one conversation (shared by every voice orchestrator)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from llmrtc.deadlines import (
    DEFAULT_LLM_FIRST_TOKEN_S,
    DEFAULT_LLM_IDLE_S,
    DEFAULT_STT_S,
    DEFAULT_TTS_FIRST_BYTE_S,
    DEFAULT_TURN_BUDGET_S,
)
from llmrtc.providers.base import LLMProvider, STTProvider, TTSProvider, VisionProvider
from llmrtc.types import STTConfig, TTSConfig

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful voice assistant. Answer briefly and conversationally; your words are spoken aloud."
)


@dataclass(slots=True)
class ConversationProviders:
    """The providers of one conversation. ``stt`` is needed for audio turns, ``tts`` for speech."""

    llm: LLMProvider
    stt: STTProvider | None = None
    tts: TTSProvider | None = None
    vision: VisionProvider | None = None


class OrchestratorConfig(BaseModel):
    """Settings of a conversation (:class:`~llmrtc.orchestrator.ConversationOrchestrator` and
    :class:`~llmrtc.playbooks.voice.VoicePlaybookOrchestrator`)."""

    model_config = ConfigDict(extra="forbid")

    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    history_limit: int = Field(default=8, ge=0)
    """How many past messages the LLM sees (tool exchanges are never split)."""
    max_stored_messages: int = Field(default=200, ge=1)
    """How many messages are kept in memory (older ones are dropped)."""
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, gt=0)
    model: str | None = None
    max_tool_rounds: int = Field(default=5, ge=0)
    """Tool rounds per turn; after them the LLM is asked once more with ``tool_choice="none"``."""
    streaming_tts: bool = True
    """Speak sentence by sentence while the LLM streams (False: speak the whole answer at the end)."""
    stt: STTConfig = Field(default_factory=STTConfig)
    tts: TTSConfig = Field(default_factory=TTSConfig)
    speaker_labels: Literal["name", "prefix"] = "name"
    hold_output_for_guardrail: bool | None = None
    """Hold each round's text and audio until ``on_llm_end`` passed. ``None``: only when a hook other than
    the logging hooks overrides ``on_llm_end`` (a guardrail), so a blocked answer is never spoken."""
    vision_prompt: str = "Describe what you see, briefly and factually, for someone who cannot see it."
    stt_timeout_s: float | None = Field(default=DEFAULT_STT_S, ge=0)
    """Deadline of one transcription, retries included (``None`` or 0: none). See :mod:`llmrtc.deadlines`."""
    llm_first_token_timeout_s: float | None = Field(default=DEFAULT_LLM_FIRST_TOKEN_S, ge=0)
    """Deadline of the LLM's first streamed piece (or of a whole non-streamed completion)."""
    llm_idle_timeout_s: float | None = Field(default=DEFAULT_LLM_IDLE_S, ge=0)
    """Deadline of each later streamed piece of the LLM."""
    tts_first_byte_timeout_s: float | None = Field(default=DEFAULT_TTS_FIRST_BYTE_S, ge=0)
    """Deadline of a sentence's first audio (and of every later gap in it)."""
    turn_budget_s: float | None = Field(default=DEFAULT_TURN_BUDGET_S, ge=0)
    """From a turn's start to its first audio (first text when not spoken), whatever runs in between."""


__all__ = ["DEFAULT_SYSTEM_PROMPT", "ConversationProviders", "OrchestratorConfig"]
