"""Transition conditions: what each condition type means, and choosing the transition that fires.

:func:`select_transition` walks the transitions that apply from the current stage (its own and the ``"*"``
ones) by descending priority, ties in declaration order, and returns the first whose condition holds.
Conditions never raise: a custom condition that fails is logged and counts as not met.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from llmrtc.errors import PlaybookError
from llmrtc.playbooks.types import (
    ANY_STAGE,
    Condition,
    CustomCondition,
    IntentCondition,
    KeywordCondition,
    LLMDecisionCondition,
    MaxTurnsCondition,
    Stage,
    TimeoutCondition,
    ToolCallCondition,
    Transition,
)
from llmrtc.types import ToolCallRequest, ToolResult

log = logging.getLogger("llmrtc.playbooks")


@dataclass(frozen=True, slots=True)
class LLMDecision:
    """What the LLM asked for with the ``playbook_transition`` tool."""

    target_stage: str
    reason: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class TransitionContext:
    """Everything a condition may look at after a turn."""

    stage: Stage
    assistant_text: str = ""
    tool_calls: Sequence[ToolCallRequest] = ()
    tool_results: Sequence[ToolResult] = ()
    llm_decision: LLMDecision | None = None
    stage_turns: int = 0
    """Turns completed in the current stage (this one included)."""
    total_turns: int = 0
    time_in_stage_s: float = 0.0
    context: dict[str, Any] = field(default_factory=dict)
    session_metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def turn_count(self) -> int:
        """Alias of ``stage_turns`` (the reference's ``ctx.turnCount``)."""
        return self.stage_turns


def applies_from(transition: Transition, stage_id: str) -> bool:
    """Whether ``transition`` can fire while in ``stage_id`` (a ``"*"`` one never targets its own stage)."""
    if transition.from_stage == ANY_STAGE:
        return transition.target != stage_id
    return transition.from_stage == stage_id


def candidate_transitions(transitions: Sequence[Transition], stage_id: str) -> list[Transition]:
    """The transitions that apply from ``stage_id``, in evaluation order (priority desc, then declared)."""
    indexed = [(i, t) for i, t in enumerate(transitions) if applies_from(t, stage_id)]
    indexed.sort(key=lambda pair: (-pair[1].priority, pair[0]))
    return [t for _, t in indexed]


async def select_transition(
    transitions: Sequence[Transition], ctx: TransitionContext, *, kinds: Collection[str] | None = None
) -> Transition | None:
    """The transition that fires for ``ctx`` (only conditions of ``kinds``, when given), or ``None``."""
    for transition in candidate_transitions(transitions, ctx.stage.id):
        if kinds is not None and transition.condition.type not in kinds:
            continue
        if await evaluate_condition(transition, ctx):
            return transition
    return None


async def evaluate_condition(transition: Transition, ctx: TransitionContext) -> bool:
    """Whether ``transition``'s condition holds in ``ctx``."""
    cond: Condition = transition.condition
    if isinstance(cond, KeywordCondition):
        return keywords_match(cond.keywords, ctx.assistant_text, require_all=cond.match == "all")
    if isinstance(cond, ToolCallCondition):
        return _tool_call_matches(cond, ctx)
    if isinstance(cond, LLMDecisionCondition):
        return ctx.llm_decision is not None and ctx.llm_decision.target_stage == transition.target
    if isinstance(cond, MaxTurnsCondition):
        count = cond.count if cond.count is not None else ctx.stage.max_turns
        return count is not None and ctx.stage_turns >= count
    if isinstance(cond, TimeoutCondition):
        return ctx.time_in_stage_s * 1000.0 >= cond.duration_ms
    if isinstance(cond, IntentCondition):
        return _intent_matches(cond, ctx.context)
    if isinstance(cond, CustomCondition):
        return await _custom_matches(transition, cond, ctx)
    return False  # pragma: no cover - the discriminated union is exhaustive


# ---------------------------------------------------------------------------------------------- keyword


@lru_cache(maxsize=512)
def _keyword_pattern(keyword: str) -> re.Pattern[str]:
    words = [re.escape(w) for w in keyword.split()]
    return re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", re.IGNORECASE)


def keywords_match(keywords: Sequence[str], text: str, *, require_all: bool = False) -> bool:
    """Whether any (or all) keywords occur in ``text`` as whole words, ignoring case."""
    if not text:
        return False
    hits = (_keyword_pattern(k.strip()).search(text) is not None for k in keywords if k.strip())
    return all(hits) if require_all else any(hits)


# ---------------------------------------------------------------------------------------------- tool_call


def _tool_call_matches(cond: ToolCallCondition, ctx: TransitionContext) -> bool:
    called = any(call.name == cond.tool_name for call in ctx.tool_calls)
    results = [r for r in ctx.tool_results if r.tool_name == cond.tool_name]
    if cond.on == "any":
        return called or bool(results)
    want = cond.on == "success"
    return any(r.success is want for r in results)


# ---------------------------------------------------------------------------------------------- intent


def _intent_matches(cond: IntentCondition, context: dict[str, Any]) -> bool:
    raw = context.get("intent")
    name: Any
    confidence: Any
    if isinstance(raw, dict):
        name, confidence = raw.get("name", raw.get("intent")), raw.get("confidence", 1.0)
    else:
        name, confidence = raw, context.get("intent_confidence", 1.0)
    if not isinstance(name, str) or name.strip().lower() != cond.intent.strip().lower():
        return False
    try:
        return float(confidence) >= cond.confidence
    except (TypeError, ValueError):
        log.warning("intent confidence is not a number", extra={"intent": name})
        return False


# ---------------------------------------------------------------------------------------------- custom


def resolve_callable(path: str) -> Callable[..., Any]:
    """Import ``package.module:function`` or ``package.module.function``.

    Raises :class:`~llmrtc.errors.PlaybookError` when the module or attribute is missing or not callable.
    """
    module_name, sep, attr = path.strip().partition(":")
    if not sep:
        module_name, _, attr = path.strip().rpartition(".")
    if not module_name or not attr:
        raise PlaybookError(f"{path!r} is not a dotted import path (package.module:function)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PlaybookError(f"cannot import module {module_name!r} for {path!r}: {exc}") from exc
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise PlaybookError(f"module {module_name!r} has no attribute {attr!r}") from exc
    if not callable(target):
        raise PlaybookError(f"{path!r} is not callable")
    return target  # type: ignore[no-any-return]


async def call_maybe_async(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn`` and await the result when it is awaitable."""
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


async def _custom_matches(transition: Transition, cond: CustomCondition, ctx: TransitionContext) -> bool:
    try:
        fn = resolve_callable(cond.evaluate) if isinstance(cond.evaluate, str) else cond.evaluate
        return bool(await call_maybe_async(fn, ctx))
    except Exception:
        log.exception(
            "custom condition failed; treated as not met",
            extra={"transition_id": transition.id, "stage_id": ctx.stage.id},
        )
        return False


__all__ = [
    "LLMDecision",
    "TransitionContext",
    "applies_from",
    "call_maybe_async",
    "candidate_transitions",
    "evaluate_condition",
    "keywords_match",
    "resolve_callable",
    "select_transition",
]
