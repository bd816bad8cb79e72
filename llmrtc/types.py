"""Core data types that cross module and provider boundaries (pydantic).

Names follow the reference SDK in Python form: ``fullText`` -> ``full_text``, ``toolCallId`` ->
``tool_call_id``. Audio in streams is PCM16 little-endian mono unless a type says otherwise.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Role = Literal["system", "user", "assistant", "tool"]
StopReason = Literal["end_turn", "tool_use", "max_tokens", "stop_sequence"]
ExecutionPolicy = Literal["sequential", "parallel"]
AudioFormat = Literal["mp3", "ogg", "opus", "wav", "pcm", "flac", "aac"]

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)$", re.DOTALL)
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class VisionAttachment(_Model):
    """An image given to the LLM with a user message (a camera or screen frame, or an upload).

    ``data`` is base64, or a ``data:`` URL (its MIME type then wins over ``mime_type``).
    """

    data: str
    mime_type: str = "image/jpeg"
    source: Literal["camera", "screen", "upload"] | None = None
    timestamp_ms: int | None = None

    def model_post_init(self, __context: Any) -> None:
        match = _DATA_URL.match(self.data)
        if match:
            object.__setattr__(self, "mime_type", match.group("mime"))
            object.__setattr__(self, "data", match.group("data"))

    @field_validator("data")
    @classmethod
    def _valid_base64(cls, value: str) -> str:
        payload = value
        match = _DATA_URL.match(value)
        if match:
            payload = match.group("data")
        try:
            base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("attachment data must be base64 or a base64 data: URL") from exc
        return value

    @classmethod
    def from_bytes(cls, data: bytes, mime_type: str = "image/jpeg", **kw: Any) -> VisionAttachment:
        return cls(data=base64.b64encode(data).decode("ascii"), mime_type=mime_type, **kw)

    @property
    def base64_data(self) -> str:
        """The raw base64 payload (no ``data:`` prefix)."""
        return self.data

    def to_bytes(self) -> bytes:
        return base64.b64decode(self.data)

    def data_url(self) -> str:
        return f"data:{self.mime_type};base64,{self.data}"


class ToolCallRequest(_Model):
    """A tool call the LLM asked for."""

    call_id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class Message(_Model):
    """One conversation message.

    ``name`` identifies the human speaker in multi-person rooms (the LLM sees who spoke).
    An assistant message that asked for tools carries ``tool_calls``; the following ``tool`` messages carry
    ``tool_call_id`` and ``tool_name``. ``interrupted`` marks an assistant reply cut by barge-in: its
    ``content`` is what was actually spoken.
    """

    role: Role
    content: str = ""
    name: str | None = None
    attachments: list[VisionAttachment] = Field(default_factory=list)
    tool_call_id: str | None = None
    tool_name: str | None = None
    tool_calls: list[ToolCallRequest] = Field(default_factory=list)
    interrupted: bool = False

    @classmethod
    def system(cls, content: str) -> Message:
        return cls(role="system", content=content)

    @classmethod
    def user(cls, content: str, *, name: str | None = None, **kw: Any) -> Message:
        return cls(role="user", content=content, name=name, **kw)

    @classmethod
    def assistant(cls, content: str, **kw: Any) -> Message:
        return cls(role="assistant", content=content, **kw)

    @classmethod
    def tool(cls, content: str, *, tool_call_id: str, tool_name: str) -> Message:
        return cls(role="tool", content=content, tool_call_id=tool_call_id, tool_name=tool_name)


class ToolChoiceName(_Model):
    """Force one named tool."""

    name: str


ToolChoice = Literal["auto", "none", "required"] | ToolChoiceName


class ToolDefinition(_Model):
    """A tool the LLM may call: name, description, JSON Schema parameters and execution policy."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    execution_policy: ExecutionPolicy = "parallel"
    timeout_s: float | None = Field(default=None, gt=0)
    interruption: Literal["finish", "cancel"] = "cancel"
    """What barge-in does to a running call: let it finish (its result is kept) or cancel it."""
    side_effect_free: bool = False
    """The call changes nothing (a lookup): it may run inside a preemptive reply, before the user's turn is
    confirmed. Other calls of a preemptive reply wait for the confirmed turn."""

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _TOOL_NAME.match(value):
            raise ValueError("tool names are 1-64 characters of letters, digits, '_' or '-'")
        return value

    @field_validator("parameters")
    @classmethod
    def _object_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type", "object") != "object":
            raise ValueError("tool parameters must be a JSON Schema of type 'object'")
        return value


