"""Typed events of one conversation turn.

Both :class:`llmrtc.orchestrator.ConversationOrchestrator` and
:class:`llmrtc.playbooks.VoicePlaybookOrchestrator` yield these from their ``*_stream`` methods, so a
transport (the LiveKit worker) drives either one the same way. Events are plain frozen dataclasses: they are
produced on the hot path and never cross a process boundary as-is (the worker maps them to wire messages).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmrtc.errors import LLMRTCError
from llmrtc.types import LLMResult, STTResult, ToolCallRequest, ToolResult, TTSChunk


@dataclass(frozen=True, slots=True)
class TurnEventBase:
    turn_id: str


@dataclass(frozen=True, slots=True)
class TranscriptEvent(TurnEventBase):
    """What the user said (STT result, or the typed text of a text turn)."""

    result: STTResult
    speaker: str | None = None


@dataclass(frozen=True, slots=True)
class LLMChunkEvent(TurnEventBase):
    """A piece of the assistant's streamed text."""

    content: str


@dataclass(frozen=True, slots=True)
class LLMFinalEvent(TurnEventBase):
    """The assistant's complete answer for this turn (after any tool rounds)."""

    result: LLMResult


@dataclass(frozen=True, slots=True)
class TTSStartEvent(TurnEventBase):
    """Speech for this turn is about to start (first audio follows)."""


@dataclass(frozen=True, slots=True)
class TTSAudioEvent(TurnEventBase):
    """A piece of synthesized speech (PCM16 mono) for the sentence ``text`` (index ``segment``)."""

    chunk: TTSChunk
    text: str
    segment: int
    last_in_segment: bool = False


@dataclass(frozen=True, slots=True)
class TTSCompleteEvent(TurnEventBase):
    """All speech of this turn was produced."""


@dataclass(frozen=True, slots=True)
class ToolCallEvent(TurnEventBase):
    call: ToolCallRequest


@dataclass(frozen=True, slots=True)
class ToolResultEvent(TurnEventBase):
    result: ToolResult


@dataclass(frozen=True, slots=True)
class StageChangeEvent(TurnEventBase):
    """A playbook moved to another stage (playbook mode only)."""

    from_stage: str
    to_stage: str
    transition_id: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ErrorEvent(TurnEventBase):
    """The turn failed; history is left consistent (nothing half-recorded)."""

    error: LLMRTCError
    component: str = ""


@dataclass(frozen=True, slots=True)
class TurnCompleteEvent(TurnEventBase):
    """The turn ended normally (always the last event unless the turn errored or was cancelled)."""

    text: str = ""
    metadata: dict[str, object] = field(default_factory=dict)


TurnEvent = (
    TranscriptEvent
    | LLMChunkEvent
    | LLMFinalEvent
    | TTSStartEvent
    | TTSAudioEvent
    | TTSCompleteEvent
    | ToolCallEvent
    | ToolResultEvent
    | StageChangeEvent
    | ErrorEvent
    | TurnCompleteEvent
)

__all__ = [
    "ErrorEvent",
    "LLMChunkEvent",
    "LLMFinalEvent",
    "StageChangeEvent",
    "TTSAudioEvent",
    "TTSCompleteEvent",
    "TTSStartEvent",
    "ToolCallEvent",
    "ToolResultEvent",
    "TranscriptEvent",
    "TurnCompleteEvent",
    "TurnEvent",
    "TurnEventBase",
]
