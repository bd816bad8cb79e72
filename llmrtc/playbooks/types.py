"""Playbook data model (pydantic): stages, transitions and their conditions.

A playbook is a small state machine over conversation stages. Each stage has its own system prompt, tools and
LLM settings; transitions move between stages when their condition holds. Files use these models directly
(YAML or JSON), so field names are snake_case; the reference SDK's camelCase names are accepted as aliases
(``systemPrompt``, ``targetStage``, ``durationMs`` ...). Tools are referenced by name and resolved against a
:class:`llmrtc.tools.ToolRegistry`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from llmrtc.types import GenerationConfig, ToolChoice

ANY_STAGE = "*"
"""``Transition.from_stage`` value that makes a transition apply from every stage."""

TRANSITION_TOOL_NAME = "playbook_transition"
"""The built-in tool the LLM calls to request an ``llm_decision`` transition."""

CustomEvaluator = Callable[..., Any]
"""``(TransitionContext) -> bool | Awaitable[bool]``."""

StageHook = Callable[..., Any]
"""``(StageHookContext) -> None | Awaitable[None]``."""


class _PlaybookModel(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        alias_generator=to_camel,
        arbitrary_types_allowed=True,
    )


# ---------------------------------------------------------------------------------------------- conditions


class KeywordCondition(_PlaybookModel):
    """Any (or, with ``match="all"``, every) keyword appears in the assistant's reply as whole words.

    Matching is case-insensitive; a keyword of several words matches them with any whitespace between.
    """

    type: Literal["keyword"] = "keyword"
    keywords: list[str] = Field(min_length=1)
    match: Literal["any", "all"] = "any"

    @field_validator("keywords")
    @classmethod
    def _non_blank(cls, value: list[str]) -> list[str]:
        if any(not k.strip() for k in value):
            raise ValueError("keywords must not be blank")
        return value


class ToolCallCondition(_PlaybookModel):
    """The named tool was called this turn; ``on`` narrows it to calls that succeeded or failed."""

    type: Literal["tool_call"] = "tool_call"
    tool_name: str = Field(min_length=1)
    on: Literal["any", "success", "failure"] = "any"

    @model_validator(mode="before")
    @classmethod
    def _yaml_on_key(cls, data: Any) -> Any:
        # YAML 1.1 reads a bare ``on:`` key as the boolean true
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data


class LLMDecisionCondition(_PlaybookModel):
    """The LLM called the built-in ``playbook_transition`` tool with this transition's target."""

    type: Literal["llm_decision"] = "llm_decision"


class MaxTurnsCondition(_PlaybookModel):
    """At least ``count`` turns were taken in the stage (``None``: the stage's ``max_turns``)."""

    type: Literal["max_turns"] = "max_turns"
    count: int | None = Field(default=None, gt=0)


class TimeoutCondition(_PlaybookModel):
    """At least ``duration_ms`` passed since the stage was entered (checked before and after each turn)."""

    type: Literal["timeout"] = "timeout"
    duration_ms: float = Field(gt=0)


class IntentCondition(_PlaybookModel):
    """The conversation context holds ``intent`` with at least ``confidence``.

    The intent is put in the context by the application (``engine.update_context``) as
    ``{"intent": {"name": "book", "confidence": 0.9}}`` or ``{"intent": "book", "intent_confidence": 0.9}``
    (a bare name counts as confidence 1.0).
    """

    type: Literal["intent"] = "intent"
    intent: str = Field(min_length=1)
    confidence: float = Field(default=0.7, ge=0, le=1)


class CustomCondition(_PlaybookModel):
    """A function of the :class:`~llmrtc.playbooks.conditions.TransitionContext` returning a bool.

    In code, ``evaluate`` is the callable (sync or async); in files it is a dotted import path
    (``package.module:function`` or ``package.module.function``) resolved when the playbook is loaded.
    """

    type: Literal["custom"] = "custom"
    evaluate: CustomEvaluator | str

    @field_validator("evaluate")
    @classmethod
    def _path_or_callable(cls, value: CustomEvaluator | str) -> CustomEvaluator | str:
        if isinstance(value, str) and not value.strip():
            raise ValueError("evaluate must be a callable or a dotted import path")
        return value


Condition = Annotated[
    KeywordCondition
    | ToolCallCondition
    | LLMDecisionCondition
    | MaxTurnsCondition
    | TimeoutCondition
    | IntentCondition
    | CustomCondition,
    Field(discriminator="type"),
]
ConditionType = Literal["keyword", "tool_call", "llm_decision", "max_turns", "timeout", "intent", "custom"]


# ---------------------------------------------------------------------------------------------- stages


