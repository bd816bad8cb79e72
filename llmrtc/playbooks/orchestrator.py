"""PlaybookOrchestrator: text turns through a playbook, with two-phase execution.

A turn in a ``two_phase`` stage runs in two phases:

1. **Tool loop** (silent): the LLM is asked with the stage's tools (``complete``, not streamed); while it
   asks for tools they run and their results go back to it, up to ``max_tool_calls_per_turn`` calls and
   ``phase1_timeout_s`` seconds. The loop ends when the LLM answers without tools, asks for a stage change
   (``playbook_transition``), or a limit is hit. Its text is not shown: it was written before the facts.
2. **Answer** (streamed): the LLM writes the user-facing answer with the same tools visible and
   ``tool_choice="none"``.

Phase 1 is skipped when the stage offers no tools. A stage with ``two_phase=False`` streams every round and
runs tools between rounds (its text is shown as it comes). After the answer the turn is counted, transitions
are evaluated (assistant text, every tool call and result, the LLM's decision) and at most one fires.

**One engine.** This class is the turn engine of every llmrtc conversation: a plain assistant
(:class:`~llmrtc.orchestrator.ConversationOrchestrator`) is a one-stage playbook run by it, and the voice
orchestrators put speech around it. History, the tool loop, guardrails, hooks, metrics and recording live
here once. Retries live in the providers only (``PROVIDER_MAX_RETRIES``); this engine never retries a call,
so a failing provider gets at most ``1 + max_retries`` requests per call.

**When a turn commits.** A turn is recorded, counted, its transitions evaluated and its stage changed only
when it *commits*: at once for text turns, and for spoken turns only after ``before_commit`` returned (the
voice orchestrator waits there until the answer was heard to the end). A turn cut before that records what
was heard, marked ``interrupted``, and changes no stage.

**Guardrails.** ``on_llm_end`` runs after every streamed round, tool rounds included; a hook raising
:class:`~llmrtc.errors.GuardrailError` fails the turn before that round's text is released.

**What stays in the history when a turn ends early.** On cancellation (barge-in), phase-1 timeout or an
error, the history keeps the user's message and each tool call that *completed*, with its result; calls that
were cancelled or never ran are left out, so no tool call is ever without its result. An answer is kept only
when it was complete, or, when cancelled while streaming, as what was streamed so far (or what
:meth:`interrupt` says was spoken) marked ``interrupted``. Turns that end early are not counted and evaluate no
transitions: the stage does not change on half a turn.

**Images.** A tool whose result is a :class:`~llmrtc.vision.ToolImage` (the ``look`` tool) gets its text in
the ``tool`` message and its images in one user message after the round's tool messages
(:func:`~llmrtc.vision.tool_messages`). Images serve only the turn that has them: when a turn is recorded
(completed or cut), every attachment, the user's own included, is replaced by a short note
(:func:`~llmrtc.vision.forget_images`), so history never keeps image bytes.

**Running tools and interruption.** Each tool's ``ToolDefinition.interruption`` decides what cancellation
does to a running call: ``"cancel"`` (default) cancels it, its result is lost and the call is left out of the
history; ``"finish"`` lets it complete (the cancellation waits for it) and its result is recorded. Use
``"finish"`` for tools with side effects that must not be cut half-way (payments, bookings).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from llmrtc.deadlines import NO_DEADLINES, Deadlines
from llmrtc.errors import (
    ConfigError,
    GuardrailError,
    LLMRTCError,
    PlaybookError,
    ProviderError,
    ProviderResponseError,
)
from llmrtc.events import (
    ErrorEvent,
    LLMChunkEvent,
    LLMFinalEvent,
    StageChangeEvent,
    ToolCallEvent,
    ToolResultEvent,
    TurnCompleteEvent,
    TurnEvent,
)
from llmrtc.history import restored_history, window
from llmrtc.hooks import HookContext, HookRunner, Stopwatch
from llmrtc.metrics import MetricNames, MetricsAdapter, safe_metrics
from llmrtc.playbooks.conditions import LLMDecision
from llmrtc.playbooks.engine import PlaybookEngine
from llmrtc.playbooks.hooks import PlaybookHooks, PlaybookMetricsHooks
from llmrtc.playbooks.types import TRANSITION_TOOL_NAME, Playbook, Stage, Transition
from llmrtc.providers.base import LLMProvider, ToolCallAccumulator
from llmrtc.tools import ToolContext, ToolExecutor, ToolRegistry
from llmrtc.types import (
    LLMRequest,
    LLMResult,
    Message,
    ToolCallRequest,
    ToolChoice,
    ToolResult,
    Usage,
    VisionAttachment,
)
from llmrtc.vision import forget_images, tool_messages

log = logging.getLogger("llmrtc.playbooks")


BeforeCommit = Callable[[], Awaitable[None]]
"""Awaited after a turn's answer is complete and before it commits (the voice layer waits for playout)."""