class GenerationConfig(_Model):
    """Sampling settings; ``None`` leaves the provider's default."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, gt=0)
    stop: list[str] | None = None
    model: str | None = None


class LLMRequest(_Model):
    """What an LLM provider is asked."""

    messages: list[Message]
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, gt=0)
    stop: list[str] | None = None
    model: str | None = None
    tools: list[ToolDefinition] = Field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    metadata: dict[str, Any] = Field(default_factory=dict)

    def with_config(self, config: GenerationConfig | None) -> LLMRequest:
        """A copy with the fields ``config`` sets filled in where this request leaves them unset."""
        if config is None:
            return self
        updates = {k: v for k, v in config.model_dump(exclude_none=True).items() if getattr(self, k) is None}
        return self.model_copy(update=updates)


class Usage(_Model):
    input_tokens: int = 0
    output_tokens: int = 0


class LLMResult(_Model):
    """A complete LLM answer."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    full_text: str = ""
    tool_calls: list[ToolCallRequest] = Field(default_factory=list)
    stop_reason: StopReason = "end_turn"
    usage: Usage | None = None
    raw: Any = Field(default=None, exclude=True, repr=False)


class ToolCallDelta(_Model):
    """A piece of a streamed tool call. ``index`` groups deltas of one call."""

    index: int = 0
    call_id: str | None = None
    name: str | None = None
    arguments_delta: str = ""


class LLMChunk(_Model):
    """A piece of a streamed LLM answer.

    The last chunk has ``done=True``, the ``stop_reason``, the ``usage`` when known, and ``tool_calls``
    fully assembled from the deltas seen before.
    """

    content: str = ""
    tool_call_deltas: list[ToolCallDelta] = Field(default_factory=list)
    done: bool = False
    stop_reason: StopReason | None = None
    tool_calls: list[ToolCallRequest] = Field(default_factory=list)
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class WordTiming:
    """One word of synthesized (or transcribed) speech and when it is heard.

    For TTS, ``start_s``/``end_s`` count from the first sample of the ``speak_stream`` (or
    ``speak_text_stream``) call that produced it; the playout uses them to derive the text heard.
    """

    text: str
    start_s: float
    end_s: float


class STTConfig(_Model):
    language: str | None = None
    model: str | None = None
    prompt: str | None = None
    temperature: float | None = None


class STTResult(_Model):
    """A transcription. Partial results of a streaming STT have ``is_final=False``.

    ``words``: word timings (seconds from the start of the audio given to the call) when the vendor reports
    them. ``end_of_utterance``: the vendor's endpointing says the speaker finished (e.g. Deepgram's
    ``speech_final``/``UtteranceEnd``); a result with it set may carry no new text.
    """

    text: str
    is_final: bool = True
    language: str | None = None
    confidence: float | None = None
    duration_s: float | None = None
    words: list[WordTiming] = Field(default_factory=list)
    end_of_utterance: bool = False


class TTSConfig(_Model):
    voice: str | None = None
    model: str | None = None
    speed: float | None = Field(default=None, ge=0.25, le=4.0)
    format: AudioFormat | None = None
    sample_rate: int | None = Field(default=None, gt=0)


class TTSResult(_Model):
    """Complete synthesized speech. With ``format == "pcm"`` the audio is PCM16 mono at ``sample_rate``."""

    audio: bytes
    format: AudioFormat = "pcm"
    sample_rate: int = 24000

    @property
    def duration_s(self) -> float:
        if self.format != "pcm" or not self.sample_rate:
            return 0.0
        return len(self.audio) / 2 / self.sample_rate


@dataclass(frozen=True, slots=True)
class TTSChunk:
    """A piece of streamed speech: PCM16 little-endian mono at ``sample_rate``.

    ``words``: the words whose timing the provider reported with this chunk (empty when it reports none).
    """

    pcm: bytes
    sample_rate: int
    words: tuple[WordTiming, ...] = ()

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate


class VisionRequest(_Model):
    prompt: str = "Describe what you see, briefly and factually."
    attachments: list[VisionAttachment]


class VisionResult(_Model):
    description: str


class ToolResult(_Model):
    """The outcome of one tool call, handed back to the LLM as a ``tool`` message."""

    call_id: str
    tool_name: str
    success: bool
    result: Any = None
    error: str | None = None
    error_code: str | None = None
    duration_ms: float = 0.0

    def content_for_llm(self) -> str:
        """The text put in the ``tool`` message."""
        import json

        if self.success:
            if isinstance(self.result, str):
                return self.result
            return json.dumps(self.result, default=str, ensure_ascii=False)
        return json.dumps({"error": self.error or "tool failed", "code": self.error_code}, ensure_ascii=False)


__all__ = [
    "AudioFormat",
    "ExecutionPolicy",
    "GenerationConfig",
    "LLMChunk",
    "LLMRequest",
    "LLMResult",
    "Message",
    "Role",
    "STTConfig",
    "STTResult",
    "StopReason",
    "TTSChunk",
    "TTSConfig",
    "TTSResult",
    "ToolCallDelta",
    "ToolCallRequest",
    "ToolChoice",
    "ToolChoiceName",
    "ToolDefinition",
    "ToolResult",
    "Usage",
    "VisionAttachment",
    "VisionRequest",
    "VisionResult",
    "WordTiming",
]
