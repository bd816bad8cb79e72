"""PlaybookOrchestrator: two-phase turns with scripted tool calls, limits, timeout, retries, cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from llmrtc.errors import InvalidRequestError, ProviderServerError
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
from llmrtc.history import is_consistent
from llmrtc.playbooks import (
    TRANSITION_TOOL_NAME,
    KeywordCondition,
    LLMDecisionCondition,
    Playbook,
    Stage,
    ToolCallCondition,
    Transition,
)
from llmrtc.playbooks.orchestrator import PlaybookOrchestrator
from llmrtc.testing import ScriptedLLM, ScriptedReply
from llmrtc.tools import ToolRegistry, define_tool


class Tools:
    """A registry with fast, slow-cancellable and slow-finishing tools; records what ran and finished."""

    def __init__(self, charge_s: float = 0.3) -> None:
        self.ran: list[str] = []
        self.finished: list[str] = []
        self.started = asyncio.Event()
        self.registry = ToolRegistry()

        @define_tool
        async def lookup(order_id: str) -> dict[str, str]:
            """Look an order up."""
            self.ran.append(f"lookup:{order_id}")
            return {"order_id": order_id, "status": "shipped"}

        @define_tool(timeout_s=10, interruption="cancel")
        async def slow_search(query: str) -> str:
            """A slow search that may be cancelled."""
            self.ran.append("slow_search")
            self.started.set()
            await asyncio.sleep(5)
            self.finished.append("slow_search")
            return "found"

        @define_tool(timeout_s=10, interruption="finish")
        async def charge(amount: int) -> dict[str, int]:
            """Charge a card: never cut half-way."""
            self.ran.append("charge")
            self.started.set()
            await asyncio.sleep(charge_s)
            self.finished.append("charge")
            return {"charged": amount}

        @define_tool
        def fail_verify(user: str) -> None:
            """Always fails."""
            raise ValueError("unknown user")

        for tool in (lookup, slow_search, charge, fail_verify):
            self.registry.register(tool)


def playbook(*, two_phase: bool = True) -> Playbook:
    return Playbook(
        id="shop",
        global_system_prompt="You are a shop assistant.",
        initial_stage="orders",
        stages=[
            Stage(
                id="orders",
                system_prompt="Help with orders.",
                tools=["lookup", "slow_search", "charge", "fail_verify"],
                two_phase=two_phase,
            ),
            Stage(id="billing", system_prompt="Billing now.", tools=["lookup"]),
            Stage(id="bye", system_prompt="Say goodbye.", description="end of the chat"),
        ],
        transitions=[
            Transition(
                id="charged",
                from_stage="orders",
                condition=ToolCallCondition(tool_name="charge", on="success"),
                target="billing",
            ),
            Transition(id="decide", from_stage="*", condition=LLMDecisionCondition(), target="bye"),
            Transition(
                id="kw", from_stage="billing", condition=KeywordCondition(keywords=["goodbye"]), target="bye"
            ),
        ],
    )


def call(name: str, call_id: str, **args: Any) -> dict[str, Any]:
    return {"name": name, "call_id": call_id, "arguments": args}


async def collect(orch: PlaybookOrchestrator, text: str, **kw: Any) -> list[TurnEvent]:
    return [e async for e in orch.stream_turn(text, **kw)]


async def test_two_phase_turn_tool_loop_then_streamed_answer() -> None:
    tools = Tools()
    llm = ScriptedLLM(
        [
            ScriptedReply(text="let me check", tool_calls=[call("lookup", "c1", order_id="42")]),
            ScriptedReply(text="(draft nobody sees)"),
            "Your order 42 has shipped.",
        ]
    )
    orch = PlaybookOrchestrator(llm, playbook(), tools.registry)
    events = await collect(orch, "Where is order 42?", turn_id="t1")

    kinds = [type(e) for e in events]
    assert kinds[:2] == [ToolCallEvent, ToolResultEvent]
    assert LLMChunkEvent in kinds and kinds[-2:] == [LLMFinalEvent, TurnCompleteEvent]
    assert "".join(e.content for e in events if isinstance(e, LLMChunkEvent)) == "Your order 42 has shipped."
    assert tools.ran == ["lookup:42"]

    phase1a, phase1b, phase2 = llm.requests
    assert [t.name for t in phase1a.tools] == [
        "lookup",
        "slow_search",
        "charge",
        "fail_verify",
        TRANSITION_TOOL_NAME,
    ]
    assert phase1a.tool_choice == phase1b.tool_choice == "auto" and phase2.tool_choice == "none"
    assert phase1a.messages[0].content == "You are a shop assistant.\n\nHelp with orders."
    assert phase2.messages[-1].role == "tool"  # the answer is written after the facts

    history = orch.history
    assert [m.role for m in history] == ["user", "assistant", "tool", "assistant"]
    assert history[1].tool_calls[0].name == "lookup" and history[-1].content == "Your order 42 has shipped."
    assert all("draft" not in m.content for m in history)
    assert is_consistent(history)
    assert orch.engine.state.turn_count == 1


async def test_execute_turn_result_and_tool_call_transition_on_success() -> None:
    tools = Tools()
    llm = ScriptedLLM([ScriptedReply(tool_calls=[call("charge", "c1", amount=5)]), "", "Charged 5."])
    orch = PlaybookOrchestrator(llm, playbook(), tools.registry)
    result = await orch.execute_turn("charge me")
    assert result.response == "Charged 5."
    assert [c.name for c in result.tool_calls] == ["charge"] and result.tool_results[0].success
    assert result.transitioned and result.transition is not None and result.transition.id == "charged"
    assert (result.from_stage, result.stage) == ("orders", "billing")
    assert orch.current_stage.id == "billing"


async def test_failed_tool_goes_back_to_llm_as_error() -> None:
    tools = Tools()
    llm = ScriptedLLM(
        [ScriptedReply(tool_calls=[call("fail_verify", "c1", user="x")]), "", "I could not verify you."]
    )
    orch = PlaybookOrchestrator(llm, playbook(), tools.registry)
    result = await orch.execute_turn("verify me")
    assert not result.tool_results[0].success and "unknown user" in (result.tool_results[0].error or "")
    assert '"error"' in orch.history[2].content


async def test_tool_not_offered_in_stage_is_refused() -> None:
    tools = Tools()
    pb = playbook()
    pb.stages[0].tools = ["lookup"]
    llm = ScriptedLLM([ScriptedReply(tool_calls=[call("charge", "c1", amount=1)]), "", "No."])
    orch = PlaybookOrchestrator(llm, pb, tools.registry)
    result = await orch.execute_turn("charge")
    assert tools.ran == [] and result.tool_results[0].error_code == "tool_not_found"


async def test_llm_decision_ends_phase1_and_changes_stage() -> None:
    tools = Tools()
    llm = ScriptedLLM(
        [
            ScriptedReply(
                tool_calls=[
                    call(TRANSITION_TOOL_NAME, "c1", target_stage="bye", reason="user is done", data={"n": 1})
                ]
            ),
            "Goodbye!",
            "See you.",
        ]
    )
    orch = PlaybookOrchestrator(llm, playbook(), tools.registry)
    events = await collect(orch, "that's all")
    change = next(e for e in events if isinstance(e, StageChangeEvent))
    assert (change.from_stage, change.to_stage, change.transition_id, change.reason) == (
        "orders",
        "bye",
        "decide",
        "user is done",
    )
    assert len(llm.requests) == 2  # no more tool rounds after the decision
    assert orch.engine.state.context["n"] == 1
    # the next turn runs in the new stage, where no tools (and no transition tool) are offered
    await orch.execute_turn("bye")
    last = llm.requests[-1]
    assert last.tools == [] and last.messages[0].content.endswith("Say goodbye.")


async def test_tool_call_limit_per_turn() -> None:
    tools = Tools()
    llm = ScriptedLLM(
        [
            ScriptedReply(tool_calls=[call("lookup", "a", order_id="1")]),
            ScriptedReply(tool_calls=[call("lookup", "b", order_id="2"), call("lookup", "c", order_id="3")]),
            "Done.",
        ]
    )
    orch = PlaybookOrchestrator(llm, playbook(), tools.registry, max_tool_calls_per_turn=2)
    result = await orch.execute_turn("look up everything")
    assert tools.ran == ["lookup:1", "lookup:2"]  # the third call is over the limit
    assert len(result.tool_calls) == 2 and len(llm.requests) == 3
    assert is_consistent(orch.history)


async def test_phase1_timeout_keeps_completed_calls_and_answers() -> None:
    tools = Tools()
    llm = ScriptedLLM(
        [
            ScriptedReply(tool_calls=[call("lookup", "a", order_id="1")]),
            ScriptedReply(tool_calls=[call("slow_search", "b", query="q")]),
            "Here is what I found so far.",
        ]
    )
    orch = PlaybookOrchestrator(llm, playbook(), tools.registry, phase1_timeout_s=1.0)
    result = await asyncio.wait_for(orch.execute_turn("search"), 6)
    assert result.phase1_timed_out and result.response == "Here is what I found so far."
    assert [c.call_id for c in result.tool_calls] == ["a"]  # the cancelled slow call is left out
    assert tools.finished == []
    assert is_consistent(orch.history)


async def test_phase1_timeout_while_the_llm_thinks() -> None:
    tools = Tools()
    llm = ScriptedLLM(
        [ScriptedReply(tool_calls=[call("lookup", "a", order_id="1")]), "Quick answer."], ttft_s=0.3
    )
    orch = PlaybookOrchestrator(llm, playbook(), tools.registry, phase1_timeout_s=0.05)
    events = await asyncio.wait_for(collect(orch, "hurry"), 4)
    assert not any(isinstance(e, ToolCallEvent) for e in events) and tools.ran == []
    assert isinstance(events[-1], TurnCompleteEvent) and events[-1].metadata["phase1_timed_out"] is True
    assert [m.role for m in orch.history] == ["user", "assistant"]


async def test_phase1_timeout_lets_finish_tools_complete() -> None:
    tools = Tools(charge_s=1.0)  # far longer than the timeout, which hits while the charge runs
    llm = ScriptedLLM([ScriptedReply(tool_calls=[call("charge", "a", amount=3)]), "Charged."])
    orch = PlaybookOrchestrator(llm, playbook(), tools.registry, phase1_timeout_s=0.4)
    result = await asyncio.wait_for(orch.execute_turn("charge"), 6)
    assert result.phase1_timed_out
    assert tools.finished == ["charge"] and result.tool_results[0].result == {"charged": 3}
    assert result.stage == "billing"  # the completed call still counts for the tool_call transition


async def test_the_engine_never_retries_providers_do() -> None:
    """One retry layer: a failing call reaches the provider once per engine call (providers retry)."""
    tools = Tools()
    err = ProviderServerError("down", provider="scripted")
    llm = ScriptedLLM([ScriptedReply(error=err)] * 3)
    orch = PlaybookOrchestrator(llm, playbook(), tools.registry)
    events = await collect(orch, "hi", turn_id="t9")
    assert isinstance(events[-1], ErrorEvent) and events[-1].error is err and events[-1].component == "llm"
    assert len(llm.requests) == 1
    assert [m.role for m in orch.history] == ["user"] and orch.engine.state.turn_count == 0

    bad = InvalidRequestError("bad request", provider="scripted")
    llm2 = ScriptedLLM([ScriptedReply(error=bad), "never"])
    orch2 = PlaybookOrchestrator(llm2, playbook(), tools.registry)
    with pytest.raises(InvalidRequestError):
        await orch2.execute_turn("hi")
    assert len(llm2.requests) == 1


async def test_cancel_in_phase1_records_completed_calls_only() -> None:
    tools = Tools()
    llm = ScriptedLLM(
        [
            ScriptedReply(tool_calls=[call("lookup", "a", order_id="7")]),
            ScriptedReply(tool_calls=[call("slow_search", "b", query="q"), call("charge", "c", amount=9)]),
            "never reached",
        ]
    )
    orch = PlaybookOrchestrator(llm, playbook(), tools.registry)
    task = asyncio.create_task(collect(orch, "do things", turn_id="t1"))
    await asyncio.wait_for(tools.started.wait(), 4)
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    history = orch.history
    assert is_consistent(history)
    recorded = [c.name for m in history for c in m.tool_calls]
    assert recorded == ["lookup", "charge"]  # slow_search was cancelled; charge was let finish
    assert tools.finished == ["charge"]
    assert history[0].role == "user" and history[-1].role == "tool"
    assert orch.engine.state.turn_count == 0 and orch.current_stage.id == "orders"  # no half transition


async def test_cancel_in_phase2_keeps_streamed_text_marked_interrupted() -> None:
    tools = Tools()
    llm = ScriptedLLM(
        [
            ScriptedReply(tool_calls=[call("lookup", "a", order_id="1")]),
            "",
            "One two three four five six seven.",
        ],
        tokens_per_s=50,
    )
    orch = PlaybookOrchestrator(llm, playbook(), tools.registry)
    got_chunk = asyncio.Event()

    async def consume() -> None:
        async for event in orch.stream_turn("count", turn_id="t2"):
            if isinstance(event, LLMChunkEvent):
                got_chunk.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_chunk.wait(), 4)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    history = orch.history
    assert [m.role for m in history] == ["user", "assistant", "tool", "assistant"]
    answer = history[-1]
    assert answer.interrupted and answer.content and "seven" not in answer.content
    orch.interrupt("t2", "One")
    assert orch.history[-1].content == "One" and orch.history[-1].interrupted
    assert orch.engine.state.turn_count == 0


async def test_interrupt_before_commit_uses_spoken_text() -> None:
    tools = Tools()
    llm = ScriptedLLM(["Alpha beta gamma delta epsilon."], tokens_per_s=50)
    pb = playbook()
    pb.stages[0].tools = []
    pb.transitions = []
    orch = PlaybookOrchestrator(llm, pb, tools.registry)
    stream = orch.stream_turn("go", turn_id="t3")
    async for event in stream:
        if isinstance(event, LLMChunkEvent):
            break
    orch.interrupt("t3", "Alpha")
    await stream.aclose()
    assert orch.history[-1].content == "Alpha" and orch.history[-1].interrupted


async def test_single_phase_stage_streams_rounds_with_tools() -> None:
    tools = Tools()
    llm = ScriptedLLM(
        [ScriptedReply(text="Checking. ", tool_calls=[call("lookup", "a", order_id="5")]), "It shipped."]
    )
    orch = PlaybookOrchestrator(llm, playbook(two_phase=False), tools.registry)
    events = await collect(orch, "order 5?")
    text = "".join(e.content for e in events if isinstance(e, LLMChunkEvent))
    assert text == "Checking. It shipped."
    assert llm.requests[0].tool_choice == "auto" and llm.requests[1].tool_choice == "auto"
    assert [m.role for m in orch.history] == ["user", "assistant", "tool", "assistant"]
    assert orch.history[1].content == "Checking. "


async def test_phase1_skipped_when_stage_has_no_tools() -> None:
    tools = Tools()
    pb = playbook()
    pb.stages[0].tools = []
    pb.transitions = []
    llm = ScriptedLLM(["Hi there."])
    orch = PlaybookOrchestrator(llm, pb, tools.registry)
    assert (await orch.execute_turn("hello")).response == "Hi there."
    assert len(llm.requests) == 1 and llm.requests[0].tools == []


async def test_history_limit_and_context_note() -> None:
    tools = Tools()
    pb = playbook()
    pb.stages[0].tools = []
    pb.transitions = []
    llm = ScriptedLLM([f"answer {i}" for i in range(5)])
    orch = PlaybookOrchestrator(llm, pb, tools.registry, history_limit=4, max_stored_messages=6)
    orch.add_context_note("Alice joined.")
    for i in range(5):
        await orch.execute_turn(f"question {i}", speaker="alice")
    # history_limit: what the LLM sees of the past; max_stored_messages: what is kept
    seen = [m.content for m in llm.requests[-1].messages if m.role != "system"]
    assert seen == ["question 2", "answer 2", "question 3", "answer 3", "question 4"]
    assert len(orch.history) == 6
    assert [m.content for m in orch.history][:2] == ["question 2", "answer 2"]
    assert orch.history[0].name == "alice"


async def test_empty_turn_is_an_error_event() -> None:
    orch = PlaybookOrchestrator(ScriptedLLM([]), playbook(), Tools().registry)
    events = await collect(orch, "  ")
    assert isinstance(events[0], ErrorEvent) and events[0].error.code == "empty_turn"


async def test_metrics_and_hooks_of_a_turn() -> None:
    from llmrtc.hooks import Hooks
    from llmrtc.metrics import InMemoryMetrics, MetricNames

    seen: list[str] = []

    class Spy(Hooks):
        def on_llm_start(self, ctx: Any, request: Any) -> None:
            seen.append(f"llm_start:{ctx.turn_id}")

        def on_tool_end(self, ctx: Any, result: Any, timing: Any) -> None:
            seen.append(f"tool_end:{result.tool_name}")

    tools = Tools()
    metrics = InMemoryMetrics()
    llm = ScriptedLLM([ScriptedReply(tool_calls=[call("charge", "c1", amount=2)]), "", "Done."])
    orch = PlaybookOrchestrator(llm, playbook(), tools.registry, metrics=metrics, hooks=Spy())
    await orch.execute_turn("charge", turn_id="m1")
    assert seen.count("llm_start:m1") == 3 and "tool_end:charge" in seen
    assert len(metrics.timings(MetricNames.LLM_DURATION, {"provider": "scripted"})) == 3
    assert len(metrics.timings(MetricNames.LLM_TTFT, {"provider": "scripted"})) == 1
    assert metrics.counter(MetricNames.TOOL_CALLS, {"tool": "charge"}) == 1
    tags = {"playbook": "shop", "transition": "charged", "from": "orders", "to": "billing"}
    assert metrics.counter(MetricNames.STAGE_TRANSITIONS, tags) == 1


async def test_timeout_transition_before_and_after_turns() -> None:
    from llmrtc.playbooks import PlaybookEngine, TimeoutCondition

    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    pb = Playbook(
        id="t",
        initial_stage="open",
        stages=[Stage(id="open", system_prompt="Open."), Stage(id="idle", system_prompt="Idle.")],
        transitions=[
            Transition(
                id="idle", from_stage="open", condition=TimeoutCondition(duration_ms=30_000), target="idle"
            )
        ],
    )
    engine = PlaybookEngine(pb, clock=clock)
    llm = ScriptedLLM(["first", "second"])
    orch = PlaybookOrchestrator(llm, engine)
    await orch.execute_turn("hello")
    assert engine.current_stage.id == "open"
    clock.now = 31.0  # the user comes back after a long pause
    events = await collect(orch, "still there?")
    assert isinstance(events[0], StageChangeEvent) and events[0].transition_id == "idle"
    assert llm.requests[-1].messages[0].content == "Idle."  # answered by the new stage
