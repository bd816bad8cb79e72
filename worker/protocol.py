"""The data-message protocol between the worker and clients (topic ``llmrtc``), versioned.

Every message is one JSON object with ``v`` (the protocol version) and ``type``. The worker sends the
``ServerEvent`` models; clients send the ``ClientMessage`` models. :func:`parse_client_message` validates an
incoming payload and raises :class:`llmrtc.errors.ProtocolError` (with a stable ``code``) for anything that
is not a valid, reasonably sized client message. ``docs/protocol.md`` documents the same schema and
``web/`` mirrors it.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from llmrtc.errors import ProtocolError

PROTOCOL_VERSION = 1
TOPIC = "llmrtc"
MAX_CLIENT_MESSAGE_BYTES = 16 * 1024
"""Client messages larger than this are refused before parsing."""
MAX_TEXT_CHARS = 4000
"""The longest typed text input accepted."""

AgentState = Literal["initializing", "listening", "thinking", "speaking"]

_SECRET_KEY = re.compile(r"(api[_-]?key|secret|password|passwd|token|authorization|credential)", re.I)
_REDACTED = "[redacted]"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1

    def to_bytes(self) -> bytes:
        """The message as compact UTF-8 JSON."""
        return self.model_dump_json(exclude_none=True).encode("utf-8")


# ------------------------------------------------------------------------------------------ worker -> clients


class TranscriptMsg(_Wire):
    """What a participant said (``final`` is false for interim results), or what they typed.

    Interim results and the final one of one utterance share ``segment_id``; each interim replaces the
    previous one, the final replaces them all. Interim results never start a turn.
    """

    type: Literal["transcript"] = "transcript"
    turn_id: str | None = None
    participant_identity: str
    participant_name: str
    text: str
    final: bool = True
    source: Literal["speech", "text"] = "speech"
    segment_id: str | None = None


class TurnStartMsg(_Wire):
    """The agent started a turn (answering ``participant_identities``; empty for a greeting)."""

    type: Literal["turn_start"] = "turn_start"
    turn_id: str
    participant_identities: list[str] = Field(default_factory=list)
    source: Literal["speech", "text", "greeting"] = "speech"


TurnOutcomeName = Literal["completed", "cancelled", "error"]


class TurnEndMsg(_Wire):
    """The one terminal event of every turn that ``turn_start`` announced.

    ``outcome``: ``completed`` (the answer was heard to the end), ``cancelled`` (barge-in, stop request,
    the speaker left, the worker stopped; ``heard_text`` is what the listeners heard) or ``error`` (an
    ``error`` message with the same ``turn_id`` came first). ``usage`` counts what the turn consumed.
    """

    type: Literal["turn_end"] = "turn_end"
    turn_id: str
    outcome: TurnOutcomeName
    reason: str | None = None
    heard_text: str | None = None
    usage: dict[str, float] | None = None


class LLMChunkMsg(_Wire):
    type: Literal["llm_chunk"] = "llm_chunk"
    turn_id: str
    content: str


class LLMMsg(_Wire):
    """The assistant's complete answer of a turn."""

    type: Literal["llm"] = "llm"
    turn_id: str
    text: str


class TTSStartMsg(_Wire):
    type: Literal["tts_start"] = "tts_start"
    turn_id: str


class TTSCompleteMsg(_Wire):
    type: Literal["tts_complete"] = "tts_complete"
    turn_id: str


class TTSCancelledMsg(_Wire):
    """The agent stopped speaking before the end (barge-in or ``stop_speaking``)."""

    type: Literal["tts_cancelled"] = "tts_cancelled"
    turn_id: str
    reason: Literal["barge_in", "stop_request", "participant_left", "shutdown"] = "barge_in"
    by: str | None = None
    """Identity of the participant whose speech or request cancelled it."""
    heard_text: str = ""
    """The part of the answer the listeners heard (what the history records); the rest was never spoken."""


class BargeInMsg(_Wire):
    """Speech from a participant met the onset rule while the agent spoke: its audio stopped now.

    ``tts_cancelled`` follows when the interruption stands; with false-interruption resume enabled, the
    agent may instead resume (``agent.state`` goes back to ``speaking``).
    """

    type: Literal["barge_in"] = "barge_in"
    turn_id: str
    participant_identity: str


class SpeechStartMsg(_Wire):
    type: Literal["speech_start"] = "speech_start"
    participant_identity: str


class SpeechEndMsg(_Wire):
    type: Literal["speech_end"] = "speech_end"
    participant_identity: str
    duration_ms: int = 0


class StageChangeMsg(_Wire):
    type: Literal["stage_change"] = "stage_change"
    turn_id: str
    from_stage: str
    to_stage: str
    transition_id: str
    reason: str | None = None


