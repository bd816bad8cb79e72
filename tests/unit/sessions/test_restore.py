"""A conversation restored from the store continues where it stopped; load_history repairs bad histories."""

from __future__ import annotations

from typing import Any

import pytest

from llmrtc.errors import ConfigError, SessionStoreError
from llmrtc.history import is_consistent
from llmrtc.orchestrator import ConversationOrchestrator, ConversationProviders, OrchestratorConfig
from llmrtc.sessions import (
    RedisSessionStore,
    SessionState,
    playbook_snapshot,
    playbook_state_from_snapshot,
)
from llmrtc.testing import ScriptedLLM, ScriptedReply
from llmrtc.tools import ToolRegistry, define_tool
from llmrtc.types import Message, ToolCallRequest


@define_tool
async def lookup_order(order_id: str) -> dict[str, Any]:
    """Find an order."""
    return {"order_id": order_id, "status": "shipped"}


def orchestrator(llm: ScriptedLLM, room: str, **config: Any) -> ConversationOrchestrator:
    return ConversationOrchestrator(
        ConversationProviders(llm=llm),
        OrchestratorConfig(system_prompt="You are a support agent.", **config),
        tools=ToolRegistry([lookup_order]),
        session_id=room,
    )


async def test_a_new_worker_continues_the_conversation_from_redis(redis_url: str) -> None:
    room = "support-room"
    # worker 1: two turns, one with a tool call, saved after each turn
    llm1 = ScriptedLLM(
        [
            ScriptedReply(
                "Let me look.",
                tool_calls=[{"name": "lookup_order", "arguments": {"order_id": "A17"}, "call_id": "c1"}],
            ),
            "Order A17 has shipped.",
            "You're welcome, Alice.",
        ]
    )
    first = orchestrator(llm1, room)
    store1 = RedisSessionStore(redis_url)
    state = SessionState(session_id=room)
    for text in ("where is order A17?", "thanks!"):
        out = await first.run_text_turn(text, speaker="Alice")
        assert out.completed
        state.history = first.history
        await store1.save(state)
    await store1.aclose()  # the worker dies

    # worker 2: load at job start, then the next turn
    store2 = RedisSessionStore(redis_url)
    restored = await store2.load(room)
    assert restored is not None and restored.version == 2
    llm2 = ScriptedLLM(["It shipped yesterday."])
    second = orchestrator(llm2, room)
    second.load_history(restored.history)
    assert second.history == first.history
    out = await second.run_text_turn("when did it ship?", speaker="Alice")
    assert out.text == "It shipped yesterday."

    sent = llm2.requests[0].messages
    assert sent[0] == Message.system("You are a support agent.")
    assert [(m.role, m.content) for m in sent[1:]] == [
        ("user", "where is order A17?"),
        ("assistant", "Let me look."),
        ("tool", '{"order_id": "A17", "status": "shipped"}'),
        ("assistant", "Order A17 has shipped."),
        ("user", "thanks!"),
        ("assistant", "You're welcome, Alice."),
        ("user", "when did it ship?"),
    ]
    assert sent[2].tool_calls[0].call_id == "c1" and sent[3].tool_call_id == "c1"
    assert sent[1].name == "Alice" and is_consistent(sent[1:])

    restored.history = second.history
    await store2.save(restored)
    assert restored.version == 3 and len(restored.history) == 8
    await store2.aclose()


def bad_history() -> list[Message]:
    call = ToolCallRequest(call_id="x1", name="lookup_order", arguments={"order_id": "B2"})
    return [
        Message.tool("orphan result", tool_call_id="gone", tool_name="lookup_order"),
        Message.user("hi", name="Bob"),
        Message.assistant("checking", tool_calls=[call]),
        Message.user("are you there?", name="Bob"),  # between the call and its result
        Message.tool("{}", tool_call_id="x1", tool_name="lookup_order"),
        Message.assistant("", tool_calls=[ToolCallRequest(call_id="never", name="lookup_order")]),
        Message.assistant("Here I am."),
    ]


async def test_a_broken_stored_history_cannot_break_the_next_request() -> None:
    llm = ScriptedLLM(["fine"])
    o = orchestrator(llm, "r", history_limit=50)
    o.load_history(bad_history())
    assert is_consistent(o.history)
    await o.run_text_turn("so?", speaker="Bob")
    sent = llm.requests[0].messages[1:]
    assert is_consistent(sent)
    assert [m.content for m in sent if m.role == "user"] == ["hi", "are you there?", "so?"]
    assert "Here I am." in [m.content for m in sent]


async def test_load_history_caps_copies_and_validates() -> None:
    o = orchestrator(ScriptedLLM([]), "r", max_stored_messages=3)
    given = [Message.user(f"m{i}") for i in range(6)]
    o.load_history(given)
    assert [m.content for m in o.history] == ["m3", "m4", "m5"]
    given[5].content = "changed by the caller"
    assert o.history[-1].content == "m5"
    o.load_history([])
    assert o.history == []
    with pytest.raises(ConfigError):
        o.load_history([{"role": "robot"}])  # type: ignore[list-item]


async def test_load_history_is_refused_while_a_turn_runs() -> None:
    o = orchestrator(ScriptedLLM(["slow answer"], ttft_s=5), "r")
    stream = o.run_text_turn_stream("hello")
    await anext(stream)  # the turn is running
    with pytest.raises(ConfigError):
        o.load_history([Message.user("x")])
    await stream.aclose()
    o.load_history([Message.user("x")])
    assert [m.content for m in o.history] == ["x"]


def test_playbook_state_round_trips_through_a_snapshot() -> None:
    from llmrtc.playbooks.state import PlaybookState, StageVisit

    state = PlaybookState(
        current_stage_id="resolve",
        stage_entered_at=95.0,
        turn_count=4,
        stage_turn_count=1,
        stage_history=[
            StageVisit("greet", 80.0, 95.0, turns=3),
            StageVisit("resolve", 95.0, None, turns=1, via_transition="t1"),
        ],
        context={"intent": "refund", "order": {"id": "A17"}},
        session_metadata={"user": "alice"},
        transition_count=1,
    )
    snap = playbook_snapshot(state, now=100.0)
    assert snap["stage_entered_at"] == 5.0 and snap["stage_history"][0]["entered_at"] == 20.0
    stored = SessionState(session_id="r", playbook=snap).model_dump_json()
    back = SessionState.model_validate_json(stored).playbook
    assert back is not None
    restored = playbook_state_from_snapshot(back, now=5000.0)
    assert restored.current_stage_id == "resolve" and restored.turn_count == 4
    assert restored.stage_entered_at == 4995.0  # 5 s in the stage, on the new process's clock
    assert restored.stage_history[0] == StageVisit("greet", 4980.0, 4995.0, turns=3)
    assert restored.stage_history[1].via_transition == "t1" and restored.stage_history[1].exited_at is None
    assert restored.context == {"intent": "refund", "order": {"id": "A17"}}


def test_bad_playbook_snapshots_are_typed_errors() -> None:
    from llmrtc.playbooks.state import PlaybookState

    for bad in ({}, {"current_stage_id": "x"}, {"times": "age_s", "unknown": 1, "stage_entered_at": 0}):
        with pytest.raises(SessionStoreError) as info:
            playbook_state_from_snapshot(bad)
        assert info.value.code == "session_playbook_invalid"
    unsafe = PlaybookState(current_stage_id="a", stage_entered_at=0.0, context={"obj": object()})
    with pytest.raises(SessionStoreError):
        playbook_snapshot(unsafe, now=1.0)
