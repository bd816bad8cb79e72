"""The mutable state of one playbook run: current stage, turn counts, stage history, context."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class StageVisit:
    """One stay in a stage. ``exited_at`` is ``None`` while the stage is current (monotonic seconds)."""

    stage_id: str
    entered_at: float
    exited_at: float | None = None
    turns: int = 0
    via_transition: str | None = None
    """The id of the transition that led here (``None`` for the initial stage or a manual move)."""

    @property
    def duration_s(self) -> float | None:
        return None if self.exited_at is None else self.exited_at - self.entered_at


@dataclass(frozen=True, slots=True)
class StageTiming:
    """How long a stage was current, given to ``on_stage_exit`` hooks."""

    entered_at: float
    exited_at: float
    turns: int

    @property
    def duration_ms(self) -> float:
        return (self.exited_at - self.entered_at) * 1000.0


@dataclass(slots=True)
class PlaybookState:
    """Everything the engine tracks. ``turn_count`` counts all turns; ``stage_turn_count`` the current stage's."""

    current_stage_id: str
    stage_entered_at: float
    turn_count: int = 0
    stage_turn_count: int = 0
    stage_history: list[StageVisit] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    session_metadata: dict[str, Any] = field(default_factory=dict)
    completed: bool = False
    transition_count: int = 0


__all__ = ["PlaybookState", "StageTiming", "StageVisit"]
