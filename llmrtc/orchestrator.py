"""ConversationOrchestrator: one conversation's turns, STT -> LLM (+ tools) -> sentence chunks -> TTS.

A turn is an async iterator of :mod:`llmrtc.events`. The LLM's text is cut into sentences as it streams and
each one is synthesized while the LLM goes on, so the first audio comes long before the answer is complete.

History rules:

- Messages of a turn are recorded only when the turn ends. A completed turn records the user message, every
  tool round (assistant ``tool_calls`` message, then one ``tool`` message per call) and the final answer.
- A failed turn (STT/LLM error, guardrail) records nothing: history is as before the turn.
- An interrupted turn (barge-in) records the user message, the tool rounds whose calls have results, and
  only what was actually spoken, as one assistant message with ``interrupted=True``.
- Multi-person rooms: a user message carries ``name=speaker`` and the words as said (no prefix); providers
  render the name where the vendor API has no name field. ``speaker_labels="prefix"`` instead sends
  ``"[Alice] ..."`` in the content (history keeps the plain words).

Barge-in: close the iterator (``aclose()``, or cancel the task iterating it) and/or call
:meth:`ConversationOrchestrator.interrupt` with what was heard. Without ``spoken_text``, the spoken part is
the text of the TTS segments whose last audio event was delivered to the consumer (the LLM text
delivered, when there is no TTS). ``interrupt`` also works after the iterator ended (audio still playing out).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmrtc.chunking import Chunker, SentenceChunker, as_chunker
from llmrtc.errors import ConfigError, GuardrailError, LLMRTCError, ProviderError
from llmrtc.events import (
    ErrorEvent,
    LLMChunkEvent,
    LLMFinalEvent,
    ToolCallEvent,
    ToolResultEvent,
    TranscriptEvent,
    TTSAudioEvent,
    TTSCompleteEvent,
    TTSStartEvent,
    TurnCompleteEvent,
    TurnEvent,
)
from llmrtc.history import window
from llmrtc.hooks import HookContext, HookRunner, Stopwatch
from llmrtc.metrics import MetricNames, MetricsAdapter, safe_metrics
from llmrtc.providers.base import LLMProvider, STTProvider, ToolCallAccumulator, TTSProvider, VisionProvider
from llmrtc.tools import ToolContext, ToolExecutor, ToolRegistry
from llmrtc.types import (
    LLMRequest,
    LLMResult,
    Message,
    StopReason,
    STTConfig,
    STTResult,
    ToolCallRequest,
    ToolResult,
    TTSChunk,
    TTSConfig,
    Usage,
    VisionAttachment,
    VisionRequest,
)

log = logging.getLogger("llmrtc.orchestrator")

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
    """Settings of a :class:`ConversationOrchestrator`."""

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


@dataclass(slots=True)
class TurnOutcome:
    """Everything a turn produced (the collected form of ``run_*_stream``)."""

    turn_id: str
    transcript: str = ""
    text: str = ""
    events: list[TurnEvent] = field(default_factory=list)
    audio: bytes = b""
    sample_rate: int | None = None
    tool_calls: list[ToolCallRequest] = field(default_factory=list)
    tool_results: list[ToolResult] = field(default_factory=list)
    error: LLMRTCError | None = None
    completed: bool = False

    @property
    def audio_duration_s(self) -> float:
        return len(self.audio) / 2 / self.sample_rate if self.sample_rate else 0.0


class _TurnFailed(Exception):
    def __init__(self, error: LLMRTCError, component: str) -> None:
        super().__init__(error.message)
        self.error = error
        self.component = component


class _End:
    pass


_END = _End()
QueueItem = TurnEvent | _End


@dataclass(slots=True)
class _Turn:
    id: str
    speaker: str | None
    ctx: HookContext
    watch: Stopwatch
    speak: bool
    pending: list[Message] = field(default_factory=list)
    open_calls: list[ToolCallRequest] = field(default_factory=list)
    finished: dict[str, ToolResult] = field(default_factory=dict)
    spoken: list[str] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)
    final_text: str = ""
    outcome: str = "running"
    interrupted: bool = False
    spoken_override: str | None = None
    producer: asyncio.Task[None] | None = None
    first_audio: bool = False

    def consumed(self, event: TurnEvent) -> None:
        if isinstance(event, TTSAudioEvent) and event.last_in_segment:
            self.spoken.append(event.text)
        elif isinstance(event, LLMChunkEvent):
            self.shown.append(event.content)

    def spoken_text(self) -> str:
        if self.spoken_override is not None:
            return self.spoken_override.strip()
        if self.speak:
            return " ".join(s.strip() for s in self.spoken if s.strip())
        return "".join(self.shown).strip()


class _Emitter:
    """Puts events on the turn's queue; holds a round's events until its guardrail passed."""

    def __init__(self, queue: asyncio.Queue[QueueItem], hold: bool) -> None:
        self.queue = queue
        self.hold = hold
        self._held: dict[int, list[TurnEvent]] = {}
        self._released: set[int] = set()
        self._dropped: set[int] = set()

    def emit(self, event: TurnEvent, round_no: int | None = None) -> None:
        if round_no is not None and round_no in self._dropped:
            return
        if self.hold and round_no is not None and round_no not in self._released:
            self._held.setdefault(round_no, []).append(event)
            return
        self.queue.put_nowait(event)

    def release(self, round_no: int) -> None:
        self._released.add(round_no)
        for event in self._held.pop(round_no, []):
            self.queue.put_nowait(event)

    def drop(self, round_no: int) -> None:
        self._dropped.add(round_no)
        self._held.pop(round_no, None)

    def dropped(self, round_no: int) -> bool:
        return round_no in self._dropped


def _as_error(exc: BaseException, component: str, provider: str = "") -> LLMRTCError:
    if isinstance(exc, LLMRTCError):
        return exc
    return ProviderError(f"{component} failed: {type(exc).__name__}: {exc}", provider=provider)


async def _aclose(obj: object) -> None:
    close = getattr(obj, "aclose", None)
    if close is not None:
        with suppress(Exception):
            await close()


class _Speaker:
    """Synthesizes the turn's sentences one after another while the LLM goes on."""

    def __init__(
        self, orch: ConversationOrchestrator, turn: _Turn, tts: TTSProvider, emitter: _Emitter
    ) -> None:
        self._orch = orch
        self._turn = turn
        self._tts = tts
        self._emitter = emitter
        self._queue: asyncio.Queue[tuple[str, int] | None] = asyncio.Queue()
        self._segment = 0
        self.started = False
        self.failed = False
        self._task = asyncio.create_task(self._run(), name=f"tts-{turn.id}")

    def say(self, text: str, round_no: int) -> None:
        if text.strip() and not self.failed:
            self._queue.put_nowait((text.strip(), round_no))

    async def finish(self) -> None:
        """Wait until everything said so far was synthesized."""
        self._queue.put_nowait(None)
        await self._task

    async def aclose(self) -> None:
        if not self._task.done():
            self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            text, round_no = item
            if self.failed or self._emitter.dropped(round_no):
                continue
            await self._speak(text, round_no)

    async def _speak(self, text: str, round_no: int) -> None:
        orch, turn = self._orch, self._turn
        segment = self._segment
        self._segment += 1
        ctx = turn.ctx.child(component="tts")
        await orch.hooks.call("on_tts_start", ctx, text)
        watch = Stopwatch()
        prev: TTSChunk | None = None
        stream = self._tts.speak_stream(text, orch.config.tts)
        try:
            async for chunk in stream:
                if self._emitter.dropped(round_no):
                    return
                if prev is None:
                    orch.metrics.timing(
                        MetricNames.TTS_TTFB, watch.elapsed_ms(), {"provider": self._tts.name}
                    )
                if not self.started:
                    self.started = True
                    self._emitter.emit(TTSStartEvent(turn.id), round_no)
                await orch.hooks.call("on_tts_chunk", ctx, chunk)
                if prev is not None:
                    self._emitter.emit(TTSAudioEvent(turn.id, prev, text, segment, False), round_no)
                elif not turn.first_audio:
                    turn.first_audio = True
                    orch.metrics.timing(MetricNames.TURN_FIRST_AUDIO, turn.watch.elapsed_ms())
                prev = chunk
            if prev is not None:
                self._emitter.emit(TTSAudioEvent(turn.id, prev, text, segment, True), round_no)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = _as_error(exc, "tts", self._tts.name)
            self.failed = True
            log.warning(
                "tts failed (%s): [%s] %s; the rest of the answer is not spoken", ctx.ids(), error.code, error
            )
            orch.metrics.increment(MetricNames.ERRORS, 1, {"component": "tts", "code": error.code})
            await orch.hooks.call("on_tts_error", ctx, error)
            await orch.hooks.call("on_error", ctx, error)
            self._emitter.emit(ErrorEvent(turn.id, error, "tts"))
            return
        finally:
            await _aclose(stream)
        timing = watch.timing()
        orch.metrics.timing(MetricNames.TTS_DURATION, timing.duration_ms, {"provider": self._tts.name})
        await orch.hooks.call("on_tts_end", ctx, timing)


