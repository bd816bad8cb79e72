"""PlaybookEngine: the playbook's state machine, independent of any LLM.

It knows the current stage, counts turns, keeps the stage history, the conversation context and session
metadata, evaluates transitions after a turn and executes them (stage ``on_exit``/``on_enter`` hooks, engine
events, :class:`~llmrtc.playbooks.hooks.PlaybookHooks`). It also composes what the LLM gets in the current
stage: the effective system prompt, tools (with the built-in ``playbook_transition`` tool where an
``llm_decision`` transition applies) and generation config.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from llmrtc.errors import PlaybookError, PlaybookValidationError, SessionStoreError
from llmrtc.playbooks.conditions import (
    LLMDecision,
    TransitionContext,
    call_maybe_async,
    candidate_transitions,
    resolve_callable,
    select_transition,
)
from llmrtc.playbooks.hooks import PlaybookContext, PlaybookHookRunner, PlaybookHooks
from llmrtc.playbooks.state import PlaybookState, StageTiming, StageVisit
from llmrtc.playbooks.types import (
    TRANSITION_TOOL_NAME,
    KeywordCondition,
    LLMDecisionCondition,
    Playbook,
    Stage,
    StageHook,
    Transition,
)
from llmrtc.sessions import playbook_snapshot, playbook_state_from_snapshot
from llmrtc.types import GenerationConfig, ToolCallRequest, ToolChoice, ToolDefinition, ToolResult

log = logging.getLogger("llmrtc.playbooks")

EngineEventType = Literal["stage_enter", "stage_exit", "transition"]


class ToolSource(Protocol):
    """What the engine needs of a tool registry (a :class:`llmrtc.tools.ToolRegistry`): ``get(name)``
    returning a tool with a ``definition``, or ``None``."""

    def get(self, name: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class PlaybookEngineEvent:
    """An engine event. For ``transition``, ``stage`` is the new stage and ``other_stage`` the old one;
    for ``stage_enter`` the other stage is the previous one, for ``stage_exit`` the next one."""

    type: EngineEventType
    stage: Stage
    other_stage: Stage | None = None
    transition: Transition | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class StageHookContext:
    """Given to a stage's ``on_enter``/``on_exit``: the stage, the other stage, and the live state."""

    stage: Stage
    other_stage: Stage | None
    state: PlaybookState
    playbook: Playbook

    @property
    def conversation_context(self) -> dict[str, Any]:
        return self.state.context

    @property
    def session_metadata(self) -> dict[str, Any]:
        return self.state.session_metadata


@dataclass(frozen=True, slots=True)
class TransitionResult:
    """The outcome of :meth:`PlaybookEngine.evaluate_transitions`."""

    should_transition: bool
    transition: Transition | None = None
    reason: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


EngineListener = Callable[[PlaybookEngineEvent], Any]


