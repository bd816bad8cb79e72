"""PlaybookEngine: state, transitions, events, stage hooks, playbook hooks and metrics, LLM inputs."""

from __future__ import annotations

from typing import Any

import pytest

from llmrtc.errors import PlaybookError, PlaybookValidationError
from llmrtc.metrics import InMemoryMetrics, MetricNames
from llmrtc.playbooks import (
    TRANSITION_TOOL_NAME,
    KeywordCondition,
    LLMDecisionCondition,
    MaxTurnsCondition,
    Playbook,
    PlaybookContext,
    PlaybookEngine,
    PlaybookEngineEvent,
    PlaybookHooks,
    PlaybookMetricsHooks,
    Stage,
    StageHookContext,
    StageTiming,
    TimeoutCondition,
    ToolCallCondition,
    Transition,
)
from llmrtc.types import GenerationConfig, ToolCallRequest


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_playbook(**stage_kw: Any) -> Playbook:
    return Playbook(
        id="pb",
        name="Test",
        global_system_prompt="You are helpful.",
        default_llm_config=GenerationConfig(temperature=0.7, max_tokens=500),
        stages=[
            Stage(id="greeting", system_prompt="Greet.", max_turns=3, **stage_kw),
            Stage(id="work", system_prompt="Work.", llm_config=GenerationConfig(temperature=0.2)),
            Stage(id="done", description="wrap up", final=True),
        ],
        transitions=[
            Transition(
                id="kw", from_stage="greeting", condition=KeywordCondition(keywords=["help"]), target="work"
            ),
            Transition(
                id="mt", from_stage="greeting", condition=MaxTurnsCondition(), target="work", priority=-1
            ),
            Transition(id="llm", from_stage="work", condition=LLMDecisionCondition(), target="done"),
            Transition(
                id="slow", from_stage="work", condition=TimeoutCondition(duration_ms=60_000), target="done"
            ),
        ],
        initial_stage="greeting",
    )


def test_initial_state_and_unknown_initial_stage() -> None:
    engine = PlaybookEngine(make_playbook())
    assert engine.current_stage.id == "greeting"
    assert engine.state.turn_count == 0
    assert [v.stage_id for v in engine.state.stage_history] == ["greeting"]
    bad = make_playbook().model_copy(update={"initial_stage": "nope"})
    with pytest.raises(PlaybookValidationError):
        PlaybookEngine(bad)


def test_effective_prompt_and_config() -> None:
    engine = PlaybookEngine(make_playbook())
    assert engine.effective_system_prompt() == "You are helpful.\n\nGreet."
    assert engine.effective_llm_config() == GenerationConfig(temperature=0.7, max_tokens=500)


async def test_keyword_transition_runs_events_and_stage_hooks_in_order() -> None:
    calls: list[tuple[str, str, str | None]] = []

    def on_exit(ctx: StageHookContext) -> None:
        assert ctx.other_stage is not None
        calls.append(("exit", ctx.stage.id, ctx.other_stage.id))

    async def on_enter(ctx: StageHookContext) -> None:
        calls.append(("enter", ctx.stage.id, ctx.other_stage.id if ctx.other_stage else None))

    pb = make_playbook(on_exit=on_exit, on_enter=on_enter)
    pb.stages[1].on_enter = on_enter
    engine = PlaybookEngine(pb)
    events: list[PlaybookEngineEvent] = []
    engine.on(events.append)
    await engine.start()
    await engine.start()  # idempotent
    assert calls == [("enter", "greeting", None)]

    engine.record_turn()
    result = await engine.evaluate_transitions("Happy to help!")
    assert result.should_transition and result.transition is not None and result.transition.id == "kw"
    await engine.execute_transition(result.transition)

    assert engine.current_stage.id == "work"
    assert calls[1:] == [("exit", "greeting", "work"), ("enter", "work", "greeting")]
    assert [(e.type, e.stage.id) for e in events] == [
        ("stage_enter", "greeting"),
        ("stage_exit", "greeting"),
        ("stage_enter", "work"),
        ("transition", "work"),
    ]
    assert engine.effective_system_prompt().endswith("Work.")
    assert engine.effective_llm_config() == GenerationConfig(temperature=0.2, max_tokens=500)
    assert engine.state.stage_turn_count == 0 and engine.state.turn_count == 1
    assert [v.via_transition for v in engine.state.stage_history] == [None, "kw"]