@dataclass(slots=True)
class PlaybookTurnResult:
    """What :meth:`PlaybookOrchestrator.execute_turn` returns."""

    turn_id: str
    response: str
    tool_calls: list[ToolCallRequest] = field(default_factory=list)
    tool_results: list[ToolResult] = field(default_factory=list)
    transitioned: bool = False
    transition: Transition | None = None
    from_stage: str = ""
    stage: str = ""
    phase1_timed_out: bool = False
    usage: Usage | None = None


@dataclass(slots=True)
class _Turn:
    """The working state of one turn, committed to the history at its end."""

    turn_id: str
    user: Message
    exchange: list[Message] = field(default_factory=list)
    calls: list[ToolCallRequest] = field(default_factory=list)
    results: list[ToolResult] = field(default_factory=list)
    decision: LLMDecision | None = None
    streamed: str = ""
    phase: int = 1
    phase1_timed_out: bool = False
    usage: Usage | None = None
    committed: bool = False
    answer: str = ""
    rounds: int = 0


class PlaybookOrchestrator:
    """Runs text turns of one conversation through a playbook.

    ``registry`` holds the tools the playbook names; ``executor`` (optional) runs them (default: a
    :class:`~llmrtc.tools.ToolExecutor` on ``registry`` with ``tool_timeout_s``). ``history_limit`` is how
    many past messages the LLM sees (0: none; tool exchanges are never split); ``max_stored_messages`` how
    many are kept in memory. ``max_tool_calls_per_turn`` and ``max_tool_rounds`` bound the tool loop (after
    the last round the LLM is asked once more without tools). ``speaker_labels="prefix"`` sends
    ``"[Alice] ..."`` instead of the message's ``name``. ``hooks`` are :class:`~llmrtc.hooks.Hooks` (LLM and
    tool hook points, guardrails); ``playbook_hooks`` observe stages and turns; with ``metrics``, playbook
    metrics are recorded too.
    """

    def __init__(
        self,
        llm: LLMProvider,
        playbook: Playbook | PlaybookEngine,
        registry: ToolRegistry | None = None,
        *,
        max_tool_calls_per_turn: int = 10,
        max_tool_rounds: int = 5,
        phase1_timeout_s: float = 60.0,
        history_limit: int = 40,
        max_stored_messages: int = 200,
        tool_timeout_s: float = 30.0,
        executor: ToolExecutor | None = None,
        hooks: Any = None,
        playbook_hooks: Sequence[PlaybookHooks] = (),
        metrics: MetricsAdapter | None = None,
        session_id: str | None = None,
        speaker_labels: str = "name",
        deadlines: Deadlines | None = None,
    ) -> None:
        if max_tool_calls_per_turn < 0:
            raise ValueError("max_tool_calls_per_turn must be >= 0")
        if max_tool_rounds < 0:
            raise ValueError("max_tool_rounds must be >= 0")
        if history_limit < 0 or max_stored_messages < 1:
            raise ValueError("history_limit must be >= 0 and max_stored_messages >= 1")
        if speaker_labels not in ("name", "prefix"):
            raise ValueError("speaker_labels must be 'name' or 'prefix'")
        if phase1_timeout_s <= 0:
            raise ValueError("phase1_timeout_s must be positive")
        self.llm = llm
        self.registry = registry if registry is not None else ToolRegistry()
        self.session_id = session_id or uuid.uuid4().hex[:12]
        all_hooks = list(playbook_hooks)
        if metrics is not None:
            all_hooks.append(PlaybookMetricsHooks(metrics))
        if isinstance(playbook, PlaybookEngine):
            self.engine = playbook
            if self.engine.registry is None:
                self.engine.registry = self.registry
            for h in all_hooks:
                self.engine.hooks.add(h)
        else:
            self.engine = PlaybookEngine(
                playbook, registry=self.registry, hooks=all_hooks, session_id=self.session_id
            )
        self.hooks = hooks if isinstance(hooks, HookRunner) else HookRunner(hooks)
        self.metrics = safe_metrics(metrics)
        self.executor = executor or ToolExecutor(
            self.registry, timeout_s=tool_timeout_s, hooks=self.hooks, metrics=metrics
        )
        self.max_tool_calls_per_turn = max_tool_calls_per_turn
        self.max_tool_rounds = max_tool_rounds
        self.phase1_timeout_s = phase1_timeout_s
        self.history_limit = history_limit
        self.max_stored_messages = max_stored_messages
        self.speaker_labels = speaker_labels
        self.deadlines = deadlines or NO_DEADLINES
        """LLM deadlines (:mod:`llmrtc.deadlines`): a missed one fails the turn with ``ProviderTimeoutError``."""
        self._history: list[Message] = []
        self._answers: OrderedDict[str, Message] = OrderedDict()
        self._tails: OrderedDict[str, Message] = OrderedDict()
        self._round_texts: OrderedDict[str, list[str]] = OrderedDict()
        """Per recent turn: the text of its tool rounds, which their assistant messages hold."""
        self._spoken: dict[str, str] = {}
        self._running: str | None = None
        self._discarded: set[str] = set()
        self._tool_gates: dict[str, Callable[[], Awaitable[None]]] = {}
        self._results: dict[str, PlaybookTurnResult] = {}
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------------------------------ public

    @property
    def history(self) -> list[Message]:
        """The conversation so far (without the system prompt), oldest first."""
        return list(self._history)

    @property
    def playbook(self) -> Playbook:
        return self.engine.playbook

    def get_engine(self) -> PlaybookEngine:
        return self.engine

    @property
    def current_stage(self) -> Stage:
        return self.engine.current_stage

    def add_context_note(self, text: str) -> None:
        """Add a note the LLM sees from now on (a system message in the history), e.g. who joined the room."""
        if text.strip():
            self._append([Message.system(text.strip())])

    def clear_history(self) -> None:
        """Forget the conversation (the playbook state is kept; see ``engine.reset``)."""
        self._history.clear()
        self._answers.clear()
        self._tails.clear()
        self._round_texts.clear()

    def load_history(self, messages: Sequence[Message]) -> None:
        """Replace the history with ``messages`` (e.g. a stored session's), oldest first, no system prompt.

        The messages are copied, at most ``max_stored_messages`` are kept, and broken tool exchanges are
        dropped (see :func:`llmrtc.history.restored_history`). Interrupt records of earlier turns are forgotten; the
        playbook state is not touched (see :meth:`restore`). Raises :class:`~llmrtc.errors.ConfigError`
        while a turn runs or when an item is not a message.
        """
        self._refuse_while_running("load_history")
        self._history = restored_history(messages, self.max_stored_messages, session_id=self.session_id)
        self._answers.clear()
        self._tails.clear()
        self._round_texts.clear()
        self._spoken.clear()

    def snapshot(self) -> dict[str, Any]:
        """The playbook engine's state as JSON-safe data: :meth:`PlaybookEngine.snapshot`."""
        return self.engine.snapshot()

    def restore(self, data: dict[str, Any]) -> None:
        """Continue the playbook from a :meth:`snapshot` without re-entering its stage:
        :meth:`PlaybookEngine.restore` (:class:`~llmrtc.errors.PlaybookError` for a bad snapshot).
        Raises :class:`~llmrtc.errors.ConfigError` while a turn runs."""
        self._refuse_while_running("restore")
        self.engine.restore(data)

    def _refuse_while_running(self, what: str) -> None:
        if self._running is not None or self._lock.locked():
            raise ConfigError(f"{what} cannot run while a turn is running")

    def interrupt(self, turn_id: str, spoken_text: str | None = None) -> bool:
        """Barge-in: the answer of ``turn_id`` was cut after ``spoken_text``; the history keeps only that.

        For the running turn, the text is used when the (cancelled) turn is recorded: cancelling the task
        that iterates :meth:`stream_turn` is the caller's job. For a recent finished turn, its answer is
        rewritten and marked ``interrupted`` (removed when ``spoken_text`` is empty; only marked when it is
        ``None``). Returns whether the turn was found.
        """
        if turn_id == self._running:
            if spoken_text is not None:
                self._spoken[turn_id] = spoken_text
            return True
        if turn_id in self._answers:
            self._rewrite_answer(turn_id, spoken_text)
            return True
        tail = self._tails.get(turn_id)
        if tail is None:
            return False
        heard = self._answer_part(turn_id, spoken_text or "")
        if heard:  # the turn recorded no answer: add what was heard after its tool rounds
            answer = Message.assistant(heard, interrupted=True)
            at = next((i + 1 for i, m in enumerate(self._history) if m is tail), len(self._history))
            self._history.insert(at, answer)
            self._answers[turn_id] = answer
        return True

    def discard(self, turn_id: str) -> bool:
        """Preemptive generation: the running turn ``turn_id`` is about to be cancelled before anything of it
        was heard (the user went on speaking); when it ends, nothing of it is recorded, not even the user's
        message. A turn not started yet is discarded when it runs; a finished one cannot be. Returns whether
        ``turn_id`` is running."""
        if turn_id in self._tails:
            return False
        self._discarded.add(turn_id)
        return turn_id == self._running

    def gate_tools(self, turn_id: str, wait: Callable[[], Awaitable[None]] | None) -> None:
        """Preemptive generation: tool calls of turn ``turn_id`` that are not ``side_effect_free`` await
        ``wait()`` (the turn being confirmed) before they run; ``None`` removes the gate. Set it before the
        turn starts; it is forgotten when the turn ends."""
        if wait is None:
            self._tool_gates.pop(turn_id, None)
        else:
            self._tool_gates[turn_id] = wait

    def _answer_part(self, turn_id: str, heard: str) -> str:
        """``heard`` (the whole turn's heard speech) without the text of the turn's tool rounds, which their
        assistant ``tool_calls`` messages already hold: the part that belongs in the answer message."""
        heard = heard.strip()
        rounds = self._round_texts.get(turn_id)
        if not rounds or not heard:
            return heard
        words = heard.split()
        for text in rounds:
            said = text.split()
            if words[: len(said)] == said:
                words = words[len(said) :]
            elif said[: len(words)] == words:
                return ""  # the cut fell inside a round whose text is recorded with its tool calls
            else:
                break  # the heard text does not follow the recorded rounds: keep it whole
        return " ".join(words)

    def _rewrite_answer(self, turn_id: str, spoken_text: str | None) -> None:
        if spoken_text is not None:
            spoken_text = self._answer_part(turn_id, spoken_text)
        answer = self._answers[turn_id]
        for i, msg in enumerate(self._history):
            if msg is not answer:
                continue
            if spoken_text is not None and not spoken_text.strip():
                del self._history[i]
                del self._answers[turn_id]
                return
            update: dict[str, Any] = {"interrupted": True}
            if spoken_text is not None:
                update["content"] = spoken_text.strip()
            self._history[i] = self._answers[turn_id] = msg.model_copy(update=update)
            return

    async def execute_turn(
        self,
        text: str,
        *,
        turn_id: str | None = None,
        speaker: str | None = None,
        attachments: list[VisionAttachment] | None = None,
    ) -> PlaybookTurnResult:
        """Run one turn to the end. Raises the turn's error (a :class:`~llmrtc.errors.LLMRTCError`)."""
        turn_id = turn_id or uuid.uuid4().hex[:12]
        async for event in self.stream_turn(text, turn_id=turn_id, speaker=speaker, attachments=attachments):
            if isinstance(event, ErrorEvent):
                raise event.error
        return self._results.pop(turn_id)

    async def stream_turn(
        self,
        text: str,
        *,
        turn_id: str | None = None,
        speaker: str | None = None,
        attachments: list[VisionAttachment] | None = None,
    ) -> AsyncGenerator[TurnEvent, None]:
        """Run one turn, yielding :mod:`llmrtc.events`: tool calls and results, the answer's chunks, the
        final answer, a stage change, and :class:`TurnCompleteEvent` (or :class:`ErrorEvent`)."""
        message = Message.user(text, name=speaker, attachments=list(attachments or []))
        async with aclosing(self.stream_message(message, turn_id=turn_id)) as events:
            async for event in events:
                yield event

    async def stream_message(
        self, message: Message, *, turn_id: str | None = None, before_commit: BeforeCommit | None = None
    ) -> AsyncGenerator[TurnEvent, None]:
        """:meth:`stream_turn` for a ready user message (the voice orchestrator's entry point).

        ``before_commit`` is awaited once the answer is complete (after :class:`LLMFinalEvent`) and before
        the turn commits; if the turn is cancelled meanwhile it records what was heard and commits nothing.
        """
        turn_id = turn_id or uuid.uuid4().hex[:12]
        if not message.content.strip() and not message.attachments:
            yield ErrorEvent(turn_id, PlaybookError("a turn needs some text", code="empty_turn"), "playbook")
            return
        async with self._lock:
            await self.engine.start()
            turn = _Turn(turn_id, message)
            self._running = turn_id
            try:
                async with aclosing(self._run(turn, before_commit)) as events:
                    async for event in events:
                        yield event
            except LLMRTCError as exc:
                component = "llm" if isinstance(exc, ProviderError | GuardrailError) else "playbook"
                log.warning("turn failed: [%s] %s", exc.code, exc.message, extra=self._log_ids(turn_id))
                await self.hooks.call("on_error", self._hook_ctx(turn_id, component), exc)
                self._commit_partial(turn, keep_answer=False)
                yield ErrorEvent(turn_id, exc, component)
            except Exception as exc:  # a bug in a provider or tool plumbing: fail the turn, never crash
                log.exception("playbook turn failed unexpectedly", extra=self._log_ids(turn_id))
                error = PlaybookError(f"the turn failed: {type(exc).__name__}: {exc}", code="turn_failed")
                await self.hooks.call("on_error", self._hook_ctx(turn_id, "playbook"), error)
                self._commit_partial(turn, keep_answer=False)
                yield ErrorEvent(turn_id, error, "playbook")
            finally:
                self._running = None
                self._tool_gates.pop(turn_id, None)
                if not turn.committed:
                    # cancelled (barge-in, or the consumer stopped): keep what completed, nothing half-done
                    log.info("playbook turn cancelled in phase %d", turn.phase, extra=self._log_ids(turn_id))
                    self._commit_partial(turn, keep_answer=turn.phase >= 2)

    # ------------------------------------------------------------------------------------------ turn

    async def _run(
        self, turn: _Turn, before_commit: BeforeCommit | None = None
    ) -> AsyncGenerator[TurnEvent, None]:
        watch = Stopwatch()
        # a stage that timed out while nobody spoke is left before answering
        timed_out = await self.engine.evaluate_transitions(kinds={"timeout"})
        if timed_out.transition is not None:
            before = self.engine.current_stage.id
            await self.engine.execute_transition(
                timed_out.transition, reason=timed_out.reason, turn_id=turn.turn_id
            )
            yield StageChangeEvent(
                turn.turn_id, before, timed_out.transition.target, timed_out.transition.id, timed_out.reason
            )
        stage = self.engine.current_stage
        stage_id = stage.id
        if stage.two_phase and self.engine.available_tools():
            async with aclosing(self._phase1(turn)) as phase1:
                async for event in phase1:
                    yield event
        turn.phase = 2
        final = LLMResult()
        async with aclosing(self._answer_rounds(turn, two_phase=stage.two_phase)) as rounds:
            async for item in rounds:
                if isinstance(item, LLMResult):
                    final = item
                else:
                    yield item
        answer = final.full_text
        turn.phase = 3  # the answer is complete: a cut from here keeps what was heard of it
        turn.answer = answer
        yield LLMFinalEvent(turn.turn_id, final.model_copy(update={"tool_calls": list(turn.calls)}))
        if before_commit is not None:
            await before_commit()

        # record, count and move on before yielding anything else, so a consumer that stops at any event
        # never leaves a turn recorded but not counted
        self._commit(turn, Message.assistant(answer))
        self.engine.record_turn()
        outcome = await self.engine.evaluate_transitions(
            answer, turn.calls, turn.results, llm_decision=turn.decision
        )
        transition = outcome.transition if outcome.should_transition else None
        if transition is not None:
            await self.engine.execute_transition(
                transition, reason=outcome.reason, data=outcome.data, turn_id=turn.turn_id
            )
        await self.engine.hooks.emit(
            "on_playbook_turn_end", self.engine.hook_context(turn.turn_id), answer, len(turn.calls)
        )
        result = PlaybookTurnResult(
            turn_id=turn.turn_id,
            response=answer,
            tool_calls=list(turn.calls),
            tool_results=list(turn.results),
            transitioned=transition is not None,
            transition=transition,
            from_stage=stage_id,
            stage=self.engine.current_stage.id,
            phase1_timed_out=turn.phase1_timed_out,
            usage=turn.usage,
        )
        self._results[turn.turn_id] = result
        if transition is not None:
            yield StageChangeEvent(turn.turn_id, stage_id, transition.target, transition.id, outcome.reason)
        log.info(
            "playbook turn done in %.0f ms (%d tool calls, stage %s)",
            watch.elapsed_ms(),
            len(turn.calls),
            result.stage,
            extra=self._log_ids(turn.turn_id),
        )
        yield TurnCompleteEvent(
            turn.turn_id,
            answer,
            {
                "stage": result.stage,
                "from_stage": stage_id,
                "transitioned": result.transitioned,
                "tool_calls": len(turn.calls),
                "phase1_timed_out": turn.phase1_timed_out,
                "usage": {
                    "llm_input_tokens": turn.usage.input_tokens if turn.usage else 0,
                    "llm_output_tokens": turn.usage.output_tokens if turn.usage else 0,
                },
            },
        )

    async def _phase1(self, turn: _Turn) -> AsyncGenerator[TurnEvent, None]:
        """The silent tool loop, bounded by ``phase1_timeout_s``.

        The deadline guards each LLM call and tool round, never a ``yield``: a timeout must not fire in the
        consumer's code while this generator is suspended.
        """
        deadline = asyncio.get_running_loop().time() + self.phase1_timeout_s
        pending: list[TurnEvent] = []
        events: list[TurnEvent] = []
        try:
            while True:
                tools = self.engine.available_tools()
                remaining = self.max_tool_calls_per_turn - len(turn.calls)
                if not tools or remaining <= 0 or turn.decision is not None:
                    break
                request = self._request(turn, self.engine.tool_choice(), with_tools=True)
                async with asyncio.timeout_at(deadline):
                    result = await self._complete(request, turn.turn_id)
                turn.usage = _add_usage(turn.usage, result.usage)
                self._count_usage(result.usage)
                if not result.tool_calls:
                    break
                for call in self._calls_to_run(turn, result.tool_calls):
                    yield ToolCallEvent(turn.turn_id, call)
                try:
                    async with asyncio.timeout_at(deadline):
                        await self._run_tools(turn, result.tool_calls, result.full_text, pending)
                finally:
                    events, pending = pending, []
                for event in events:
                    yield event
                events = []
        except TimeoutError:
            turn.phase1_timed_out = True
            log.warning(
                "phase 1 hit its %.1f s timeout after %d tool calls",
                self.phase1_timeout_s,
                len(turn.calls),
                extra=self._log_ids(turn.turn_id),
            )
            for event in events:
                yield event

    async def _answer_rounds(
        self, turn: _Turn, *, two_phase: bool
    ) -> AsyncGenerator[TurnEvent | LLMResult, None]:
        """Phase 2: stream the answer. Single-phase stages run tools between streamed rounds."""
        while True:
            can_call = (
                not two_phase
                and len(turn.calls) < self.max_tool_calls_per_turn
                and turn.rounds < self.max_tool_rounds
            )
            tools_available = bool(self.engine.available_tools())
            choice: ToolChoice = self.engine.tool_choice() if can_call else "none"
            if not tools_available:
                choice = "auto"
            request = self._request(turn, choice, with_tools=tools_available)
            result: LLMResult | None = None
            async with aclosing(self._stream(request, turn)) as stream:
                async for item in stream:
                    if isinstance(item, LLMResult):
                        result = item
                    else:
                        yield item
            assert result is not None
            turn.usage = _add_usage(turn.usage, result.usage)
            self._count_usage(result.usage)
            if can_call and result.tool_calls and tools_available:
                turn.rounds += 1
                for call in self._calls_to_run(turn, result.tool_calls):
                    yield ToolCallEvent(turn.turn_id, call)  # announced before they run
                events: list[TurnEvent] = []
                turn.streamed = ""  # this round's text is recorded with its tool calls
                await self._run_tools(turn, result.tool_calls, result.full_text, events)
                for event in events:
                    yield event
                if turn.decision is None:
                    continue
                # a stage change was asked for: one more round without tools for the closing words
                two_phase = True
                continue
            yield result
            return

    # ------------------------------------------------------------------------------------------ LLM calls

    def _request(self, turn: _Turn, choice: ToolChoice, *, with_tools: bool) -> LLMRequest:
        past = window(self._history, self.history_limit)
        messages = [*past, turn.user, *turn.exchange]
        if self.speaker_labels == "prefix":
            messages = [
                m.model_copy(update={"content": f"[{m.name}] {m.content}", "name": None})
                if m.role == "user" and m.name
                else m
                for m in messages
            ]
        prompt = self.engine.effective_system_prompt()
        if prompt:
            messages.insert(0, Message.system(prompt))
        request = LLMRequest(
            messages=messages,
            tools=self.engine.available_tools() if with_tools else [],
            tool_choice=choice if with_tools else "auto",
            metadata={
                "session_id": self.session_id,
                "turn_id": turn.turn_id,
                "playbook_id": self.playbook.id,
                "stage": self.engine.current_stage.id,
                "phase": turn.phase,
            },
        )
        return request.with_config(self.engine.effective_llm_config())

    async def _complete(self, request: LLMRequest, turn_id: str) -> LLMResult:
        ctx = self._hook_ctx(turn_id, "llm")
        await self.hooks.call("on_llm_start", ctx, request)
        watch = Stopwatch()
        try:
            result = await self.deadlines.llm(self.llm).complete(request)
        except Exception as caught:
            exc = self._provider_failure(caught, turn_id)
            self.metrics.increment(MetricNames.ERRORS, 1, {"component": "llm", "code": exc.code})
            await self.hooks.call("on_llm_error", ctx, exc)
            if exc is caught:
                raise
            raise exc from caught
        timing = watch.timing()
        self.metrics.timing(MetricNames.LLM_DURATION, timing.duration_ms, {"provider": self.llm.name})
        await self.hooks.call("on_llm_end", ctx, result, timing)
        return result

    async def _stream(self, request: LLMRequest, turn: _Turn) -> AsyncGenerator[TurnEvent | LLMResult, None]:
        ctx = self._hook_ctx(turn.turn_id, "llm")
        await self.hooks.call("on_llm_start", ctx, request)
        watch = Stopwatch()
        text: list[str] = []
        acc = ToolCallAccumulator(self.llm.name)
        final_calls: list[ToolCallRequest] = []
        stop_reason: Any = "end_turn"
        usage: Usage | None = None
        index = 0
        first = True
        try:
            chunks = self.deadlines.llm(self.llm).stream(request)
            async with _closing(chunks):
                async for chunk in chunks:
                    if first:
                        first = False
                        self.metrics.timing(
                            MetricNames.LLM_TTFT, watch.elapsed_ms(), {"provider": self.llm.name}
                        )
                    if chunk.content:
                        text.append(chunk.content)
                        turn.streamed += chunk.content
                        await self.hooks.call("on_llm_chunk", ctx, chunk, index)
                        index += 1
                        yield LLMChunkEvent(turn.turn_id, chunk.content)
                    for delta in chunk.tool_call_deltas:
                        acc.add(delta)
                    if chunk.done:
                        final_calls = list(chunk.tool_calls)
                        stop_reason = chunk.stop_reason or stop_reason
                        usage = chunk.usage
            if not final_calls and acc:
                final_calls = acc.calls()
        except Exception as caught:
            exc = self._provider_failure(caught, turn.turn_id)
            self.metrics.increment(MetricNames.ERRORS, 1, {"component": "llm", "code": exc.code})
            await self.hooks.call("on_llm_error", ctx, exc)
            if exc is caught:
                raise
            raise exc from caught
        self.metrics.timing(MetricNames.LLM_DURATION, watch.elapsed_ms(), {"provider": self.llm.name})
        if request.tool_choice == "none" and final_calls:
            log.info("ignoring tool calls asked for with tool_choice=none", extra=self._log_ids(turn.turn_id))
            final_calls = []
        result = LLMResult(
            full_text="".join(text), tool_calls=final_calls, stop_reason=stop_reason, usage=usage
        )
        # every round, tool rounds too: a guardrail may withhold the text written before a tool call
        await self.hooks.llm_end(ctx, result, watch.timing())
        yield result

    def _count_usage(self, usage: Usage | None) -> None:
        """LLM tokens as metrics (``llmrtc.llm.tokens``, by direction), as each call reports them."""
        if usage is None:
            return
        tags = {"provider": self.llm.name}
        if usage.input_tokens:
            self.metrics.increment(MetricNames.LLM_TOKENS, usage.input_tokens, {**tags, "direction": "input"})
        if usage.output_tokens:
            self.metrics.increment(
                MetricNames.LLM_TOKENS, usage.output_tokens, {**tags, "direction": "output"}
            )

    def _provider_failure(self, exc: Exception, turn_id: str) -> ProviderError:
        """``exc`` raised by the LLM call as a :class:`ProviderError`; other llmrtc errors (a guardrail) re-raised.

        A provider that lets a foreign exception out (its SDK could not parse a broken answer) failed to
        answer: that is a :class:`~llmrtc.errors.ProviderResponseError` of the LLM, not a bug of the turn.
        """
        if isinstance(exc, ProviderError):
            return exc
        if isinstance(exc, LLMRTCError):
            raise exc
        log.warning(
            "the LLM's answer could not be read: %s: %s",
            type(exc).__name__,
            exc,
            extra=self._log_ids(turn_id),
        )
        return ProviderResponseError(
            f"the LLM's answer could not be read: {type(exc).__name__}: {exc}",
            provider=self.llm.name,
            retryable=True,  # a garbled answer may not happen again
        )

    # ------------------------------------------------------------------------------------------ tools

    def _calls_to_run(self, turn: _Turn, calls: list[ToolCallRequest]) -> list[ToolCallRequest]:
        """``calls`` cut to the per-turn limit."""
        remaining = max(self.max_tool_calls_per_turn - len(turn.calls), 0)
        return calls[:remaining]

    async def _run_tools(
        self, turn: _Turn, calls: list[ToolCallRequest], text: str, events: list[TurnEvent]
    ) -> None:
        """Run ``calls`` (within the per-turn limit; their :class:`ToolCallEvent` were yielded already) and
        record the completed ones with their results."""
        remaining = self.max_tool_calls_per_turn - len(turn.calls)
        if len(calls) > remaining:
            log.warning(
                "tool call limit (%d per turn) reached: %d call(s) not run",
                self.max_tool_calls_per_turn,
                len(calls) - max(remaining, 0),
                extra=self._log_ids(turn.turn_id),
            )
            calls = calls[: max(remaining, 0)]
        if not calls:
            return
        done: dict[str, ToolResult] = {}
        offered = set(self.engine.tool_names())

        def record(result: ToolResult) -> None:
            done[result.call_id] = result

        to_execute: list[ToolCallRequest] = []
        for call in calls:
            if call.name == TRANSITION_TOOL_NAME:
                record(self._transition_call(turn, call))
            elif call.name not in offered:
                record(
                    ToolResult(
                        call_id=call.call_id,
                        tool_name=call.name,
                        success=False,
                        error=f"tool {call.name!r} is not available in stage {self.engine.current_stage.id!r}",
                        error_code="tool_not_found",
                    )
                )
            else:
                to_execute.append(call)
        try:
            metadata = {"stage": self.engine.current_stage.id, "speaker": turn.user.name}
            context = ToolContext(self.session_id, turn.turn_id, None, metadata)
            gate = self._tool_gates.get(turn.turn_id)
            if gate is not None:
                # a preemptive reply: side-effect-free calls run now, the others once the turn is confirmed
                early = [c for c in to_execute if self._side_effect_free(c.name)]
                if early and len(early) < len(to_execute):
                    await self.executor.execute(early, context, on_result=record)
                    to_execute = [c for c in to_execute if c.call_id not in done]
                if to_execute and not all(self._side_effect_free(c.name) for c in to_execute):
                    await gate()
            if to_execute:
                # on cancellation the executor cancels "cancel" tools and lets "finish" ones complete;
                # every result that completed reaches record() either way
                await self.executor.execute(to_execute, context, on_result=record)
        finally:
            # runs on success, timeout and cancellation alike: record exactly the calls that completed
            completed = [c for c in calls if c.call_id in done]
            if completed:
                turn.exchange.append(Message.assistant(text, tool_calls=completed))
                results = [done[call.call_id] for call in completed]
                # tool messages, then one user message with the images the results carry (ToolImage)
                turn.exchange.extend(tool_messages(results))
                for call, result in zip(completed, results, strict=True):
                    turn.calls.append(call)
                    turn.results.append(result)
                    events.append(ToolResultEvent(turn.turn_id, result))

    def _side_effect_free(self, name: str) -> bool:
        tool = self.registry.get(name)
        return tool is not None and tool.definition.side_effect_free

    def _transition_call(self, turn: _Turn, call: ToolCallRequest) -> ToolResult:
        try:
            decision = self.engine.parse_llm_decision(call)
        except PlaybookError as exc:
            return ToolResult(
                call_id=call.call_id,
                tool_name=call.name,
                success=False,
                error=exc.message,
                error_code=exc.code,
            )
        turn.decision = decision
        return ToolResult(
            call_id=call.call_id,
            tool_name=call.name,
            success=True,
            result={
                "ok": True,
                "target_stage": decision.target_stage,
                "note": "the stage changes after this turn",
            },
        )

    # ------------------------------------------------------------------------------------------ history

    def _append(self, messages: list[Message]) -> None:
        self._history.extend(messages)
        if len(self._history) > self.max_stored_messages:
            self._history = window(self._history, self.max_stored_messages)

    def _note_rounds(self, turn: _Turn) -> None:
        """Remember the text of the turn's tool rounds (see :meth:`_answer_part`)."""
        rounds = [
            m.content.strip()
            for m in turn.exchange
            if m.role == "assistant" and m.tool_calls and m.content.strip()
        ]
        if rounds:
            self._round_texts[turn.turn_id] = rounds
            while len(self._round_texts) > 32:
                self._round_texts.popitem(last=False)

    def _commit(self, turn: _Turn, answer: Message | None) -> None:
        turn.committed = True
        self._note_rounds(turn)
        if turn.turn_id in self._discarded:  # a preemptive reply the user talked over: no trace of it
            self._discarded.discard(turn.turn_id)
            self._spoken.pop(turn.turn_id, None)
            log.info("turn discarded: nothing recorded", extra=self._log_ids(turn.turn_id))
            return
        # images served this turn's requests; history keeps a short note in their place
        messages = forget_images([turn.user, *turn.exchange])
        if answer is not None:
            messages.append(answer)
        self._append(messages)
        self._tails[turn.turn_id] = messages[-1]
        while len(self._tails) > 32:
            self._tails.popitem(last=False)
        if answer is not None:
            self._answers[turn.turn_id] = answer
            while len(self._answers) > 32:
                self._answers.popitem(last=False)
            spoken = self._spoken.pop(turn.turn_id, None)
            if spoken is not None and not answer.interrupted:
                self._rewrite_answer(turn.turn_id, spoken)
        self._spoken.pop(turn.turn_id, None)

    def _commit_partial(self, turn: _Turn, *, keep_answer: bool) -> None:
        answer = None
        if keep_answer:
            self._note_rounds(turn)
            spoken = self._spoken.pop(turn.turn_id, None)
            if spoken is not None:  # what was heard of the whole turn, less what its tool rounds recorded
                content = self._answer_part(turn.turn_id, spoken)
            else:
                content = turn.answer if turn.phase == 3 else turn.streamed
            if content.strip():
                answer = Message.assistant(content.strip(), interrupted=True)
        self._commit(turn, answer)

    # ------------------------------------------------------------------------------------------ ids

    def _hook_ctx(self, turn_id: str, component: str) -> HookContext:
        return HookContext(session_id=self.session_id, turn_id=turn_id, component=component)

    def _log_ids(self, turn_id: str) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "turn_id": turn_id,
            "playbook_id": self.playbook.id,
            "stage_id": self.engine.current_stage.id,
        }


@asynccontextmanager
async def _closing(stream: AsyncIterator[Any]) -> AsyncGenerator[None, None]:
    """Close an async iterator (when it can be closed) however the block ends."""
    try:
        yield
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


def _add_usage(total: Usage | None, more: Usage | None) -> Usage | None:
    if more is None:
        return total
    if total is None:
        return more
    return Usage(
        input_tokens=total.input_tokens + more.input_tokens,
        output_tokens=total.output_tokens + more.output_tokens,
    )


__all__ = ["BeforeCommit", "PlaybookOrchestrator", "PlaybookTurnResult"]
