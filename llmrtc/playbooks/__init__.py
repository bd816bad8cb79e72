"""Playbooks: multi-stage conversation flows with transitions, per-stage tools and two-phase turns."""

from llmrtc.playbooks.conditions import LLMDecision, TransitionContext, keywords_match, resolve_callable
from llmrtc.playbooks.engine import (
    PlaybookEngine,
    PlaybookEngineEvent,
    StageHookContext,
    TransitionResult,
)
from llmrtc.playbooks.hooks import PlaybookContext, PlaybookHookRunner, PlaybookHooks, PlaybookMetricsHooks
from llmrtc.playbooks.loader import load_playbook, load_tools, loads_playbook
from llmrtc.playbooks.orchestrator import PlaybookOrchestrator, PlaybookTurnResult
from llmrtc.playbooks.state import PlaybookState, StageTiming, StageVisit
from llmrtc.playbooks.types import (
    ANY_STAGE,
    TRANSITION_TOOL_NAME,
    Condition,
    CustomCondition,
    IntentCondition,
    KeywordCondition,
    LLMDecisionCondition,
    MaxTurnsCondition,
    Playbook,
    Stage,
    TimeoutCondition,
    ToolCallCondition,
    Transition,
    create_simple_playbook,
)
from llmrtc.playbooks.validation import ValidationIssue, ValidationResult, validate_playbook
from llmrtc.playbooks.voice import VoicePlaybookOrchestrator

__all__ = [
    "ANY_STAGE",
    "TRANSITION_TOOL_NAME",
    "Condition",
    "CustomCondition",
    "IntentCondition",
    "KeywordCondition",
    "LLMDecision",
    "LLMDecisionCondition",
    "MaxTurnsCondition",
    "Playbook",
    "PlaybookContext",
    "PlaybookEngine",
    "PlaybookEngineEvent",
    "PlaybookHookRunner",
    "PlaybookHooks",
    "PlaybookMetricsHooks",
    "PlaybookOrchestrator",
    "PlaybookState",
    "PlaybookTurnResult",
    "Stage",
    "StageHookContext",
    "StageTiming",
    "StageVisit",
    "TimeoutCondition",
    "ToolCallCondition",
    "Transition",
    "TransitionContext",
    "TransitionResult",
    "ValidationIssue",
    "ValidationResult",
    "VoicePlaybookOrchestrator",
    "create_simple_playbook",
    "keywords_match",
    "load_playbook",
    "load_tools",
    "loads_playbook",
    "resolve_callable",
    "validate_playbook",
]
