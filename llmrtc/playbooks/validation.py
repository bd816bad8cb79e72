"""validate_playbook: every problem of a playbook, each with its location.

Errors make a playbook unusable: schema errors, duplicate stage or transition ids, a missing initial stage,
transitions from or to unknown stages, tools the registry lacks, ``max_turns`` without a count, dotted paths
that do not import. Warnings flag likely mistakes: stages no transition reaches, tool_call conditions on a
tool the stage does not offer. Locations are paths into the playbook (``transitions[2].target``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from llmrtc.errors import PlaybookError, PlaybookValidationError
from llmrtc.playbooks.conditions import resolve_callable
from llmrtc.playbooks.types import (
    ANY_STAGE,
    TRANSITION_TOOL_NAME,
    CustomCondition,
    MaxTurnsCondition,
    Playbook,
    ToolCallCondition,
)

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class ValidationIssue:
    severity: Severity
    code: str
    message: str
    location: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.location}: {self.message} [{self.code}]"


@dataclass(slots=True)
class ValidationResult:
    """``valid`` is true when there are no errors (warnings allowed)."""

    issues: list[ValidationIssue] = field(default_factory=list)
    playbook: Playbook | None = None

    @property
    def errors(self) -> list[ValidationIssue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[ValidationIssue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def valid(self) -> bool:
        return not self.errors

    def codes(self) -> list[str]:
        return [i.code for i in self.issues]

    def raise_for_errors(self, source: str = "playbook") -> Playbook:
        """The playbook, or :class:`PlaybookValidationError` listing every error."""
        if self.errors or self.playbook is None:
            lines = "\n  ".join(str(i) for i in self.errors)
            raise PlaybookValidationError(
                f"{source} is invalid ({len(self.errors)} error(s)):\n  {lines}", self.errors
            )
        return self.playbook


class _Registry:
    """Adapts anything with ``__contains__`` (a ToolRegistry, a set of names) for the checks."""

    def __init__(self, registry: Any) -> None:
        self._registry = registry

    def __contains__(self, name: str) -> bool:
        return name in self._registry


def validate_playbook(playbook: Playbook | Mapping[str, Any], registry: Any = None) -> ValidationResult:
    """Check ``playbook`` (a model or raw data); with ``registry`` (a ToolRegistry or a collection of names),
    also check that every tool it names exists."""
    if not isinstance(playbook, Playbook):
        try:
            playbook = Playbook.model_validate(playbook)
        except ValidationError as exc:
            return ValidationResult(issues=issues_from_pydantic(exc))
    result = ValidationResult(playbook=playbook)
    issues = result.issues
    tools = _Registry(registry) if registry is not None else None

    def error(code: str, location: str, message: str) -> None:
        issues.append(ValidationIssue("error", code, message, location))

    def warning(code: str, location: str, message: str) -> None:
        issues.append(ValidationIssue("warning", code, message, location))

    stage_ids: dict[str, int] = {}
    for i, stage in enumerate(playbook.stages):
        if stage.id == ANY_STAGE:
            error("reserved_stage_id", f"stages[{i}].id", "'*' means any stage and cannot be a stage id")
        if stage.id in stage_ids:
            error(
                "duplicate_stage_id",
                f"stages[{i}].id",
                f"stage id {stage.id!r} is already used by stages[{stage_ids[stage.id]}]",
            )
        else:
            stage_ids[stage.id] = i
        for j, name in enumerate(stage.tools):
            _check_tool(name, f"stages[{i}].tools[{j}]", tools, error)
        for hook in ("on_enter", "on_exit"):
            value = getattr(stage, hook)
            if isinstance(value, str):
                _check_path(value, f"stages[{i}].{hook}", error)

    for j, name in enumerate(playbook.global_tools):
        _check_tool(name, f"global_tools[{j}]", tools, error)

    if playbook.initial_stage not in stage_ids:
        error(
            "missing_initial_stage",
            "initial_stage",
            f"initial stage {playbook.initial_stage!r} is not one of the stages ({', '.join(stage_ids)})",
        )

    transition_ids: dict[str, int] = {}
    for i, t in enumerate(playbook.transitions):
        loc = f"transitions[{i}]"
        if t.id in transition_ids:
            error(
                "duplicate_transition_id",
                f"{loc}.id",
                f"transition id {t.id!r} is already used by transitions[{transition_ids[t.id]}]",
            )
        else:
            transition_ids[t.id] = i
        if t.from_stage != ANY_STAGE and t.from_stage not in stage_ids:
            error(
                "unknown_stage",
                f"{loc}.from",
                f"transition {t.id!r} starts from unknown stage {t.from_stage!r}",
            )
        if t.target not in stage_ids:
            error("unknown_stage", f"{loc}.target", f"transition {t.id!r} targets unknown stage {t.target!r}")
        cond = t.condition
        if isinstance(cond, MaxTurnsCondition) and cond.count is None:
            from_stage = playbook.stage(t.from_stage)
            if from_stage is None or from_stage.max_turns is None:
                error(
                    "max_turns_without_count",
                    f"{loc}.condition.count",
                    f"transition {t.id!r} has no count and its from stage sets no max_turns",
                )
        if isinstance(cond, ToolCallCondition):
            if cond.tool_name == TRANSITION_TOOL_NAME:
                error(
                    "reserved_tool_name",
                    f"{loc}.condition.tool_name",
                    "use an llm_decision condition for playbook_transition",
                )
            elif tools is not None and cond.tool_name not in tools:
                error(
                    "unknown_tool",
                    f"{loc}.condition.tool_name",
                    f"transition {t.id!r} waits for tool {cond.tool_name!r}, which the registry lacks",
                )
            from_stage = playbook.stage(t.from_stage)
            if from_stage is not None and cond.tool_name not in {*from_stage.tools, *playbook.global_tools}:
                warning(
                    "tool_not_offered",
                    f"{loc}.condition.tool_name",
                    f"stage {from_stage.id!r} does not offer tool {cond.tool_name!r}, so the LLM cannot call it there",
                )
        if isinstance(cond, CustomCondition) and isinstance(cond.evaluate, str):
            _check_path(cond.evaluate, f"{loc}.condition.evaluate", error)

    if playbook.initial_stage in stage_ids:
        reachable = _reachable(playbook)
        for i, stage in enumerate(playbook.stages):
            if stage.id not in reachable and stage_ids.get(stage.id) == i:
                warning(
                    "unreachable_stage",
                    f"stages[{i}]",
                    f"no transition leads from {playbook.initial_stage!r} to stage {stage.id!r}",
                )
    return result


def _check_tool(name: str, location: str, tools: _Registry | None, error: Any) -> None:
    if name == TRANSITION_TOOL_NAME:
        error(
            "reserved_tool_name", location, "playbook_transition is built in; use an llm_decision transition"
        )
    elif tools is not None and name not in tools:
        error("unknown_tool", location, f"tool {name!r} is not in the tool registry")


def _check_path(path: str, location: str, error: Any) -> None:
    try:
        resolve_callable(path)
    except PlaybookError as exc:
        error("unresolvable_callable", location, exc.message)


def _reachable(playbook: Playbook) -> set[str]:
    ids = set(playbook.stage_ids())
    seen = {playbook.initial_stage}
    frontier = [playbook.initial_stage]
    while frontier:
        current = frontier.pop()
        for t in playbook.transitions:
            if t.from_stage in (current, ANY_STAGE) and t.target in ids and t.target not in seen:
                seen.add(t.target)
                frontier.append(t.target)
    return seen


def issues_from_pydantic(exc: ValidationError) -> list[ValidationIssue]:
    """One ``schema`` error per pydantic error, located by its path (``stages[1].tools[0]``)."""
    return [ValidationIssue("error", "schema", err["msg"], _format_loc(err["loc"])) for err in exc.errors()]


def _format_loc(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(root)"


__all__ = ["Severity", "ValidationIssue", "ValidationResult", "issues_from_pydantic", "validate_playbook"]