class PlaybookEngine:
    """Runs one playbook for one conversation.

    ``registry`` resolves tool names to definitions; ``hooks`` observe stage changes and turns;
    ``clock`` (monotonic seconds) is injectable for tests. Call :meth:`start` once before the first turn
    (the orchestrators do) to run the initial stage's ``on_enter``.
    """

    def __init__(
        self,
        playbook: Playbook,
        *,
        registry: ToolSource | None = None,
        hooks: Sequence[PlaybookHooks] = (),
        session_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.playbook = playbook
        self.registry = registry
        self.session_id = session_id
        self._clock = clock
        self._stages = {s.id: s for s in playbook.stages}
        if playbook.initial_stage not in self._stages:
            raise PlaybookValidationError(
                f"initial stage {playbook.initial_stage!r} of playbook {playbook.id!r} is not one of its stages"
            )
        self.hooks = PlaybookHookRunner(hooks)
        self._listeners: list[EngineListener] = []
        self._started = False
        self.state = self._fresh_state()

    def _fresh_state(self) -> PlaybookState:
        now = self._clock()
        state = PlaybookState(current_stage_id=self.playbook.initial_stage, stage_entered_at=now)
        state.stage_history.append(StageVisit(self.playbook.initial_stage, now))
        return state

    # ------------------------------------------------------------------------------------------ state

    @property
    def current_stage(self) -> Stage:
        return self._stages[self.state.current_stage_id]

    @property
    def started(self) -> bool:
        return self._started

    @property
    def is_complete(self) -> bool:
        return self.state.completed

    def get_stage(self, stage_id: str) -> Stage:
        try:
            return self._stages[stage_id]
        except KeyError:
            raise PlaybookError(f"playbook {self.playbook.id!r} has no stage {stage_id!r}") from None

    def get_state(self) -> PlaybookState:
        return self.state

    def update_context(self, values: dict[str, Any]) -> None:
        """Merge ``values`` into the conversation context (what ``intent`` and custom conditions read)."""
        self.state.context.update(values)

    def set_session_metadata(self, values: dict[str, Any]) -> None:
        """Merge ``values`` into the session metadata (user id, channel ...)."""
        self.state.session_metadata.update(values)

    def time_in_stage(self) -> float:
        """Seconds since the current stage was entered."""
        return self._clock() - self.state.stage_entered_at

    def record_turn(self) -> None:
        """Count one completed turn in the current stage."""
        self.state.turn_count += 1
        self.state.stage_turn_count += 1
        self.state.stage_history[-1].turns += 1

    def is_final(self, stage: Stage) -> bool:
        """A stage is final when marked so or when no transition can leave it."""
        return stage.final or not candidate_transitions(self.playbook.transitions, stage.id)

    def hook_context(self, turn_id: str | None = None) -> PlaybookContext:
        return PlaybookContext(self.playbook.id, self.state, self.session_id, turn_id)

    async def start(self) -> None:
        """Enter the initial stage (its ``on_enter`` hook and ``stage_enter`` event). Idempotent."""
        if self._started:
            return
        self._started = True
        stage = self.current_stage
        await self._run_stage_hook(stage.on_enter, stage, None, "on_enter")
        await self._emit(PlaybookEngineEvent("stage_enter", stage))
        await self.hooks.emit("on_stage_enter", self.hook_context(), stage, None)
        await self._check_complete(stage)

    # ------------------------------------------------------------------------------------------ persistence

    def snapshot(self) -> dict[str, Any]:
        """The engine's state as JSON-safe data (for :attr:`llmrtc.sessions.SessionState.playbook`).

        Built on :func:`llmrtc.sessions.playbook_snapshot` (times stored as ages, so another process can
        restore them), plus the playbook id. Raises :class:`PlaybookError` (code
        ``playbook_snapshot_invalid``) when the context or session metadata is not JSON-safe.
        """
        try:
            data = playbook_snapshot(self.state, now=self._clock())
        except SessionStoreError as exc:
            log.warning(
                "playbook state cannot be snapshotted: %s",
                exc.message,
                extra={"playbook_id": self.playbook.id, "session_id": self.session_id},
            )
            raise PlaybookError(exc.message, code=_SNAPSHOT_INVALID) from exc
        data[_PLAYBOOK_ID_KEY] = self.playbook.id
        return data

    def restore(self, data: dict[str, Any]) -> None:
        """Continue from a :meth:`snapshot` (taken by this or another process): stage, counters, stage
        history, context and session metadata are replaced; time spent with no engine is not counted as
        time in the stage.

        The restored stage is entered silently: no ``on_enter`` hook, no ``stage_enter`` event or hook, and
        :meth:`start` does nothing afterwards. Raises :class:`PlaybookError` (code
        ``playbook_snapshot_invalid``, the state unchanged) when ``data`` is not a snapshot of this
        playbook: unreadable, of another playbook, or naming a stage the playbook does not have.
        """
        ids = {"playbook_id": self.playbook.id, "session_id": self.session_id}
        try:
            if not isinstance(data, dict):
                raise PlaybookError(f"a playbook snapshot is a dict, got {type(data).__name__}")
            fields = dict(data)
            owner = fields.pop(_PLAYBOOK_ID_KEY, None)
            if owner is not None and owner != self.playbook.id:
                raise PlaybookError(f"the snapshot belongs to playbook {owner!r}, not {self.playbook.id!r}")
            try:
                state = playbook_state_from_snapshot(fields, now=self._clock())
            except SessionStoreError as exc:
                raise PlaybookError(exc.message) from exc
            self._check_restored(state)
        except PlaybookError as exc:
            log.warning("playbook snapshot refused: %s", exc.message, extra=ids)
            raise PlaybookError(
                f"cannot restore playbook {self.playbook.id!r}: {exc.message}", code=_SNAPSHOT_INVALID
            ) from exc
        self.state = state
        self._started = True
        log.info(
            "playbook state restored",
            extra={**ids, "stage_id": state.current_stage_id, "turn_count": state.turn_count},
        )

    def _check_restored(self, state: PlaybookState) -> None:
        """Raise :class:`PlaybookError` unless ``state`` can run in this playbook without surprises."""
        self.get_stage(state.current_stage_id)
        counters = {
            "turn_count": state.turn_count,
            "stage_turn_count": state.stage_turn_count,
            "transition_count": state.transition_count,
        }
        for name, value in counters.items():
            if not _is_count(value):
                raise PlaybookError(f"{name} must be a non-negative integer, got {value!r}")
        if not isinstance(state.completed, bool):
            raise PlaybookError(f"completed must be a boolean, got {state.completed!r}")
        if not isinstance(state.session_metadata, dict):
            raise PlaybookError("session_metadata must be an object")
        if not state.stage_history:
            raise PlaybookError("the stage history is empty")
        for visit in state.stage_history:
            if not isinstance(visit.stage_id, str) or not _is_count(visit.turns):
                raise PlaybookError(f"bad stage visit {visit!r}")
        last = state.stage_history[-1]
        if last.stage_id != state.current_stage_id or last.exited_at is not None:
            raise PlaybookError(
                f"the last stage visit ({last.stage_id!r}) is not the current stage "
                f"({state.current_stage_id!r})"
            )

    async def reset(self) -> None:
        """Back to the initial stage with fresh counters and context (hooks run again on :meth:`start`)."""
        self.state = self._fresh_state()
        self._started = False

    # ------------------------------------------------------------------------------------------ events

    def on(self, listener: EngineListener) -> Callable[[], None]:
        """Call ``listener`` (sync or async) with every engine event; returns an unsubscribe function."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    async def _emit(self, event: PlaybookEngineEvent) -> None:
        for listener in list(self._listeners):
            try:
                await call_maybe_async(listener, event)
            except Exception:
                log.exception("playbook listener failed", extra={"event": event.type})

    # ------------------------------------------------------------------------------------------ transitions

    def transition_context(
        self,
        assistant_text: str = "",
        tool_calls: Sequence[ToolCallRequest] = (),
        tool_results: Sequence[ToolResult] = (),
        llm_decision: LLMDecision | None = None,
    ) -> TransitionContext:
        return TransitionContext(
            stage=self.current_stage,
            assistant_text=assistant_text,
            tool_calls=tool_calls,
            tool_results=tool_results,
            llm_decision=llm_decision,
            stage_turns=self.state.stage_turn_count,
            total_turns=self.state.turn_count,
            time_in_stage_s=self.time_in_stage(),
            context=self.state.context,
            session_metadata=self.state.session_metadata,
        )

    async def evaluate_transitions(
        self,
        assistant_text: str = "",
        tool_calls: Sequence[ToolCallRequest] = (),
        tool_results: Sequence[ToolResult] = (),
        *,
        llm_decision: LLMDecision | None = None,
        kinds: Collection[str] | None = None,
    ) -> TransitionResult:
        """Which transition, if any, fires after a turn.

        ``llm_decision`` defaults to the last valid ``playbook_transition`` call among ``tool_calls``.
        ``kinds`` limits the condition types considered (the orchestrator checks ``{"timeout"}`` before
        a turn, so a user coming back after a long pause is answered by the right stage).
        """
        if llm_decision is None:
            llm_decision = self.find_llm_decision(tool_calls)
        ctx = self.transition_context(assistant_text, tool_calls, tool_results, llm_decision)
        chosen = await select_transition(self.playbook.transitions, ctx, kinds=kinds)
        if chosen is None:
            return TransitionResult(False)
        if isinstance(chosen.condition, LLMDecisionCondition) and llm_decision is not None:
            return TransitionResult(True, chosen, llm_decision.reason or None, dict(llm_decision.data))
        return TransitionResult(True, chosen, chosen.description or _describe(chosen))

    async def execute_transition(
        self,
        transition: Transition,
        *,
        reason: str | None = None,
        data: dict[str, Any] | None = None,
        turn_id: str | None = None,
    ) -> None:
        """Leave the current stage for ``transition.target``: ``on_exit``, ``stage_exit``, the move,
        ``on_enter``, ``stage_enter``, ``transition``. ``data`` is merged into the context."""
        source = self.current_stage
        target = self.get_stage(transition.target)
        now = self._clock()
        timing = StageTiming(self.state.stage_entered_at, now, self.state.stage_turn_count)

        await self._run_stage_hook(source.on_exit, source, target, "on_exit")
        await self._emit(PlaybookEngineEvent("stage_exit", source, target, transition, reason))
        await self.hooks.emit("on_stage_exit", self.hook_context(turn_id), source, target, timing)

        self.state.stage_history[-1].exited_at = now
        self.state.stage_history.append(StageVisit(target.id, now, via_transition=transition.id))
        self.state.current_stage_id = target.id
        self.state.stage_entered_at = now
        self.state.stage_turn_count = 0
        self.state.transition_count += 1
        if data:
            self.state.context.update(data)
        log.info(
            "playbook stage change",
            extra={
                "playbook_id": self.playbook.id,
                "session_id": self.session_id,
                "turn_id": turn_id,
                "from_stage": source.id,
                "to_stage": target.id,
                "transition_id": transition.id,
            },
        )

        await self._run_stage_hook(target.on_enter, target, source, "on_enter")
        await self._emit(PlaybookEngineEvent("stage_enter", target, source, transition, reason))
        await self.hooks.emit("on_stage_enter", self.hook_context(turn_id), target, source)
        await self._emit(PlaybookEngineEvent("transition", target, source, transition, reason))
        await self.hooks.emit("on_transition", self.hook_context(turn_id), transition, source, target)
        await self._check_complete(target, turn_id)

    async def transition_to(self, stage_id: str, *, reason: str | None = None) -> None:
        """Move to ``stage_id`` directly (a manual transition with id ``manual``)."""
        self.get_stage(stage_id)
        manual = Transition(
            id="manual",
            from_stage=self.current_stage.id,
            condition=KeywordCondition(keywords=["manual"]),
            target=stage_id,
            description="manual transition",
        )
        await self.execute_transition(manual, reason=reason)

    async def _check_complete(self, stage: Stage, turn_id: str | None = None) -> None:
        if self.state.completed or not self.is_final(stage):
            return
        self.state.completed = True
        await self.hooks.emit(
            "on_playbook_complete", self.hook_context(turn_id), stage, self.state.turn_count
        )

    async def _run_stage_hook(
        self, hook: StageHook | str | None, stage: Stage, other: Stage | None, which: str
    ) -> None:
        if hook is None:
            return
        try:
            fn = resolve_callable(hook) if isinstance(hook, str) else hook
            await call_maybe_async(fn, StageHookContext(stage, other, self.state, self.playbook))
        except Exception:
            log.exception(
                "stage hook failed",
                extra={"playbook_id": self.playbook.id, "stage_id": stage.id, "hook": which},
            )

    # ------------------------------------------------------------------------------------------ llm_decision

    def llm_decision_targets(self, stage: Stage | None = None) -> list[str]:
        """The stages an ``llm_decision`` transition can reach from ``stage`` (default: the current one)."""
        stage = stage or self.current_stage
        out: list[str] = []
        for t in candidate_transitions(self.playbook.transitions, stage.id):
            if isinstance(t.condition, LLMDecisionCondition) and t.target not in out:
                out.append(t.target)
        return out

    def transition_tool_definition(self) -> ToolDefinition | None:
        """The ``playbook_transition`` tool for the current stage, or ``None`` where no llm_decision applies."""
        targets = self.llm_decision_targets()
        if not targets:
            return None
        described = "; ".join(
            f"{t}: {self._stages[t].description or self._stages[t].label}"
            for t in targets
            if t in self._stages
        )
        return ToolDefinition(
            name=TRANSITION_TOOL_NAME,
            description=(
                "Move the conversation to another stage when the current stage's goal is met. "
                f"Allowed target stages: {described}."
            ),
            parameters={
                "type": "object",
                "properties": {
                    "target_stage": {
                        "type": "string",
                        "enum": targets,
                        "description": "The stage to move to.",
                    },
                    "reason": {"type": "string", "description": "Why the conversation should move on."},
                    "data": {"type": "object", "description": "Facts to carry into the next stage."},
                },
                "required": ["target_stage", "reason"],
            },
            execution_policy="sequential",
            interruption="finish",
        )

    def parse_llm_decision(self, call: ToolCallRequest) -> LLMDecision:
        """Validate a ``playbook_transition`` call. Raises :class:`PlaybookError` if it cannot apply."""
        args = call.arguments
        target = args.get("target_stage", args.get("targetStage"))
        if not isinstance(target, str) or not target:
            raise PlaybookError("playbook_transition needs a target_stage")
        allowed = self.llm_decision_targets()
        if target not in allowed:
            raise PlaybookError(
                f"stage {target!r} cannot be reached from {self.current_stage.id!r} by llm_decision; "
                f"allowed: {', '.join(allowed) or 'none'}"
            )
        reason = args.get("reason")
        data = args.get("data")
        return LLMDecision(
            target_stage=target,
            reason=reason if isinstance(reason, str) else "",
            data=data if isinstance(data, dict) else {},
        )

    def find_llm_decision(self, tool_calls: Iterable[ToolCallRequest]) -> LLMDecision | None:
        """The last valid ``playbook_transition`` request among ``tool_calls``."""
        decision: LLMDecision | None = None
        for call in tool_calls:
            if call.name != TRANSITION_TOOL_NAME:
                continue
            try:
                decision = self.parse_llm_decision(call)
            except PlaybookError as exc:
                log.warning(
                    "ignoring playbook_transition call: %s", exc.message, extra={"call_id": call.call_id}
                )
        return decision

    # ------------------------------------------------------------------------------------------ LLM inputs

    def effective_system_prompt(self) -> str:
        """The global system prompt followed by the current stage's."""
        parts = [self.playbook.global_system_prompt.strip(), self.current_stage.system_prompt.strip()]
        return "\n\n".join(p for p in parts if p)

    def tool_names(self) -> list[str]:
        """Global then stage tool names (no duplicates), without the built-in transition tool."""
        names: list[str] = []
        for name in [*self.playbook.global_tools, *self.current_stage.tools]:
            if name not in names:
                names.append(name)
        return names

    def available_tools(self) -> list[ToolDefinition]:
        """Definitions of the current stage's tools (global + stage) plus ``playbook_transition`` if it applies.

        Names the registry does not hold are skipped with a warning (``validate_playbook`` reports them).
        """
        out: list[ToolDefinition] = []
        for name in self.tool_names():
            tool = self.registry.get(name) if self.registry is not None else None
            definition = getattr(tool, "definition", None)
            if not isinstance(definition, ToolDefinition):
                log.warning("tool not in registry", extra={"tool": name, "stage_id": self.current_stage.id})
                continue
            out.append(definition)
        transition_tool = self.transition_tool_definition()
        if transition_tool is not None:
            out.append(transition_tool)
        return out

    def tool_choice(self) -> ToolChoice:
        return self.current_stage.tool_choice

    def effective_llm_config(self) -> GenerationConfig:
        """The playbook's default config overlaid with the current stage's settings."""
        merged: dict[str, Any] = {}
        for config in (self.playbook.default_llm_config, self.current_stage.llm_config):
            if config is not None:
                merged.update(config.model_dump(exclude_none=True))
        return GenerationConfig(**merged)


_SNAPSHOT_INVALID = "playbook_snapshot_invalid"
_PLAYBOOK_ID_KEY = "playbook_id"


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _describe(transition: Transition) -> str:
    return f"{transition.condition.type} condition of transition {transition.id!r}"


__all__ = [
    "EngineEventType",
    "EngineListener",
    "PlaybookEngine",
    "PlaybookEngineEvent",
    "StageHookContext",
    "ToolSource",
    "TransitionResult",
]
