"""Hook points for observability and guardrails.

Subclass :class:`Hooks` and override what you need; every method may be sync or async. Hooks are called
through a :class:`HookRunner`: a hook that raises is logged (with the session and turn ids) and the turn goes
on, with one documented exception: raising in ``on_llm_end`` is a guardrail. The LLM's answer is then
withheld (not spoken, not recorded) and the turn ends with a :class:`~llmrtc.errors.GuardrailError`.

Every method takes a :class:`HookContext` first. ``*_end`` hooks get a :class:`Timing`.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from llmrtc.errors import GuardrailError
from llmrtc.types import (
    LLMChunk,
    LLMRequest,
    LLMResult,
    STTResult,
    ToolCallRequest,
    ToolResult,
    TTSChunk,
)

log = logging.getLogger("llmrtc.hooks")

HOOK_NAMES: tuple[str, ...] = (
    "on_connection",
    "on_disconnect",
    "on_speech_start",
    "on_speech_end",
    "on_turn_start",
    "on_turn_end",
    "on_stt_start",
    "on_stt_end",
    "on_stt_error",
    "on_llm_start",
    "on_llm_chunk",
    "on_llm_end",
    "on_llm_error",
    "on_tts_start",
    "on_tts_chunk",
    "on_tts_end",
    "on_tts_error",
    "on_tool_start",
    "on_tool_end",
    "on_tool_error",
    "on_error",
)


@dataclass(slots=True)
class HookContext:
    """Who and where: ids for logs and metrics. ``component`` names the stage (stt, llm, tts, tool...)."""

    session_id: str = ""
    turn_id: str | None = None
    room: str | None = None
    participant: str | None = None
    component: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def child(self, **changes: Any) -> HookContext:
        """A copy with some fields changed (the metadata dict is shared)."""
        values: dict[str, Any] = {
            "session_id": self.session_id,
            "turn_id": self.turn_id,
            "room": self.room,
            "participant": self.participant,
            "component": self.component,
            "metadata": self.metadata,
        }
        values.update(changes)
        return HookContext(**values)

    def ids(self) -> str:
        """``session=.. turn=..`` for log lines."""
        parts = [f"session={self.session_id}"]
        if self.room:
            parts.append(f"room={self.room}")
        if self.participant:
            parts.append(f"participant={self.participant}")
        if self.turn_id:
            parts.append(f"turn={self.turn_id}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Timing:
    """When a stage ran: ``start``/``end`` are epoch seconds, ``duration_ms`` from a monotonic clock."""

    start: float
    end: float
    duration_ms: float


class Stopwatch:
    """Measures one stage; :meth:`timing` gives the :class:`Timing` so far."""

    __slots__ = ("_perf", "start")

    def __init__(self) -> None:
        self.start = time.time()
        self._perf = time.perf_counter()

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self._perf) * 1000.0

    def timing(self) -> Timing:
        ms = self.elapsed_ms()
        return Timing(start=self.start, end=self.start + ms / 1000.0, duration_ms=ms)


class Hooks:
    """All hook points, each a no-op; override any of them (sync or async)."""

    def on_connection(self, ctx: HookContext) -> Any:
        """A participant (or client) connected to the session."""

    def on_disconnect(self, ctx: HookContext, timing: Timing) -> Any:
        """The session ended; ``timing`` covers the whole session."""

    def on_speech_start(self, ctx: HookContext) -> Any:
        """VAD detected that ``ctx.participant`` started speaking."""

    def on_speech_end(self, ctx: HookContext, audio_duration_ms: float) -> Any:
        """VAD detected the end of an utterance of ``audio_duration_ms``."""

    def on_turn_start(self, ctx: HookContext) -> Any:
        """A conversation turn started."""

    def on_turn_end(self, ctx: HookContext, timing: Timing) -> Any:
        """A turn ended (completed, failed or interrupted: see ``ctx.metadata['outcome']``)."""

    def on_stt_start(self, ctx: HookContext, audio: bytes) -> Any:
        """Transcription of ``audio`` (WAV bytes) starts."""

    def on_stt_end(self, ctx: HookContext, result: STTResult, timing: Timing) -> Any:
        """Transcription finished."""

    def on_stt_error(self, ctx: HookContext, error: Exception) -> Any:
        """Transcription failed."""

    def on_llm_start(self, ctx: HookContext, request: LLMRequest) -> Any:
        """An LLM request (one tool round) starts."""

    def on_llm_chunk(self, ctx: HookContext, chunk: LLMChunk, index: int) -> Any:
        """A streamed piece of the answer arrived (``index`` counts from 0 within the round)."""

    def on_llm_end(self, ctx: HookContext, result: LLMResult, timing: Timing) -> Any:
        """The LLM round finished. Raising here is a guardrail: the answer is withheld."""

    def on_llm_error(self, ctx: HookContext, error: Exception) -> Any:
        """The LLM call failed."""

    def on_tts_start(self, ctx: HookContext, text: str) -> Any:
        """Synthesis of one sentence (``text``) starts."""

    def on_tts_chunk(self, ctx: HookContext, chunk: TTSChunk) -> Any:
        """A piece of PCM was synthesized."""

    def on_tts_end(self, ctx: HookContext, timing: Timing) -> Any:
        """Synthesis of one sentence finished."""

    def on_tts_error(self, ctx: HookContext, error: Exception) -> Any:
        """Synthesis failed."""

    def on_tool_start(self, ctx: HookContext, call: ToolCallRequest) -> Any:
        """A tool call starts."""

    def on_tool_end(self, ctx: HookContext, result: ToolResult, timing: Timing) -> Any:
        """A tool call finished (successfully or not: see ``result.success``)."""

    def on_tool_error(self, ctx: HookContext, call: ToolCallRequest, error: Exception) -> Any:
        """A tool call failed (invalid arguments, timeout, or the handler raised)."""

    def on_error(self, ctx: HookContext, error: Exception) -> Any:
        """Any error, with ``ctx.component`` naming where it happened."""


class _CombinedHooks(Hooks):
    """Several hook objects called in order (see :func:`combine_hooks`)."""

    def __init__(self, parts: Iterable[Any]) -> None:
        self.parts: list[Any] = list(parts)


def _make_combined(name: str) -> Any:
    async def method(self: _CombinedHooks, *args: Any) -> None:
        for part in self.parts:
            fn = getattr(part, name, None)
            if fn is not None:
                out = fn(*args)
                if inspect.isawaitable(out):
                    await out

    method.__name__ = name
    return method


for _name in HOOK_NAMES:
    setattr(_CombinedHooks, _name, _make_combined(_name))


def combine_hooks(*hooks: Any) -> Hooks:
    """One :class:`Hooks` calling each of ``hooks`` in order (``None`` entries are skipped).

    Through a :class:`HookRunner`, each part is isolated: one failing part does not stop the others.
    """
    parts: list[Any] = []
    for h in hooks:
        if h is None:
            continue
        parts.extend(h.parts if isinstance(h, _CombinedHooks) else [h])
    return _CombinedHooks(parts)


def _flatten(hooks: Any) -> list[Any]:
    if hooks is None:
        return []
    if isinstance(hooks, HookRunner):
        return list(hooks.parts)
    if isinstance(hooks, _CombinedHooks):
        return list(hooks.parts)
    if isinstance(hooks, list | tuple):
        out: list[Any] = []
        for h in hooks:
            out.extend(_flatten(h))
        return out
    return [hooks]


def _overrides(obj: Any, name: str) -> bool:
    fn = getattr(obj, name, None)
    if fn is None:
        return False
    base = getattr(Hooks, name, None)
    return getattr(fn, "__func__", fn) is not base


class HookRunner:
    """Calls hooks safely: failures are logged with ids and swallowed, except the ``on_llm_end`` guardrail.

    Accepts a :class:`Hooks`, any object with some ``on_*`` methods, a list of them, or ``None``.
    """

    def __init__(self, hooks: Any = None, *, logger: logging.Logger | None = None) -> None:
        self.parts: list[Any] = _flatten(hooks)
        self._log = logger or log
        self._active: dict[str, list[Any]] = {
            name: [p for p in self.parts if _overrides(p, name)] for name in HOOK_NAMES
        }

    def has(self, name: str) -> bool:
        """Whether any hook overrides ``name``."""
        return bool(self._active.get(name))

    def has_guardrail(self) -> bool:
        """Whether some hook (other than the built-in logging hooks) overrides ``on_llm_end``."""
        return any(not isinstance(p, LoggingHooks) for p in self._active.get("on_llm_end", []))

    async def call(self, name: str, ctx: HookContext, *args: Any) -> None:
        """Call hook ``name`` on every part; a failure is logged and does not propagate."""
        for part in self._active.get(name, ()):
            try:
                out = getattr(part, name)(ctx, *args)
                if inspect.isawaitable(out):
                    await out
            except Exception as exc:
                self._log.warning("hook %s failed (%s): %s: %s", name, ctx.ids(), type(exc).__name__, exc)

    async def llm_end(self, ctx: HookContext, result: LLMResult, timing: Timing) -> None:
        """Call ``on_llm_end``; raises :class:`GuardrailError` if any hook raised."""
        for part in self._active.get("on_llm_end", ()):
            try:
                out = part.on_llm_end(ctx, result, timing)
                if inspect.isawaitable(out):
                    await out
            except GuardrailError:
                self._log.info("guardrail withheld the answer (%s)", ctx.ids())
                raise
            except Exception as exc:
                self._log.info("guardrail withheld the answer (%s): %s", ctx.ids(), exc)
                raise GuardrailError(str(exc) or "the answer was withheld by a guardrail hook") from exc


class LoggingHooks(Hooks):
    """Structured log lines for every hook point (chunks only at DEBUG)."""

    def __init__(self, level: int | str = "info", logger: logging.Logger | None = None) -> None:
        self.level = logging.getLevelName(level.upper()) if isinstance(level, str) else level
        if not isinstance(self.level, int):
            raise ValueError(f"unknown log level {level!r}")
        self.log = logger or logging.getLogger("llmrtc.hooks.logging")

    def _emit(self, ctx: HookContext, msg: str, *args: Any, level: int | None = None) -> None:
        self.log.log(level if level is not None else self.level, "%s " + msg, ctx.ids(), *args)

    def on_connection(self, ctx: HookContext) -> None:
        self._emit(ctx, "connected")

    def on_disconnect(self, ctx: HookContext, timing: Timing) -> None:
        self._emit(ctx, "disconnected after %.0f ms", timing.duration_ms)

    def on_speech_start(self, ctx: HookContext) -> None:
        self._emit(ctx, "speech start")

    def on_speech_end(self, ctx: HookContext, audio_duration_ms: float) -> None:
        self._emit(ctx, "speech end (%.0f ms of audio)", audio_duration_ms)

    def on_turn_start(self, ctx: HookContext) -> None:
        self._emit(ctx, "turn start")

    def on_turn_end(self, ctx: HookContext, timing: Timing) -> None:
        self._emit(ctx, "turn end (%s) in %.0f ms", ctx.metadata.get("outcome", "?"), timing.duration_ms)

    def on_stt_start(self, ctx: HookContext, audio: bytes) -> None:
        self._emit(ctx, "stt start (%d bytes)", len(audio))

    def on_stt_end(self, ctx: HookContext, result: STTResult, timing: Timing) -> None:
        self._emit(ctx, "stt end in %.0f ms (%d chars)", timing.duration_ms, len(result.text))

    def on_stt_error(self, ctx: HookContext, error: Exception) -> None:
        self._emit(ctx, "stt error: %s", error, level=logging.ERROR)

    def on_llm_start(self, ctx: HookContext, request: LLMRequest) -> None:
        self._emit(ctx, "llm start (%d messages, %d tools)", len(request.messages), len(request.tools))

    def on_llm_chunk(self, ctx: HookContext, chunk: LLMChunk, index: int) -> None:
        self._emit(ctx, "llm chunk %d (%d chars)", index, len(chunk.content), level=logging.DEBUG)

    def on_llm_end(self, ctx: HookContext, result: LLMResult, timing: Timing) -> None:
        self._emit(
            ctx,
            "llm end in %.0f ms (%d chars, %d tool calls)",
            timing.duration_ms,
            len(result.full_text),
            len(result.tool_calls),
        )

    def on_llm_error(self, ctx: HookContext, error: Exception) -> None:
        self._emit(ctx, "llm error: %s", error, level=logging.ERROR)

    def on_tts_start(self, ctx: HookContext, text: str) -> None:
        self._emit(ctx, "tts start (%d chars)", len(text))

    def on_tts_chunk(self, ctx: HookContext, chunk: TTSChunk) -> None:
        self._emit(ctx, "tts chunk %.0f ms", chunk.duration_s * 1000, level=logging.DEBUG)

    def on_tts_end(self, ctx: HookContext, timing: Timing) -> None:
        self._emit(ctx, "tts end in %.0f ms", timing.duration_ms)

    def on_tts_error(self, ctx: HookContext, error: Exception) -> None:
        self._emit(ctx, "tts error: %s", error, level=logging.ERROR)

    def on_tool_start(self, ctx: HookContext, call: ToolCallRequest) -> None:
        self._emit(ctx, "tool %s start (call %s)", call.name, call.call_id)

    def on_tool_end(self, ctx: HookContext, result: ToolResult, timing: Timing) -> None:
        self._emit(
            ctx, "tool %s end in %.0f ms (success=%s)", result.tool_name, timing.duration_ms, result.success
        )

    def on_tool_error(self, ctx: HookContext, call: ToolCallRequest, error: Exception) -> None:
        self._emit(ctx, "tool %s error: %s", call.name, error, level=logging.WARNING)

    def on_error(self, ctx: HookContext, error: Exception) -> None:
        code = getattr(error, "code", type(error).__name__)
        self._emit(ctx, "error in %s [%s]: %s", ctx.component or "?", code, error, level=logging.ERROR)


def create_logging_hooks(level: int | str = "info", logger: logging.Logger | None = None) -> LoggingHooks:
    """Hooks that log every stage with ids and timings at ``level`` (errors at ERROR, chunks at DEBUG)."""
    return LoggingHooks(level, logger)


__all__ = [
    "HOOK_NAMES",
    "HookContext",
    "HookRunner",
    "Hooks",
    "LoggingHooks",
    "Stopwatch",
    "Timing",
    "combine_hooks",
    "create_logging_hooks",
]