async def test_max_turns_from_stage_setting() -> None:
    engine = PlaybookEngine(make_playbook())
    for _ in range(2):
        engine.record_turn()
        assert not (await engine.evaluate_transitions("hello")).should_transition
    engine.record_turn()
    result = await engine.evaluate_transitions("hello")
    assert result.transition is not None and result.transition.id == "mt"


async def test_timeout_uses_clock() -> None:
    clock = Clock()
    engine = PlaybookEngine(make_playbook(), clock=clock)
    await engine.transition_to("work")
    assert not (await engine.evaluate_transitions()).should_transition
    clock.now += 60.0
    result = await engine.evaluate_transitions()
    assert result.transition is not None and result.transition.id == "slow"


async def test_transition_tool_offered_only_where_llm_decision_applies() -> None:
    engine = PlaybookEngine(make_playbook())
    assert engine.transition_tool_definition() is None
    assert all(t.name != TRANSITION_TOOL_NAME for t in engine.available_tools())
    await engine.transition_to("work")
    tool = engine.transition_tool_definition()
    assert tool is not None
    assert tool.parameters["properties"]["target_stage"]["enum"] == ["done"]
    assert [t.name for t in engine.available_tools()] == [TRANSITION_TOOL_NAME]


async def test_llm_decision_carries_reason_and_data_into_context() -> None:
    engine = PlaybookEngine(make_playbook())
    await engine.transition_to("work")
    call = ToolCallRequest(
        call_id="c1",
        name=TRANSITION_TOOL_NAME,
        arguments={"target_stage": "done", "reason": "solved", "data": {"score": 5}},
    )
    result = await engine.evaluate_transitions("", [call])
    assert result.transition is not None and result.transition.id == "llm"
    assert result.reason == "solved" and result.data == {"score": 5}
    await engine.execute_transition(result.transition, reason=result.reason, data=result.data)
    assert engine.current_stage.id == "done"
    assert engine.state.context["score"] == 5
    assert engine.is_complete


async def test_invalid_llm_decision_is_rejected() -> None:
    engine = PlaybookEngine(make_playbook())
    await engine.transition_to("work")
    bad = ToolCallRequest(call_id="c", name=TRANSITION_TOOL_NAME, arguments={"target_stage": "greeting"})
    with pytest.raises(PlaybookError, match="cannot be reached"):
        engine.parse_llm_decision(bad)
    assert not (await engine.evaluate_transitions("", [bad])).should_transition
    with pytest.raises(PlaybookError, match="target_stage"):
        engine.parse_llm_decision(ToolCallRequest(call_id="c", name=TRANSITION_TOOL_NAME, arguments={}))


async def test_tool_call_condition_through_engine() -> None:
    pb = make_playbook()
    pb.transitions.append(
        Transition(id="tc", from_stage="work", condition=ToolCallCondition(tool_name="close"), target="done")
    )
    engine = PlaybookEngine(pb)
    await engine.transition_to("work")
    call = ToolCallRequest(call_id="x", name="close", arguments={})
    result = await engine.evaluate_transitions("", [call])
    assert result.transition is not None and result.transition.id == "tc"


