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

The turn lifecycle and the public turn API are :class:`llmrtc.voice_base.VoiceOrchestratorBase`'s, shared
with the playbook voice orchestrator; this module adds the LLM rounds, tools and history rules. The speech
steps (STT, user message with vision, sentence-chunked streaming TTS) are
:class:`llmrtc.speech.SpeechPipeline`'s; the turn plumbing (event queue, guardrail hold, barge-in
bookkeeping) is :mod:`llmrtc.turns`. All three are public, for writing other orchestrators.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmrtc.chunking import Chunker
from llmrtc.errors import ConfigError, GuardrailError
from llmrtc.events import (
    LLMChunkEvent,
    LLMFinalEvent,
    ToolCallEvent,
    ToolResultEvent,
    TTSCompleteEvent,
    TurnCompleteEvent,
)
from llmrtc.history import restored_history, window
from llmrtc.hooks import Stopwatch
from llmrtc.metrics import MetricNames, MetricsAdapter
from llmrtc.providers.base import LLMProvider, STTProvider, ToolCallAccumulator, TTSProvider, VisionProvider
from llmrtc.speech import StreamingSpeaker
from llmrtc.tools import ToolContext, ToolExecutor, ToolRegistry
from llmrtc.turns import SpeechTurn, TurnEmitter, TurnOutcome, aclose_quietly
from llmrtc.types import (
    LLMRequest,
    LLMResult,
    Message,
    StopReason,
    STTConfig,
    ToolCallRequest,
    ToolResult,
    TTSConfig,
    Usage,
)
from llmrtc.voice_base import VoiceOrchestratorBase

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
class _Turn(SpeechTurn):
    """A conversation turn: the speech turn plus its tool rounds (``pending``), recorded when the turn ends."""

    pending: list[Message] = field(default_factory=list)
    open_calls: list[ToolCallRequest] = field(default_factory=list)
    finished: dict[str, ToolResult] = field(default_factory=dict)

    def recorded(self) -> list[Message]:
        """The turn's messages so far: the user message, then the tool rounds."""
        return ([self.message] if self.message is not None else []) + self.pending


class ConversationOrchestrator(VoiceOrchestratorBase[_Turn]):
    """Runs the turns of one conversation (one room) and keeps its history.

    One turn at a time: start the next turn after the previous one ended or was interrupted. The turn API
    (``run_turn_stream``, ``run_text_turn_stream``, ``run_turn``, ``run_text_turn``, ``interrupt``,
    ``load_history``) is :class:`~llmrtc.voice_base.VoiceOrchestratorBase`'s.
    """

    _logger = log

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
        super().__init__(
            providers,
            self.config,
            turn_type=_Turn,
            hooks=hooks,
            metrics=metrics,
            chunker=chunker,
            session_id=session_id,
        )
        self.tools = (
            tools if tools is not None else (tool_executor.registry if tool_executor else ToolRegistry())
        )
        self.tool_executor = tool_executor or ToolExecutor(self.tools, hooks=self.hooks, metrics=self.metrics)
        self._history: list[Message] = []
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

    def _replace_history(self, messages: Sequence[Message]) -> None:
        """At most ``max_stored_messages`` are kept (see :func:`llmrtc.history.restored_history`)."""
        self._history = restored_history(
            messages, self.config.max_stored_messages, session_id=self.session_id
        )
        self._recent.clear()

    def _append(self, messages: list[Message]) -> None:
        self._history.extend(messages)
        excess = len(self._history) - self.config.max_stored_messages
        if excess > 0:
            self._history = window(self._history, self.config.max_stored_messages)

    def _messages_for(self, turn: _Turn) -> list[Message]:
        out = [Message.system(self.config.system_prompt)] if self.config.system_prompt else []
        out.extend(window(self._history, self.config.history_limit))
        out.extend(turn.recorded())
        if self.config.speaker_labels == "prefix":
            out = [
                m.model_copy(update={"content": f"[{m.name}] {m.content}", "name": None})
                if m.role == "user" and m.name
                else m
                for m in out
            ]
        return out

    # ------------------------------------------------------------------------------ the turn

    async def _produce(
        self, turn: _Turn, message: Message, emitter: TurnEmitter, speaker: StreamingSpeaker | None
    ) -> None:
        """The LLM rounds (``message`` is ``turn.message``), tools between them, then the final answer."""
        tools = self.tools.definitions() if len(self.tools) else []
        rounds = self.config.max_tool_rounds
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

    async def _llm_round(
        self,
        turn: _Turn,
        request: LLMRequest,
        round_no: int,
        speaker: StreamingSpeaker | None,
        emitter: TurnEmitter,
    ) -> LLMResult:
        llm = self.providers.llm
        ctx = turn.ctx.child(component="llm")
        await self.hooks.call("on_llm_start", ctx, request)
        chunker = self.speech.stream_chunker(speaker)
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
            raise await self.speech.fail(turn, exc, "llm", llm.name) from exc
        finally:
            await aclose_quietly(stream)
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
            raise await self.speech.fail(turn, exc, "llm") from exc
        emitter.release(round_no)
        return result

    async def _run_tools(self, turn: _Turn, result: LLMResult, emitter: TurnEmitter) -> None:
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

    def _on_complete(self, turn: _Turn) -> None:
        self._finish(turn, "completed")

    def _settle(self, turn: _Turn) -> None:
        if turn.outcome == "running":
            self._finish(turn, "interrupted")

    def _interrupt_finished(self, turn_id: str, spoken_text: str | None) -> bool:
        messages = self._recent.get(turn_id)
        if messages is None:
            return False
        self._amend_interrupted(messages, spoken_text)
        return True

    def _finish(self, turn: _Turn, outcome: str) -> None:
        turn.outcome = outcome
        messages = turn.recorded()
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