class Stage(_PlaybookModel):
    """One conversation stage.

    ``tools`` names tools of the registry (a :class:`~llmrtc.types.ToolDefinition` or ``Tool`` is accepted
    and stored by name). ``max_turns`` is the default count of this stage's ``max_turns`` conditions.
    ``two_phase`` runs turns as a silent tool loop followed by a streamed answer. ``final`` marks a stage
    that completes the playbook when entered (a stage no transition leaves is final too).
    ``on_enter``/``on_exit`` are called with a :class:`~llmrtc.playbooks.engine.StageHookContext`
    (callables in code, dotted import paths in files).
    """

    id: str = Field(min_length=1)
    name: str = ""
    description: str = ""
    system_prompt: str = ""
    tools: list[str] = Field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    llm_config: GenerationConfig | None = None
    max_turns: int | None = Field(default=None, gt=0)
    two_phase: bool = Field(default=True, validation_alias="twoPhaseExecution")
    final: bool = False
    on_enter: StageHook | str | None = Field(default=None, exclude=True)
    on_exit: StageHook | str | None = Field(default=None, exclude=True)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _accept_aliases(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for alias in ("two_phase_execution", "twoPhase"):
                if alias in data and "two_phase" not in data and "twoPhaseExecution" not in data:
                    data["two_phase"] = data.pop(alias)
        return data

    @field_validator("tools", mode="before")
    @classmethod
    def _tool_names(cls, value: Any) -> Any:
        return _names_of_tools(value)

    @property
    def label(self) -> str:
        """The display name (``name``, or the id when unnamed)."""
        return self.name or self.id


# ---------------------------------------------------------------------------------------------- transitions


class Transition(_PlaybookModel):
    """Move from ``from_stage`` (a stage id or ``"*"`` for any stage) to ``target`` when ``condition`` holds.

    Of the transitions whose condition holds, the highest ``priority`` wins; ties go to declaration order.
    The reference SDK's ``action: {targetStage: ...}`` form is accepted for ``target``.
    """

    id: str = Field(min_length=1)
    from_stage: str = Field(alias="from", min_length=1)
    condition: Condition
    target: str = Field(min_length=1)
    priority: int = 0
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _accept_action(cls, data: Any) -> Any:
        if isinstance(data, dict) and "action" in data and "target" not in data:
            data = dict(data)
            action = data.pop("action")
            if isinstance(action, dict):
                target = action.get("target_stage", action.get("targetStage", action.get("target")))
                if target is not None:
                    data["target"] = target
        return data


# ---------------------------------------------------------------------------------------------- playbook


class Playbook(_PlaybookModel):
    """A multi-stage conversation flow."""

    id: str = Field(min_length=1)
    name: str = ""
    description: str = ""
    stages: list[Stage] = Field(min_length=1)
    transitions: list[Transition] = Field(default_factory=list)
    initial_stage: str = Field(min_length=1)
    global_system_prompt: str = ""
    global_tools: list[str] = Field(default_factory=list)
    default_llm_config: GenerationConfig | None = Field(default=None, validation_alias="defaultLLMConfig")
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("global_tools", mode="before")
    @classmethod
    def _tool_names(cls, value: Any) -> Any:
        return _names_of_tools(value)

    def stage(self, stage_id: str) -> Stage | None:
        """The stage with this id, or ``None``."""
        for stage in self.stages:
            if stage.id == stage_id:
                return stage
        return None

    def stage_ids(self) -> list[str]:
        return [s.id for s in self.stages]


def _names_of_tools(value: Any) -> Any:
    """Accept tool names, ToolDefinitions or Tool objects (``.definition.name``) and keep the names."""
    if not isinstance(value, list | tuple):
        return value
    out: list[Any] = []
    for item in value:
        if isinstance(item, str):
            out.append(item)
        elif hasattr(item, "definition") and hasattr(item.definition, "name"):
            out.append(item.definition.name)
        elif hasattr(item, "name") and isinstance(item.name, str):
            out.append(item.name)
        else:
            out.append(item)
    return out


def create_simple_playbook(
    playbook_id: str,
    system_prompt: str,
    tools: Sequence[Any] = (),
    *,
    name: str = "",
    llm_config: GenerationConfig | None = None,
    two_phase: bool = True,
) -> Playbook:
    """A one-stage playbook: one system prompt and its tools (names, ToolDefinitions or Tools)."""
    stage = Stage(
        id="main",
        name=name or playbook_id,
        system_prompt=system_prompt,
        tools=list(tools),
        llm_config=llm_config,
        two_phase=two_phase,
    )
    return Playbook(id=playbook_id, name=name or playbook_id, stages=[stage], initial_stage="main")


__all__ = [
    "ANY_STAGE",
    "TRANSITION_TOOL_NAME",
    "Condition",
    "ConditionType",
    "CustomCondition",
    "CustomEvaluator",
    "IntentCondition",
    "KeywordCondition",
    "LLMDecisionCondition",
    "MaxTurnsCondition",
    "Playbook",
    "Stage",
    "StageHook",
    "TimeoutCondition",
    "ToolCallCondition",
    "Transition",
    "create_simple_playbook",
]
