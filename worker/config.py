"""Worker settings: one object read from the environment and ``.env``, validated at start.

Provider selection (``LLM_PROVIDER``, ``OPENAI_API_KEY``, ...) is read by :mod:`llmrtc.providers.registry`
from the same environment; this object holds what the worker itself needs. ``.env.example`` lists every
variable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values
from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from llmrtc.audio.turn_detection import TurnDetectionKind
from llmrtc.errors import ConfigError
from llmrtc.vision import VisionConfig, VisionMode

FloorPolicy = Literal["everyone", "name", "designated"]
QueuePolicy = Literal["queue", "merge"]
ExecutorKind = Literal["thread", "process"]

DEFAULT_AGENT_NAME = "llmrtc-agent"
"""The agent name the worker registers and the token service dispatches by default (named dispatch)."""
_AGENT_NAME_VARS = ("AGENT_NAME", "LIVEKIT_AGENT_NAME")

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful voice assistant in a room with one or more people. User messages start with the "
    "speaker's name. Answer briefly, in plain spoken sentences without markdown."
)


class WorkerSettings(BaseSettings):
    """Everything the worker reads from its environment (see ``.env.example``)."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True
    )

    livekit_url: str = Field(default="", validation_alias="LIVEKIT_URL")
    livekit_api_key: str = Field(default="", validation_alias="LIVEKIT_API_KEY", repr=False)
    livekit_api_secret: str = Field(default="", validation_alias="LIVEKIT_API_SECRET", repr=False)
    agent_name: str = Field(
        default=DEFAULT_AGENT_NAME, validation_alias=AliasChoices("AGENT_NAME", "LIVEKIT_AGENT_NAME")
    )
    """Named dispatch (default ``llmrtc-agent``, as the token service); set to empty: dispatched
    automatically to every new room."""
    agent_display_name: str = Field(default="Assistant", validation_alias="AGENT_DISPLAY_NAME")
    """The agent's participant name; with ``FLOOR_POLICY=name`` it is the word that gives a human the floor."""

    system_prompt: str = Field(default=DEFAULT_SYSTEM_PROMPT, validation_alias="SYSTEM_PROMPT")
    playbook: Path | None = Field(default=None, validation_alias="PLAYBOOK")
    """A playbook file (YAML/JSON): runs the VoicePlaybookOrchestrator instead of the plain assistant."""
    tools: str = Field(default="", validation_alias="TOOLS")
    """The tools the LLM may call: ``path/to/tools.py`` or ``package.module[:name]`` giving a ToolRegistry."""
    mcp_servers: str = Field(default="", validation_alias="MCP_SERVERS")
    """MCP servers whose tools join the registry: a JSON list of ``{"name", "command", "args"}`` (stdio) or
    ``{"name", "url", "headers"}`` (streamable HTTP) objects (:func:`llmrtc.mcp.parse_mcp_servers`)."""
    greeting: str = Field(default="", validation_alias="GREETING")
    """Spoken when a human joins (empty: no greeting)."""
    history_limit: int = Field(default=40, ge=2, validation_alias="HISTORY_LIMIT")

    floor_policy: FloorPolicy = Field(default="everyone", validation_alias="FLOOR_POLICY")
    floor_attribute: str = Field(default="llmrtc.floor", validation_alias="FLOOR_ATTRIBUTE")
    """With ``FLOOR_POLICY=designated``: the participant whose attribute is ``true`` holds the floor."""
    wake_words: str = Field(default="", validation_alias="WAKE_WORDS")
    """With ``FLOOR_POLICY=name``: extra comma-separated names that address the agent."""
    queue_policy: QueuePolicy = Field(default="queue", validation_alias="TURN_QUEUE_POLICY")
    max_queued_turns: int = Field(default=8, ge=1, le=100, validation_alias="MAX_QUEUED_TURNS")

    barge_in: bool = Field(default=True, validation_alias="BARGE_IN")
    barge_in_min_speech_ms: float = Field(
        default=400.0, ge=0.0, le=3000.0, validation_alias="BARGE_IN_MIN_SPEECH_MS"
    )
    """The onset rule: voiced time (at ``BARGE_IN_THRESHOLD``) before speech interrupts the agent."""
    barge_in_threshold: float = Field(default=0.6, gt=0.0, lt=1.0, validation_alias="BARGE_IN_THRESHOLD")
    false_interruption_timeout_s: float = Field(
        default=2.0, ge=0.0, le=30.0, validation_alias="FALSE_INTERRUPTION_TIMEOUT"
    )
    resume_false_interruption: bool = Field(default=True, validation_alias="RESUME_FALSE_INTERRUPTION")

    vad_threshold: float = Field(default=0.5, gt=0.0, lt=1.0, validation_alias="VAD_THRESHOLD")
    vad_min_speech_ms: int = Field(default=250, ge=0, le=5000, validation_alias="VAD_MIN_SPEECH_MS")
    vad_min_silence_ms: int = Field(default=600, ge=50, le=10000, validation_alias="VAD_MIN_SILENCE_MS")
    vad_speech_pad_ms: int = Field(default=200, ge=0, le=2000, validation_alias="VAD_SPEECH_PAD_MS")
    vad_silence_floor_dbfs: float | Literal["off"] = Field(
        default=-64.0, validation_alias="VAD_SILENCE_FLOOR_DBFS"
    )
    """Audio whose peak stays below this (dBFS, -120..-20) scores as silence without running Silero (muted
    and silent participants cost almost nothing); ``off``: every 32 ms window goes to the model."""

    turn_detection: TurnDetectionKind = Field(default="vad", validation_alias="TURN_DETECTION")
    """End of turn (docs/audio.md "End of turn"): ``vad`` (a fixed silence), ``smart-turn`` or ``livekit``."""
    turn_min_silence_ms: float | None = Field(
        default=None, gt=0, le=10_000, validation_alias="TURN_MIN_SILENCE_MS"
    )
    """Silence when the model says the turn is complete (``vad``: the fixed silence; unset: model default)."""
    turn_max_silence_ms: float | None = Field(
        default=None, gt=0, le=10_000, validation_alias="TURN_MAX_SILENCE_MS"
    )
    """Silence when the model says the user is mid-thought: the bound (unset: model default)."""
    turn_complete_threshold: float | None = Field(
        default=None, ge=0.0, le=1.0, validation_alias="TURN_COMPLETE_THRESHOLD"
    )
    """P(complete) that counts as complete (unset: model default)."""
    turn_text_check: bool | None = Field(default=None, validation_alias="TURN_TEXT_CHECK")
    """Hold the turn when its transcript stops mid-sentence ("a flight to"), up to the mid-thought silence
    (unset: on with ``smart-turn`` and ``livekit``, off with ``vad``)."""
    turn_text_language: str = Field(
        default="en", min_length=2, validation_alias=AliasChoices("TURN_TEXT_LANGUAGE", "STT_LANGUAGE")
    )
    """The transcripts' language for that check (default: ``STT_LANGUAGE``, else ``en``; only English is
    checked, other languages are left to the audio model)."""
    interim_transcripts: bool = Field(default=False, validation_alias="INTERIM_TRANSCRIPTS")
    """Send interim transcripts while people speak (streaming STT, or the batch STT re-run on the growing
    utterance every ``INTERIM_INTERVAL_MS``: that many more STT requests)."""
    interim_interval_ms: int = Field(default=600, ge=100, le=10_000, validation_alias="INTERIM_INTERVAL_MS")
    preemptive_generation: bool = Field(default=False, validation_alias="PREEMPTIVE_GENERATION")
    """Start the answer when the end of turn is predicted, before the silence is over; cancelled unheard
    and unrecorded if the person goes on (more LLM requests)."""
    vad_max_utterance_s: float = Field(default=30.0, ge=1.0, le=600.0, validation_alias="VAD_MAX_UTTERANCE_S")
    """Speech is cut into pieces this long for transcription; the pieces of one utterance make one turn."""

    tts_sample_rate: int = Field(default=24000, validation_alias="AGENT_AUDIO_SAMPLE_RATE")
    executor: ExecutorKind = Field(default="thread", validation_alias="WORKER_EXECUTOR")
    """``thread``: many rooms share one process (and one VAD model); ``process``: one process per job."""
    load_threshold: float = Field(default=0.7, gt=0.0, le=1.0, validation_alias="WORKER_LOAD_THRESHOLD")
    """At this load (:mod:`worker.load`; 1.0: turns start to be late) LiveKit stops dispatching rooms to the
    worker and it refuses job offers, in ``dev`` as in ``start``."""
    load_machine: bool = Field(default=True, validation_alias="WORKER_LOAD_MACHINE")
    """Count how busy the machine's cores are (every process on them) in the load, not only this worker's
    own signals: a worker sharing its host gets only what the others leave."""
    room_cpu: float = Field(default=0.15, gt=0.0, le=64.0, validation_alias="WORKER_ROOM_CPU")
    """Cores a talking room is assumed to cost: the load is never below the open rooms at this, and each
    room accepted in the last seconds counts at once, so a burst of dispatches cannot fill the worker
    before its load shows them (:mod:`worker.load`)."""
    worker_processes: int = Field(default=1, ge=1, le=64, validation_alias="WORKER_PROCESSES")
    """Above 1: a supervisor runs this many worker processes and restarts one that dies
    (:mod:`worker.supervisor`)."""
    turn_late_s: float = Field(default=4.0, ge=0.5, le=120.0, validation_alias="TURN_LATE_S")
    """A turn not heard this long after the speaker stopped gets a ``turn_late`` event then (once)."""

    session_store_url: str = Field(default="", validation_alias="SESSION_STORE_URL")
    """Where room conversations are kept: empty or ``memory`` (this process), ``redis://...`` (shared)."""
    session_ttl_s: float = Field(default=1800.0, gt=0.0, le=7 * 86400.0, validation_alias="SESSION_TTL_S")
    """A room's state is kept this long after its last save (a room that comes back within it resumes)."""
    session_delete_on_end: bool = Field(default=False, validation_alias="SESSION_DELETE_ON_END")
    """Delete a room's state when its last human leaves, instead of letting it expire."""

    stt_timeout_s: float | None = Field(default=None, ge=0.0, le=600.0, validation_alias="STT_TIMEOUT_S")
    """Deadline of one transcription, retries included (unset: 10 s; 0: none). See docs/reliability.md."""
    llm_first_token_timeout_s: float | None = Field(
        default=None, ge=0.0, le=600.0, validation_alias="LLM_FIRST_TOKEN_TIMEOUT_S"
    )
    """Deadline of the LLM's first token (unset: 8 s; 0: none)."""
    llm_idle_timeout_s: float | None = Field(
        default=None, ge=0.0, le=600.0, validation_alias="LLM_IDLE_TIMEOUT_S"
    )
    """Deadline of each later LLM token (unset: 8 s; 0: none)."""
    tts_first_byte_timeout_s: float | None = Field(
        default=None, ge=0.0, le=600.0, validation_alias="TTS_FIRST_BYTE_TIMEOUT_S"
    )
    """Deadline of a sentence's first audio byte, and of every later gap in it (unset: 6 s; 0: none)."""
    turn_budget_s: float | None = Field(default=None, ge=0.0, le=600.0, validation_alias="TURN_BUDGET_S")
    """From a turn's start to its first audio, whatever runs in between (unset: 15 s; 0: none)."""

    def deadline_overrides(self) -> dict[str, float | None]:
        """The deadlines set here, as :class:`~llmrtc.conversation.OrchestratorConfig` fields (0: off)."""
        names = (
            "stt_timeout_s",
            "llm_first_token_timeout_s",
            "llm_idle_timeout_s",
            "tts_first_byte_timeout_s",
            "turn_budget_s",
        )
        values = {name: getattr(self, name) for name in names}
        return {name: (value or None) for name, value in values.items() if value is not None}

    vision: VisionMode = Field(default="tool", validation_alias="VISION")
    """How the agent uses the humans' cameras and screen shares (docs/vision.md): ``off`` (not even
    subscribed), ``turn`` (each turn carries the speaker's freshest frames) or ``tool`` (a ``look`` tool)."""
    vision_max_side: int | None = Field(default=None, validation_alias="VISION_MAX_SIDE")
    vision_fps: float | None = Field(default=None, validation_alias="VISION_FPS")
    vision_max_frames_per_turn: int | None = Field(
        default=None, validation_alias="VISION_MAX_FRAMES_PER_TURN"
    )
    vision_max_bytes_per_turn: int | None = Field(default=None, validation_alias="VISION_MAX_BYTES_PER_TURN")
    vision_max_per_minute: int | None = Field(default=None, validation_alias="VISION_MAX_PER_MINUTE")
    vision_image_format: str | None = Field(default=None, validation_alias="VISION_IMAGE_FORMAT")
    vision_jpeg_quality: int | None = Field(default=None, validation_alias="VISION_JPEG_QUALITY")
    vision_max_age_s: float | None = Field(default=None, validation_alias="VISION_MAX_AGE_S")

    def vision_config(self) -> VisionConfig:
        """The ``VISION*`` settings as a :class:`~llmrtc.vision.VisionConfig` (unset ones: its defaults)."""
        values = {
            name: getattr(self, f"vision_{name}")
            for name in VisionConfig.model_fields
            if name != "mode" and getattr(self, f"vision_{name}") is not None
        }
        return VisionConfig(mode=self.vision, **values)

    metrics_port: int | None = Field(default=None, ge=0, le=65535, validation_alias="METRICS_PORT")
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on this port (unset: off; ``0``: an ephemeral port)."""
    metrics_host: str = Field(default="0.0.0.0", validation_alias="METRICS_HOST")
    drain_timeout_s: int = Field(default=60, ge=1, le=3600, validation_alias="DRAIN_TIMEOUT_S")
    """On SIGTERM (``start``): take no new jobs, let conversations run this long, then hand the rooms over."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        explicit = _ExplicitEmptyAgentName(settings_cls, dotenv_settings)
        return init_settings, explicit, env_settings, dotenv_settings, file_secret_settings

    @field_validator("session_store_url")
    @classmethod
    def _store_url(cls, value: str) -> str:
        spec = value.strip()
        scheme = spec.split("://", 1)[0].lower() if "://" in spec else spec.lower()
        if scheme not in ("", "memory", "redis", "rediss", "unix"):
            raise ValueError("must be empty, 'memory' or a Redis URL such as redis://localhost:6379/0")
        return spec

    @field_validator("vad_silence_floor_dbfs")
    @classmethod
    def _silence_floor(cls, value: float | str) -> float | str:
        if value != "off" and not -120.0 <= float(value) <= -20.0:
            raise ValueError("must be 'off' or a level in dBFS from -120 to -20 (default -64)")
        return value

    @field_validator("mcp_servers")
    @classmethod
    def _mcp(cls, value: str) -> str:
        if value.strip():
            from llmrtc.errors import LLMRTCError
            from llmrtc.mcp import parse_mcp_servers

            try:
                parse_mcp_servers(value)
            except (LLMRTCError, ValueError) as exc:
                raise ValueError(f"invalid MCP server list: {exc}") from exc
        return value.strip()

    @field_validator("tts_sample_rate")
    @classmethod
    def _rate(cls, value: int) -> int:
        if value not in (8000, 16000, 24000, 48000):
            raise ValueError("must be one of 8000, 16000, 24000, 48000")
        return value

    @field_validator("floor_attribute")
    @classmethod
    def _attribute(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @model_validator(mode="after")
    def _check_vision(self) -> WorkerSettings:
        try:
            self.vision_config()
        except ValidationError as exc:
            problems = "; ".join(
                f"VISION_{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
            )
            raise ValueError(f"invalid vision settings: {problems}") from exc
        return self

    @model_validator(mode="after")
    def _check_playbook(self) -> WorkerSettings:
        if self.playbook is not None and not self.playbook.is_file():
            raise ValueError(f"PLAYBOOK={self.playbook} is not a readable file")
        return self

    @property
    def addressing_names(self) -> list[str]:
        """Names that give a human the floor under ``FLOOR_POLICY=name`` (lower-case)."""
        names = [self.agent_display_name, *self.wake_words.split(",")]
        return [n.strip().lower() for n in names if n.strip()]

    def require_livekit(self) -> None:
        """Raise :class:`ConfigError` naming every LIVEKIT_* variable that is missing."""
        missing = [
            name
            for name, value in (
                ("LIVEKIT_URL", self.livekit_url),
                ("LIVEKIT_API_KEY", self.livekit_api_key),
                ("LIVEKIT_API_SECRET", self.livekit_api_secret),
            )
            if not value
        ]
        if missing:
            raise ConfigError(
                f"set {', '.join(missing)} (in the environment or .env) to the LiveKit server the worker joins; "
                "`make dev` sets them for the local development server"
            )


class _ExplicitEmptyAgentName(PydanticBaseSettingsSource):
    """``AGENT_NAME=`` set but empty means automatic dispatch (other empty variables mean "the default").

    The environment wins over ``.env``, as for every variable.
    """

    def __init__(self, settings_cls: type[BaseSettings], dotenv: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self._dotenv = dotenv

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def _dotenv_values(self) -> dict[str, str | None]:
        files = self._dotenv.env_file if isinstance(self._dotenv, DotEnvSettingsSource) else None
        if files is None:
            return {}
        values: dict[str, str | None] = {}
        for path in [files] if isinstance(files, str | Path) else list(files):
            if Path(path).is_file():
                values.update({k.upper(): v for k, v in dotenv_values(path).items()})
        return values

    def __call__(self) -> dict[str, Any]:
        env = {k.upper(): v for k, v in os.environ.items() if k.upper() in _AGENT_NAME_VARS}
        if not env:
            env = {k: v or "" for k, v in self._dotenv_values().items() if k in _AGENT_NAME_VARS}
        if env and all(not value.strip() for value in env.values()):
            return {"AGENT_NAME": ""}
        return {}


def env_file_path() -> str:
    """The ``.env`` file the worker reads: ``LLMRTC_ENV_FILE`` when set (tests point it elsewhere), else ``.env``."""
    return os.environ.get("LLMRTC_ENV_FILE") or ".env"


def load_settings(env_file: str | Path | Literal["default"] | None = "default") -> WorkerSettings:
    """Read and validate settings; raise :class:`ConfigError` with one line per invalid variable."""
    if env_file == "default":
        env_file = env_file_path()
    try:
        return WorkerSettings(_env_file=env_file)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "settings"
            lines.append(
                f"  {loc}: {err['msg']} (got {err.get('input')!r})"
                if loc != "settings"
                else f"  {err['msg']}"
            )
        raise ConfigError("invalid worker settings:\n" + "\n".join(lines)) from exc


__all__ = [
    "DEFAULT_AGENT_NAME",
    "DEFAULT_SYSTEM_PROMPT",
    "ExecutorKind",
    "FloorPolicy",
    "QueuePolicy",
    "WorkerSettings",
    "env_file_path",
    "load_settings",
]