async def test_failing_stage_hook_and_listener_do_not_break_transition(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def boom(ctx: StageHookContext) -> None:
        raise RuntimeError("hook broke")

    engine = PlaybookEngine(make_playbook(on_exit=boom))
    engine.on(lambda e: 1 / 0)
    await engine.transition_to("work")
    assert engine.current_stage.id == "work"
    assert "stage hook failed" in caplog.text and "playbook listener failed" in caplog.text


async def test_stage_hook_by_dotted_path() -> None:
    from tests.unit.playbooks import helpers

    helpers.ENTERED.clear()
    pb = make_playbook()
    pb.stages[1].on_enter = "tests.unit.playbooks.helpers:record_enter"
    engine = PlaybookEngine(pb)
    await engine.transition_to("work")
    assert helpers.ENTERED == ["work"]


async def test_unsubscribe() -> None:
    engine = PlaybookEngine(make_playbook())
    seen: list[str] = []
    off = engine.on(lambda e: seen.append(e.type))
    off()
    await engine.transition_to("work")
    assert seen == []


class Recorder(PlaybookHooks):
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def on_stage_enter(self, ctx: PlaybookContext, stage: Stage, previous_stage: Stage | None) -> None:
        self.calls.append(("enter", stage.id, previous_stage.id if previous_stage else None))

    async def on_stage_exit(
        self, ctx: PlaybookContext, stage: Stage, next_stage: Stage, timing: StageTiming
    ) -> None:
        self.calls.append(("exit", stage.id, next_stage.id, timing.duration_ms, timing.turns))

    def on_transition(
        self, ctx: PlaybookContext, transition: Transition, from_stage: Stage, to_stage: Stage
    ) -> None:
        self.calls.append(("transition", transition.id, from_stage.id, to_stage.id))

    def on_playbook_complete(self, ctx: PlaybookContext, final_stage: Stage, total_turns: int) -> None:
        self.calls.append(("complete", final_stage.id, total_turns, ctx.playbook_id))


async def test_playbook_hooks_with_timing_and_metrics() -> None:
    clock = Clock()
    recorder = Recorder()
    metrics = InMemoryMetrics()
    engine = PlaybookEngine(
        make_playbook(), hooks=[recorder, PlaybookMetricsHooks(metrics)], clock=clock, session_id="s1"
    )
    await engine.start()
    engine.record_turn()
    clock.now += 2.5
    await engine.transition_to("work")
    engine.record_turn()
    clock.now += 1.0
    await engine.transition_to("done")

    assert recorder.calls == [
        ("enter", "greeting", None),
        ("exit", "greeting", "work", 2500.0, 1),
        ("enter", "work", "greeting"),
        ("transition", "manual", "greeting", "work"),
        ("exit", "work", "done", 1000.0, 1),
        ("enter", "done", "work"),
        ("transition", "manual", "work", "done"),
        ("complete", "done", 2, "pb"),
    ]
    assert metrics.timings(MetricNames.STAGE_DURATION, {"playbook": "pb", "stage": "greeting"}) == [2500.0]
    assert metrics.counter(MetricNames.PLAYBOOK_COMPLETIONS, {"playbook": "pb", "stage": "done"}) == 1
    assert metrics.gauge_value(MetricNames.CURRENT_STAGE, {"playbook": "pb", "stage": "done"}) == 1
    assert metrics.gauge_value(MetricNames.CURRENT_STAGE, {"playbook": "pb", "stage": "greeting"}) == 0
    assert metrics.gauge_value(MetricNames.STAGE_TURNS, {"playbook": "pb", "stage": "work"}) == 1
    transitions = {n for n in metrics.names() if n == MetricNames.STAGE_TRANSITIONS}
    assert transitions == {MetricNames.STAGE_TRANSITIONS}


async def test_failing_playbook_hook_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(PlaybookHooks):
        def on_transition(self, *args: Any) -> None:
            raise ValueError("nope")

    engine = PlaybookEngine(make_playbook(), hooks=[Broken()])
    await engine.transition_to("work")
    assert engine.current_stage.id == "work"
    assert "playbook hook failed" in caplog.text


async def test_context_metadata_and_reset() -> None:
    engine = PlaybookEngine(make_playbook())
    engine.update_context({"intent": "x"})
    engine.set_session_metadata({"user_id": "u1"})
    assert engine.get_state().context == {"intent": "x"}
    assert engine.state.session_metadata == {"user_id": "u1"}
    await engine.transition_to("work")
    await engine.reset()
    assert engine.current_stage.id == "greeting" and engine.state.context == {}
    with pytest.raises(PlaybookError):
        await engine.transition_to("missing")


def test_create_simple_playbook_and_tools_from_registry() -> None:
    from llmrtc.playbooks import create_simple_playbook, validate_playbook
    from llmrtc.tools import ToolRegistry, define_tool

    @define_tool
    def weather(city: str) -> str:
        """Weather for a city."""
        return "sunny"

    registry = ToolRegistry([weather])
    playbook = create_simple_playbook("assistant", "You are helpful.", [weather.definition, "weather"])
    assert playbook.initial_stage == "main" and playbook.stages[0].tools == ["weather", "weather"]
    assert validate_playbook(playbook, registry).valid
    engine = PlaybookEngine(playbook, registry=registry)
    assert [t.name for t in engine.available_tools()] == ["weather"]
    assert engine.effective_system_prompt() == "You are helpful."
    assert engine.is_final(engine.current_stage)