class ConversationOrchestrator:
    """Runs the turns of one conversation (one room) and keeps its history.

    One turn at a time: start the next turn after the previous one ended or was interrupted.
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
        self.providers = providers
        self.config = config or OrchestratorConfig()
        self.session_id = session_id or uuid.uuid4().hex[:12]
        self.hooks = hooks if isinstance(hooks, HookRunner) else HookRunner(hooks)
        self.metrics = safe_metrics(metrics)
        self.tools = (
            tools if tools is not None else (tool_executor.registry if tool_executor else ToolRegistry())
        )
        self.tool_executor = tool_executor or ToolExecutor(self.tools, hooks=self.hooks, metrics=self.metrics)
        self._chunker_spec = chunker
        self._history: list[Message] = []
        self._active: dict[str, _Turn] = {}
        self._recent: OrderedDict[str, list[Message]] = OrderedDict()

    # ------------------------------------------------------------------------------ history

    @property
    def history(self) -> list[Message]:
        """The recorded messages (copies), oldest first; the system prompt is not included."""
        return [m.model_copy(deep=True) for m in self._history]

    def add_context_note(self, text: str) -> None:
        """Record a note the LLM should know (e.g. "Alice joined the room") as a system message."""
        if text.strip():
            self._append([Message.system(text.strip())])

    def reset(self) -> None:
        """Forget the conversation (history and interrupt records)."""
        self._history.clear()
        self._recent.clear()

    def _append(self, messages: list[Message]) -> None:
        self._history.extend(messages)
        excess = len(self._history) - self.config.max_stored_messages
        if excess > 0:
            self._history = window(self._history, self.config.max_stored_messages)

    def _messages_for(self, turn: _Turn) -> list[Message]:
        out = [Message.system(self.config.system_prompt)] if self.config.system_prompt else []
        out.extend(window(self._history, self.config.history_limit))
        out.extend(turn.pending)
        if self.config.speaker_labels == "prefix":
            out = [
                m.model_copy(update={"content": f"[{m.name}] {m.content}", "name": None})
                if m.role == "user" and m.name
                else m
                for m in out
            ]
        return out

    # ------------------------------------------------------------------------------ public turns

    def run_turn_stream(
        self,
        audio: bytes,
        attachments: Sequence[VisionAttachment] | None = None,
        *,
        speaker: str | None = None,
        turn_id: str | None = None,
    ) -> AsyncGenerator[TurnEvent, None]:
        """One spoken turn: ``audio`` is the WAV of one utterance. Yields the turn's events."""
        return self._stream(audio, None, attachments, speaker, turn_id, None)

    def run_text_turn_stream(
        self,
        text: str,
        attachments: Sequence[VisionAttachment] | None = None,
        *,
        speaker: str | None = None,
        turn_id: str | None = None,
        speak: bool | None = None,
    ) -> AsyncGenerator[TurnEvent, None]:
        """One typed turn; spoken too when a TTS provider is set (``speak=False`` to only write)."""
        return self._stream(None, text, attachments, speaker, turn_id, speak)

    async def run_turn(
        self,
        audio: bytes,
        attachments: Sequence[VisionAttachment] | None = None,
        *,
        speaker: str | None = None,
        turn_id: str | None = None,
    ) -> TurnOutcome:
        """:meth:`run_turn_stream`, collected."""
        return await self._collect(self.run_turn_stream(audio, attachments, speaker=speaker, turn_id=turn_id))

    async def run_text_turn(
        self,
        text: str,
        attachments: Sequence[VisionAttachment] | None = None,
        *,
        speaker: str | None = None,
        turn_id: str | None = None,
        speak: bool | None = None,
    ) -> TurnOutcome:
        """:meth:`run_text_turn_stream`, collected."""
        return await self._collect(
            self.run_text_turn_stream(text, attachments, speaker=speaker, turn_id=turn_id, speak=speak)
        )

    def interrupt(self, turn_id: str, spoken_text: str | None = None) -> bool:
        """Barge-in: stop turn ``turn_id`` (if running) and record only ``spoken_text`` as its answer.

        Works on the running turn and on a recently finished one (its audio may still be playing out). With
        ``spoken_text=None`` a running turn records the segments the consumer fully took. Returns whether
        a turn was found.
        """
        turn = self._active.get(turn_id)
        if turn is not None:
            turn.interrupted = True
            if spoken_text is not None:
                turn.spoken_override = spoken_text
            if turn.producer is not None and not turn.producer.done():
                turn.producer.cancel()
            return True
        messages = self._recent.get(turn_id)
        if messages is None:
            return False
        self._amend_interrupted(messages, spoken_text)
        return True

    # ------------------------------------------------------------------------------ the turn

    async def _collect(self, events: AsyncIterator[TurnEvent]) -> TurnOutcome:
        outcome: TurnOutcome | None = None
        audio = bytearray()
        async for event in events:
            if outcome is None:
                outcome = TurnOutcome(turn_id=event.turn_id)
            outcome.events.append(event)
            if isinstance(event, TranscriptEvent):
                outcome.transcript = event.result.text
            elif isinstance(event, LLMFinalEvent):
                outcome.text = event.result.full_text
            elif isinstance(event, TTSAudioEvent):
                audio.extend(event.chunk.pcm)
                outcome.sample_rate = event.chunk.sample_rate
            elif isinstance(event, ToolCallEvent):
                outcome.tool_calls.append(event.call)
            elif isinstance(event, ToolResultEvent):
                outcome.tool_results.append(event.result)
            elif isinstance(event, ErrorEvent) and outcome.error is None and event.component != "tts":
                outcome.error = event.error
            elif isinstance(event, TurnCompleteEvent):
                outcome.completed = True
        if outcome is None:  # pragma: no cover - every turn yields at least one event
            raise RuntimeError("turn produced no events")
        outcome.audio = bytes(audio)
        return outcome

    async def _stream(
        self,
        audio: bytes | None,
        text: str | None,
        attachments: Sequence[VisionAttachment] | None,
        speaker: str | None,
        turn_id: str | None,
        speak: bool | None,
    ) -> AsyncGenerator[TurnEvent, None]:
        tid = turn_id or uuid.uuid4().hex[:12]
        if tid in self._active:
            raise ConfigError(f"turn {tid!r} is already running")
        want_speech = self.providers.tts is not None and (speak is None or speak)
        turn = _Turn(
            id=tid,
            speaker=speaker,
            ctx=HookContext(session_id=self.session_id, turn_id=tid, participant=speaker),
            watch=Stopwatch(),
            speak=want_speech,
        )
        self._active[tid] = turn
        queue: asyncio.Queue[QueueItem] = asyncio.Queue()
        self.metrics.increment(MetricNames.TURNS)
        await self.hooks.call("on_turn_start", turn.ctx)
        try:
            if audio is not None:
                if not audio:
                    result = STTResult(text="")
                else:
                    result = await self._transcribe(turn, audio)
            else:
                result = STTResult(text=text or "")
            yield TranscriptEvent(tid, result, speaker)
            if not result.text.strip():
                log.info("empty transcript, no LLM call (%s)", turn.ctx.ids())
                turn.outcome = "empty"
                yield TurnCompleteEvent(tid, "", {"empty_transcript": True})
                return
            turn.pending.append(await self._user_message(turn, result.text, attachments))
            if turn.interrupted:
                return
            turn.producer = asyncio.create_task(self._produce(turn, queue), name=f"turn-{tid}")
            while True:
                event = await queue.get()
                if isinstance(event, _End) or turn.interrupted:
                    break
                if isinstance(event, TurnCompleteEvent):
                    self._finish(turn, "completed")
                turn.consumed(event)  # delivered to the consumer: counts as taken
                yield event
        except _TurnFailed as failed:
            turn.outcome = "error"
            yield ErrorEvent(tid, failed.error, failed.component)
        finally:
            producer = turn.producer
            if producer is not None and not producer.done():
                producer.cancel()
            if producer is not None:
                await asyncio.gather(producer, return_exceptions=True)
            if turn.outcome == "running":
                self._finish(turn, "interrupted")
            self._active.pop(tid, None)
            timing = turn.watch.timing()
            self.metrics.timing(MetricNames.TURN_DURATION, timing.duration_ms, {"outcome": turn.outcome})
            await self.hooks.call("on_turn_end", turn.ctx.child(metadata={"outcome": turn.outcome}), timing)

    async def _fail(self, turn: _Turn, exc: BaseException, component: str, provider: str = "") -> _TurnFailed:
        error = _as_error(exc, component, provider)
        ctx = turn.ctx.child(component=component)
        log.warning("%s failed (%s): [%s] %s", component, ctx.ids(), error.code, error)
        self.metrics.increment(MetricNames.ERRORS, 1, {"component": component, "code": error.code})
        if not isinstance(error, GuardrailError):
            await self.hooks.call(f"on_{component}_error", ctx, error)
        await self.hooks.call("on_error", ctx, error)
        return _TurnFailed(error, component)

    async def _transcribe(self, turn: _Turn, audio: bytes) -> STTResult:
        stt = self.providers.stt
        if stt is None:
            raise await self._fail(turn, ConfigError("an audio turn needs an STT provider"), "stt")
        ctx = turn.ctx.child(component="stt")
        await self.hooks.call("on_stt_start", ctx, audio)
        watch = Stopwatch()
        try:
            result = await stt.transcribe(audio, self.config.stt)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise await self._fail(turn, exc, "stt", stt.name) from exc
        timing = watch.timing()
        self.metrics.timing(MetricNames.STT_DURATION, timing.duration_ms, {"provider": stt.name})
        await self.hooks.call("on_stt_end", ctx, result, timing)
        return result

    async def _user_message(
        self, turn: _Turn, text: str, attachments: Sequence[VisionAttachment] | None
    ) -> Message:
        try:
            images = [
                a if isinstance(a, VisionAttachment) else VisionAttachment.model_validate(a)
                for a in attachments or []
            ]
        except ValidationError as exc:
            reason = exc.errors()[0].get("msg", "invalid")
            bad = LLMRTCError(f"invalid attachment: {reason}", code="invalid_attachment")
            raise await self._fail(turn, bad, "vision") from exc
        if images and not self.providers.llm.capabilities.vision:
            vision = self.providers.vision
            if vision is None:
                log.warning(
                    "dropping %d attachment(s): the LLM cannot see images and no vision provider is set (%s)",
                    len(images),
                    turn.ctx.ids(),
                )
            else:
                try:
                    described = await vision.describe(
                        VisionRequest(prompt=self.config.vision_prompt, attachments=images)
                    )
                    text = f"{text}\n\n[Attached image: {described.description}]"
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    error = _as_error(exc, "vision", vision.name)
                    log.warning("vision failed (%s): %s; going on without the image", turn.ctx.ids(), error)
                    self.metrics.increment(MetricNames.ERRORS, 1, {"component": "vision", "code": error.code})
                    await self.hooks.call("on_error", turn.ctx.child(component="vision"), error)
            images = []
        return Message.user(text, name=turn.speaker, attachments=images)

    def _new_chunker(self) -> Chunker:
        spec = self._chunker_spec
        if spec is None:
            return SentenceChunker()
        chunker = as_chunker(spec)
        reset = getattr(chunker, "reset", None)
        if callable(reset):
            reset()
        else:
            chunker.flush()
        return chunker

    def _hold(self) -> bool:
        if self.config.hold_output_for_guardrail is not None:
            return self.config.hold_output_for_guardrail
        return self.hooks.has_guardrail()

    async def _produce(self, turn: _Turn, queue: asyncio.Queue[QueueItem]) -> None:
        emitter = _Emitter(queue, self._hold())
        speaker = (
            _Speaker(self, turn, self.providers.tts, emitter) if turn.speak and self.providers.tts else None
        )
        tools = self.tools.definitions() if len(self.tools) else []
        rounds = self.config.max_tool_rounds
        try:
            final: LLMResult | None = None
            for round_no in range(rounds + 1):
                allow_tools = bool(tools) and round_no < rounds
                request = LLMRequest(
                    messages=self._messages_for(turn),
                    temperature=self.config.temperature,
                    top_p=self.config.top_p,
                    max_tokens=self.config.max_tokens,
                    model=self.config.model,
                    tools=tools,
                    tool_choice="auto" if allow_tools or not tools else "none",
                    metadata={"session_id": self.session_id, "turn_id": turn.id, "round": round_no},
                )
                result = await self._llm_round(turn, request, round_no, speaker, emitter)
                if not (result.tool_calls and allow_tools):
                    if result.tool_calls:
                        log.warning("ignoring tool calls after the tool-round limit (%s)", turn.ctx.ids())
                        result = result.model_copy(update={"tool_calls": [], "stop_reason": "end_turn"})
                    final = result
                    break
                await self._run_tools(turn, result, emitter)
            assert final is not None
            turn.final_text = final.full_text
            emitter.emit(LLMFinalEvent(turn.id, final))
            if speaker is not None:
                await speaker.finish()
                if speaker.started:
                    emitter.emit(TTSCompleteEvent(turn.id))
            emitter.emit(TurnCompleteEvent(turn.id, final.full_text, {"tool_rounds": round_no}))
        except _TurnFailed as failed:
            turn.outcome = "error"
            emitter.emit(ErrorEvent(turn.id, failed.error, failed.component))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or an unexpected provider failure: fail the turn, never crash
            log.exception("turn failed unexpectedly (%s)", turn.ctx.ids())
            turn.outcome = "error"
            unexpected = await self._fail(turn, exc, "orchestrator")
            emitter.emit(ErrorEvent(turn.id, unexpected.error, unexpected.component))
        finally:
            if speaker is not None:
                await speaker.aclose()
            queue.put_nowait(_END)

    async def _llm_round(
        self,
        turn: _Turn,
        request: LLMRequest,
        round_no: int,
        speaker: _Speaker | None,
        emitter: _Emitter,
    ) -> LLMResult:
        llm = self.providers.llm
        ctx = turn.ctx.child(component="llm")
        await self.hooks.call("on_llm_start", ctx, request)
        chunker = self._new_chunker() if speaker is not None and self.config.streaming_tts else None
        watch = Stopwatch()
        parts: list[str] = []
        calls: list[ToolCallRequest] = []
        stop: StopReason | None = None
        usage: Usage | None = None
        accumulator = ToolCallAccumulator(llm.name)
        index = 0
        first = True
        stream = llm.stream(request)
        try:
            async for chunk in stream:
                if first:
                    first = False
                    self.metrics.timing(MetricNames.LLM_TTFT, watch.elapsed_ms(), {"provider": llm.name})
                for delta in chunk.tool_call_deltas:
                    accumulator.add(delta)
                if chunk.content:
                    parts.append(chunk.content)
                    emitter.emit(LLMChunkEvent(turn.id, chunk.content), round_no)
                    if chunker is not None and speaker is not None:
                        for piece in chunker.push(chunk.content):
                            speaker.say(piece, round_no)
                if chunk.content or chunk.done:
                    await self.hooks.call("on_llm_chunk", ctx, chunk, index)
                    index += 1
                if chunk.done:
                    calls = list(chunk.tool_calls) or (accumulator.calls() if accumulator else [])
                    stop = chunk.stop_reason
                    usage = chunk.usage
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            emitter.drop(round_no)
            raise await self._fail(turn, exc, "llm", llm.name) from exc
        finally:
            await _aclose(stream)
        text = "".join(parts)
        if speaker is not None:
            pieces = chunker.flush() if chunker is not None else ([text] if text.strip() else [])
            for piece in pieces:
                speaker.say(piece, round_no)
        result = LLMResult(
            full_text=text,
            tool_calls=calls,
            stop_reason=stop or ("tool_use" if calls else "end_turn"),
            usage=usage,
        )
        timing = watch.timing()
        self.metrics.timing(MetricNames.LLM_DURATION, timing.duration_ms, {"provider": llm.name})
        try:
            await self.hooks.llm_end(ctx, result, timing)
        except GuardrailError as exc:
            emitter.drop(round_no)
            raise await self._fail(turn, exc, "llm") from exc
        emitter.release(round_no)
        return result

    async def _run_tools(self, turn: _Turn, result: LLMResult, emitter: _Emitter) -> None:
        calls = result.tool_calls
        turn.pending.append(Message.assistant(result.full_text, tool_calls=calls))
        turn.open_calls = list(calls)
        turn.finished = {}
        for call in calls:
            emitter.emit(ToolCallEvent(turn.id, call))

        def on_result(res: ToolResult) -> None:
            turn.finished[res.call_id] = res

        context = ToolContext(session_id=self.session_id, turn_id=turn.id, metadata={"speaker": turn.speaker})
        results = await self.tool_executor.execute(calls, context, on_result=on_result)
        turn.open_calls = []
        for res in results:
            emitter.emit(ToolResultEvent(turn.id, res))
            turn.pending.append(
                Message.tool(res.content_for_llm(), tool_call_id=res.call_id, tool_name=res.tool_name)
            )

    # ------------------------------------------------------------------------------ recording

    def _finish(self, turn: _Turn, outcome: str) -> None:
        turn.outcome = outcome
        messages = list(turn.pending)
        if outcome == "completed":
            if turn.final_text.strip():
                messages.append(Message.assistant(turn.final_text))
        else:
            self.metrics.increment(MetricNames.INTERRUPTIONS)
            if turn.open_calls and messages and messages[-1].tool_calls:
                done = [c for c in turn.open_calls if c.call_id in turn.finished]
                messages.pop()
                if done:
                    messages.append(Message.assistant("", tool_calls=done))
                    for call in done:
                        res = turn.finished[call.call_id]
                        messages.append(
                            Message.tool(
                                res.content_for_llm(), tool_call_id=res.call_id, tool_name=res.tool_name
                            )
                        )
            # What was spoken across all rounds goes into one interrupted message.
            messages = [m.model_copy(update={"content": ""}) if m.tool_calls else m for m in messages]
            spoken = turn.spoken_text()
            if spoken:
                messages.append(Message.assistant(spoken, interrupted=True))
            log.info("turn interrupted (%s): recorded %d spoken chars", turn.ctx.ids(), len(spoken))
        self._append(messages)
        self._recent[turn.id] = messages
        while len(self._recent) > 32:
            self._recent.popitem(last=False)

    def _amend_interrupted(self, messages: list[Message], spoken_text: str | None) -> None:
        present = [m for m in messages if any(m is h for h in self._history)]
        if not present:
            return
        final = next((m for m in reversed(present) if m.role == "assistant" and not m.tool_calls), None)
        if spoken_text is None:
            if final is not None:
                final.interrupted = True
            return
        spoken = spoken_text.strip()
        for m in present:
            if m.role == "assistant" and m.tool_calls:
                m.content = ""
        if final is not None:
            if spoken:
                final.content = spoken
                final.interrupted = True
            else:
                self._history = [h for h in self._history if h is not final]
                messages.remove(final)
        elif spoken:
            last = present[-1]
            at = next(i for i, h in enumerate(self._history) if h is last) + 1
            added = Message.assistant(spoken, interrupted=True)
            self._history.insert(at, added)
            messages.append(added)


__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "ConversationOrchestrator",
    "ConversationProviders",
    "OrchestratorConfig",
    "TurnOutcome",
]