class ToolCallMsg(_Wire):
    type: Literal["tool_call"] = "tool_call"
    turn_id: str
    call_id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolResultMsg(_Wire):
    type: Literal["tool_result"] = "tool_result"
    turn_id: str
    call_id: str
    name: str
    success: bool
    error: str | None = None
    duration_ms: float = 0.0


class ErrorMsg(_Wire):
    """Something failed. ``message`` is safe to show (never a vendor's raw text); details go to the log.

    ``component`` says where (``stt``, ``llm``, ``tts``, ``tool``, ``worker``, ``protocol``); ``retryable``
    whether trying again (saying it again) may work.
    """

    type: Literal["error"] = "error"
    code: str
    message: str
    turn_id: str | None = None
    component: str | None = None
    retryable: bool | None = None


class VisionMsg(_Wire):
    """The agent looked at a participant's video (a frame went to the LLM or the vision provider)."""

    type: Literal["vision"] = "vision"
    turn_id: str | None = None
    participant_identity: str
    source: Literal["camera", "screen_share"]
    via: Literal["turn", "tool"] = "turn"


ServerEvent = Annotated[
    TranscriptMsg
    | LLMChunkMsg
    | LLMMsg
    | TTSStartMsg
    | TTSCompleteMsg
    | TTSCancelledMsg
    | BargeInMsg
    | SpeechStartMsg
    | SpeechEndMsg
    | StageChangeMsg
    | ToolCallMsg
    | ToolResultMsg
    | ErrorMsg
    | TurnStartMsg
    | TurnEndMsg
    | VisionMsg,
    Field(discriminator="type"),
]

# ------------------------------------------------------------------------------------------ clients -> worker


class TextInput(_Wire):
    """A typed message: answered like speech, without STT."""

    type: Literal["text"] = "text"
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)


class StopSpeaking(_Wire):
    """Ask the agent to stop the current answer (like a barge-in, with no new utterance)."""

    type: Literal["stop_speaking"] = "stop_speaking"


ClientMessage = Annotated[TextInput | StopSpeaking, Field(discriminator="type")]

_server_adapter: TypeAdapter[ServerEvent] = TypeAdapter(ServerEvent)
_client_adapter: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)


def parse_client_message(payload: bytes | str) -> TextInput | StopSpeaking:
    """Validate one client payload.

    Raises :class:`ProtocolError` with code ``message_too_large``, ``invalid_json``, ``unsupported_version``
    or ``invalid_message``; the message names the problem without echoing the payload.
    """
    size = len(payload.encode("utf-8") if isinstance(payload, str) else payload)
    if size > MAX_CLIENT_MESSAGE_BYTES:
        raise ProtocolError(
            f"message of {size} bytes exceeds the limit of {MAX_CLIENT_MESSAGE_BYTES} bytes",
            code="message_too_large",
        )
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(
            f"message is not valid UTF-8 JSON: {exc.__class__.__name__}", code="invalid_json"
        ) from exc
    if not isinstance(data, dict):
        raise ProtocolError("message must be a JSON object", code="invalid_message")
    version = data.get("v", PROTOCOL_VERSION)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"unsupported protocol version {version!r}; this worker speaks v{PROTOCOL_VERSION}",
            code="unsupported_version",
        )
    try:
        return _client_adapter.validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'message'}: {err['msg']}" for err in exc.errors()[:3]
        )
        raise ProtocolError(f"invalid message: {problems}", code="invalid_message") from exc


def parse_server_event(payload: bytes | str) -> ServerEvent:
    """Parse a worker event (for clients and tests written in Python)."""
    return _server_adapter.validate_json(payload)


def redact_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """A copy of tool arguments with values under secret-looking keys replaced, recursively."""

    def walk(value: Any, key: str = "") -> Any:
        if key and _SECRET_KEY.search(key):
            return _REDACTED
        if isinstance(value, dict):
            return {str(k): walk(v, str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    out = walk(arguments)
    assert isinstance(out, dict)
    return out


__all__ = [
    "MAX_CLIENT_MESSAGE_BYTES",
    "MAX_TEXT_CHARS",
    "PROTOCOL_VERSION",
    "TOPIC",
    "AgentState",
    "BargeInMsg",
    "ClientMessage",
    "ErrorMsg",
    "LLMChunkMsg",
    "LLMMsg",
    "ServerEvent",
    "SpeechEndMsg",
    "SpeechStartMsg",
    "StageChangeMsg",
    "StopSpeaking",
    "TTSCancelledMsg",
    "TTSCompleteMsg",
    "TTSStartMsg",
    "TextInput",
    "ToolCallMsg",
    "ToolResultMsg",
    "TranscriptMsg",
    "TurnEndMsg",
    "TurnOutcomeName",
    "TurnStartMsg",
    "VisionMsg",
    "parse_client_message",
    "parse_server_event",
    "redact_arguments",
]
