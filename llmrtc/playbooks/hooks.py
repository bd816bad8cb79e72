"""Playbook hooks (stage enter/exit with timing, transition, turn end, completion) and playbook metrics.

Subclass :class:`PlaybookHooks` and override what you need; methods may be sync or async. A hook that
raises is logged and skipped: hooks observe a conversation, they never break it.
:class:`PlaybookMetricsHooks` records the reference's playbook metrics (``MetricNames.STAGE_*``,
``CURRENT_STAGE``, ``PLAYBOOK_COMPLETIONS``) through any :class:`llmrtc.metrics.MetricsAdapter`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llmrtc.metrics import MetricNames, MetricsAdapter
from llmrtc.playbooks.conditions import call_maybe_async
from llmrtc.playbooks.state import PlaybookState, StageTiming
from llmrtc.playbooks.types import Stage, Transition

log = logging.getLogger("llmrtc.playbooks")


@dataclass(frozen=True, slots=True)
class PlaybookContext:
    """What every playbook hook is given: which playbook, which session, and its live state."""

    playbook_id: str
    state: PlaybookState
    session_id: str | None = None
    turn_id: str | None = None


class PlaybookHooks:
    """Override any of these (sync or async). The default implementations do nothing."""

    def on_stage_enter(self, ctx: PlaybookContext, stage: Stage, previous_stage: Stage | None) -> Any:
        """A stage became current (``previous_stage`` is ``None`` for the initial stage)."""

    def on_stage_exit(
        self, ctx: PlaybookContext, stage: Stage, next_stage: Stage, timing: StageTiming
    ) -> Any:
        """A stage is being left for ``next_stage``; ``timing`` says for how long and how many turns it ran."""

    def on_transition(
        self, ctx: PlaybookContext, transition: Transition, from_stage: Stage, to_stage: Stage
    ) -> Any:
        """A transition fired (called after the target stage was entered)."""

    def on_playbook_turn_end(self, ctx: PlaybookContext, response: str, tool_call_count: int) -> Any:
        """A playbook turn ended with ``response`` after ``tool_call_count`` tool calls."""

    def on_playbook_complete(self, ctx: PlaybookContext, final_stage: Stage, total_turns: int) -> Any:
        """The playbook reached a final stage."""


class PlaybookMetricsHooks(PlaybookHooks):
    """Records stage durations and turns, transitions, the current stage and completions."""

    def __init__(self, metrics: MetricsAdapter) -> None:
        self._metrics = metrics

    def _tags(self, ctx: PlaybookContext, **extra: str) -> dict[str, str]:
        return {"playbook": ctx.playbook_id, **extra}

    def on_stage_enter(self, ctx: PlaybookContext, stage: Stage, previous_stage: Stage | None) -> None:
        self._metrics.gauge(MetricNames.CURRENT_STAGE, 1, self._tags(ctx, stage=stage.id))

    def on_stage_exit(
        self, ctx: PlaybookContext, stage: Stage, next_stage: Stage, timing: StageTiming
    ) -> None:
        tags = self._tags(ctx, stage=stage.id)
        self._metrics.gauge(MetricNames.CURRENT_STAGE, 0, tags)
        self._metrics.timing(MetricNames.STAGE_DURATION, timing.duration_ms, tags)
        self._metrics.gauge(MetricNames.STAGE_TURNS, timing.turns, tags)

    def on_transition(
        self, ctx: PlaybookContext, transition: Transition, from_stage: Stage, to_stage: Stage
    ) -> None:
        tags = self._tags(ctx, transition=transition.id, **{"from": from_stage.id, "to": to_stage.id})
        self._metrics.increment(MetricNames.STAGE_TRANSITIONS, 1, tags)

    def on_playbook_complete(self, ctx: PlaybookContext, final_stage: Stage, total_turns: int) -> None:
        self._metrics.increment(MetricNames.PLAYBOOK_COMPLETIONS, 1, self._tags(ctx, stage=final_stage.id))


class PlaybookHookRunner:
    """Calls every hook object in order; a failing hook is logged with its name and skipped."""

    def __init__(self, hooks: Sequence[PlaybookHooks] = ()) -> None:
        self.hooks: list[PlaybookHooks] = list(hooks)

    def add(self, hooks: PlaybookHooks) -> None:
        self.hooks.append(hooks)

    async def emit(self, name: str, *args: Any) -> None:
        for hooks in self.hooks:
            fn = getattr(hooks, name, None)
            if fn is None:
                continue
            try:
                await call_maybe_async(fn, *args)
            except Exception:
                log.exception("playbook hook failed", extra={"hook": name, "hooks": type(hooks).__name__})


__all__ = [
    "PlaybookContext",
    "PlaybookHookRunner",
    "PlaybookHooks",
    "PlaybookMetricsHooks",
]
