"""A playbook room re-dispatched to another worker continues in its stage, with its history."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from llmrtc.errors import ConfigError, PlaybookError
from llmrtc.history import is_consistent
from llmrtc.orchestrator import ConversationProviders
from llmrtc.playbooks import KeywordCondition, Playbook, Stage, ToolCallCondition, Transition
from llmrtc.playbooks.engine import PlaybookEngine, StageHookContext
from llmrtc.playbooks.hooks import PlaybookContext, PlaybookHooks
from llmrtc.playbooks.orchestrator import PlaybookOrchestrator
from llmrtc.playbooks.voice import VoicePlaybookOrchestrator
from llmrtc.sessions import InMemorySessionStore, SessionState
from llmrtc.testing import FakeTTS, ScriptedLLM, ScriptedReply
from llmrtc.tools import ToolRegistry, define_tool
from llmrtc.types import Message, ToolCallRequest


class Clock:
    """A settable monotonic clock, so times in the stage are exact."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class EnterLog(PlaybookHooks):
    """Records every stage entered: by the stage's own ``on_enter`` and by the playbook hook."""

    def __init__(self) -> None:
        self.entered: list[str] = []

    def on_enter(self, ctx: StageHookContext) -> None:
        self.entered.append(f"on_enter:{ctx.stage.id}")

    def on_stage_enter(self, ctx: PlaybookContext, stage: Stage, previous_stage: Stage | None) -> None:
        self.entered.append(f"hook:{stage.id}")


def registry() -> ToolRegistry:
    @define_tool
    def verify_user(account: str) -> dict[str, Any]:
        """Verify an account."""
        return {"verified": account == "123"}

    return ToolRegistry([verify_user])


def playbook(log: EnterLog, playbook_id: str = "support") -> Playbook:
    return Playbook(
        id=playbook_id,
        initial_stage="auth",
        stages=[
            Stage(
                id="auth", system_prompt="Verify the caller.", tools=["verify_user"], on_enter=log.on_enter
            ),
            Stage(id="help", system_prompt="Help the verified caller.", on_enter=log.on_enter),
            Stage(id="end", system_prompt="Say goodbye.", on_enter=log.on_enter),
        ],
        transitions=[
            Transition(
                id="verified",
                from_stage="auth",
                condition=ToolCallCondition(tool_name="verify_user", on="success"),
                target="help",
            ),
            Transition(
                id="bye", from_stage="help", condition=KeywordCondition(keywords=["goodbye"]), target="end"
            ),
        ],
    )


def voice(llm: ScriptedLLM, log: EnterLog, clock: Clock, room: str) -> VoicePlaybookOrchestrator:
    engine = PlaybookEngine(playbook(log), registry=registry(), hooks=[log], session_id=room, clock=clock)
    return VoicePlaybookOrchestrator(
        ConversationProviders(llm=llm, tts=FakeTTS(chars_per_second=2000)),
        engine,
        registry(),
        session_id=room,
    )


async def test_a_new_worker_continues_the_playbook_in_its_stage() -> None:
    room = "pb-room"
    store = InMemorySessionStore()

    # worker 1: the caller is verified, the playbook moves to stage 2 ("help"); saved after the turn
    log1, clock1 = EnterLog(), Clock(100.0)
    llm1 = ScriptedLLM(
        [
            ScriptedReply(
                tool_calls=[{"name": "verify_user", "call_id": "v1", "arguments": {"account": "123"}}]
            ),
            "",
            "You are verified. How can I help?",
        ]
    )
    first = voice(llm1, log1, clock1, room)
    out = await first.run_text_turn("my account is 123", speaker="alice", turn_id="t1")
    assert out.completed and first.current_stage.id == "help"
    assert log1.entered == ["on_enter:auth", "hook:auth", "on_enter:help", "hook:help"]
    first.engine.update_context({"account": "123"})
    clock1.now = 112.5  # 12.5 s in "help" when the worker saves and dies
    state = SessionState(session_id=room, history=first.history, playbook=first.snapshot())
    await store.save(state)

    # worker 2: a fresh orchestrator restores history and engine before its first turn
    loaded = await store.load(room)
    assert loaded is not None and loaded.playbook is not None
    log2, clock2 = EnterLog(), Clock(9000.0)
    llm2 = ScriptedLLM(["Sure, I can help with billing."])
    second = voice(llm2, log2, clock2, room)
    second.load_history(loaded.history)
    second.restore(loaded.playbook)
    assert second.history == first.history
    assert second.current_stage.id == "help"
    assert second.engine.time_in_stage() == pytest.approx(12.5)
    restored = second.engine.state
    assert (restored.turn_count, restored.stage_turn_count, restored.transition_count) == (1, 0, 1)
    assert [v.stage_id for v in restored.stage_history] == ["auth", "help"]
    assert restored.context == {"account": "123"}
    assert log2.entered == []  # restoring re-enters nothing

    out = await second.run_text_turn("I have a billing question", speaker="alice", turn_id="t2")
    assert out.completed and out.text == "Sure, I can help with billing."
    assert log2.entered == []  # nor does the first turn after it (no second start())
    request = llm2.requests[0]
    assert request.metadata["stage"] == "help"
    assert request.messages[0].role == "system" and "Help the verified caller." in request.messages[0].content
    assert "Verify the caller." not in request.messages[0].content
    assert [t.name for t in request.tools] == []  # stage 2 offers no tools
    sent = request.messages[1:]
    assert [(m.role, m.content) for m in sent] == [
        ("user", "my account is 123"),
        ("assistant", ""),
        ("tool", '{"verified": true}'),
        ("assistant", "You are verified. How can I help?"),
        ("user", "I have a billing question"),
    ]
    assert sent[1].tool_calls[0].call_id == "v1" and sent[2].tool_call_id == "v1" and is_consistent(sent)
    assert second.engine.state.turn_count == 2 and second.engine.state.stage_turn_count == 1

    # transitions after the restore run the hooks as usual, and the next save continues the version line
    llm2_more = ScriptedLLM(["Thanks for calling, goodbye!"])
    second.playbook_orchestrator.llm = llm2_more
    await second.run_text_turn("that's all", turn_id="t3")
    assert second.current_stage.id == "end" and log2.entered == ["on_enter:end", "hook:end"]
    loaded.history, loaded.playbook = second.history, second.snapshot()
    await store.save(loaded)
    assert loaded.version == 2 and loaded.playbook["current_stage_id"] == "end"


async def test_text_orchestrator_restores_the_same_way() -> None:
    log = EnterLog()
    source = PlaybookOrchestrator(ScriptedLLM(["", "Welcome."]), playbook(log), registry())
    await source.execute_turn("hello")
    await source.engine.transition_to("help")
    snap = source.snapshot()
    assert snap["playbook_id"] == "support" and snap["current_stage_id"] == "help"

    log2 = EnterLog()
    llm = ScriptedLLM(["How can I help?"])
    target = PlaybookOrchestrator(llm, playbook(log2), registry())
    target.load_history(source.history)
    target.restore(snap)
    result = await target.execute_turn("again")
    assert result.stage == "help" and log2.entered == []
    assert [m.content for m in llm.requests[0].messages[1:]] == ["hello", "Welcome.", "again"]


def broken_history() -> list[Message]:
    call = ToolCallRequest(call_id="x1", name="verify_user", arguments={"account": "9"})
    return [
        Message.tool("orphan result", tool_call_id="gone", tool_name="verify_user"),
        Message.user("hi", name="bob"),
        Message.assistant("checking", tool_calls=[call]),
        Message.user("are you there?", name="bob"),  # between the call and its result
        Message.tool("{}", tool_call_id="x1", tool_name="verify_user"),
        Message.assistant("", tool_calls=[ToolCallRequest(call_id="never", name="verify_user")]),
        Message.assistant("Here I am."),
    ]


async def test_load_history_repairs_caps_copies_and_validates() -> None:
    llm = ScriptedLLM(["fine"])
    orch = voice(llm, EnterLog(), Clock(0.0), "r")
    orch.load_history(broken_history())
    assert is_consistent(orch.history)
    assert [m.content for m in orch.history] == ["hi", "checking", "are you there?", "Here I am."]
    await orch.run_text_turn("so?", speak=False)
    assert is_consistent(llm.requests[0].messages[1:])

    capped = PlaybookOrchestrator(ScriptedLLM([]), playbook(EnterLog()), max_stored_messages=3)
    given = [Message.user(f"m{i}") for i in range(6)]
    capped.load_history(given)
    assert [m.content for m in capped.history] == ["m3", "m4", "m5"]
    given[5].content = "changed by the caller"
    assert capped.history[-1].content == "m5"
    unlimited = PlaybookOrchestrator(ScriptedLLM([]), playbook(EnterLog()), max_stored_messages=10)
    unlimited.load_history(given)
    assert len(unlimited.history) == 6
    with pytest.raises(ConfigError):
        capped.load_history([{"role": "robot"}])  # type: ignore[list-item]
    with pytest.raises(ConfigError):
        orch.load_history([Message.user("ok"), 42])  # type: ignore[list-item]
    assert [m.content for m in capped.history] == ["m3", "m4", "m5"]  # unchanged after a refusal


async def test_load_history_and_restore_are_refused_while_a_turn_runs() -> None:
    orch = voice(ScriptedLLM(["slow answer"], ttft_s=5), EnterLog(), Clock(0.0), "r")
    snap = orch.snapshot()
    stream = orch.run_text_turn_stream("hello")
    await anext(stream)  # the turn is running
    with pytest.raises(ConfigError):
        orch.load_history([Message.user("x")])
    with pytest.raises(ConfigError):
        orch.restore(snap)
    await stream.aclose()
    orch.load_history([Message.user("x")])
    orch.restore(snap)
    assert [m.content for m in orch.history] == ["x"]

    slow = ScriptedLLM(["slow"], ttft_s=5)
    text = PlaybookOrchestrator(slow, playbook(EnterLog()), registry())
    events = text.stream_turn("hello")
    task = asyncio.create_task(anext(events))
    for _ in range(500):  # until the turn waits for the LLM
        if slow.requests:
            break
        await asyncio.sleep(0.01)
    assert slow.requests
    with pytest.raises(ConfigError):
        text.load_history([])
    with pytest.raises(ConfigError):
        text.restore(snap)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await events.aclose()
    text.load_history([])


def _good_snapshot() -> dict[str, Any]:
    engine = PlaybookEngine(playbook(EnterLog()), clock=Clock(50.0))
    return engine.snapshot()


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda s: {**s, "current_stage_id": "gone"}, "no stage 'gone'"),
        (lambda s: {**s, "playbook_id": "other"}, "belongs to playbook 'other'"),
        (lambda s: {k: v for k, v in s.items() if k != "times"}, "not a playbook snapshot"),
        (lambda s: {**s, "surprise": 1}, "cannot restore"),
        (lambda s: {**s, "turn_count": "many"}, "turn_count"),
        (lambda s: {**s, "stage_turn_count": -1}, "stage_turn_count"),
        (lambda s: {**s, "completed": "yes"}, "completed"),
        (lambda s: {**s, "context": []}, "cannot restore"),
        (lambda s: {**s, "stage_history": []}, "stage history is empty"),
        (
            lambda s: {**s, "stage_history": [{**s["stage_history"][0], "stage_id": "help"}]},
            "last stage visit",
        ),
        (lambda s: None, "is a dict"),
        (lambda s: [s], "is a dict"),
    ],
)
def test_bad_snapshots_are_typed_errors_and_change_nothing(change: Any, why: str) -> None:
    log = EnterLog()
    engine = PlaybookEngine(playbook(log), clock=Clock(10.0))
    before = engine.snapshot()
    with pytest.raises(PlaybookError) as info:
        engine.restore(change(_good_snapshot()))
    assert info.value.code == "playbook_snapshot_invalid"
    assert why in info.value.message
    assert engine.snapshot() == before and not engine.started and log.entered == []


def test_a_state_that_is_not_json_safe_cannot_be_snapshotted() -> None:
    engine = PlaybookEngine(playbook(EnterLog()))
    engine.update_context({"handle": object()})
    with pytest.raises(PlaybookError) as info:
        engine.snapshot()
    assert info.value.code == "playbook_snapshot_invalid"


async def test_restore_then_start_keeps_the_restored_stage_silently() -> None:
    log = EnterLog()
    engine = PlaybookEngine(playbook(log), hooks=[log], clock=Clock(10.0))
    snap = _good_snapshot()
    snap.update(current_stage_id="help", turn_count=3, stage_entered_at=1.0)
    snap["stage_history"] = [
        {**snap["stage_history"][0], "exited_at": 1.0},
        {"stage_id": "help", "entered_at": 1.0, "exited_at": None, "turns": 0, "via_transition": "verified"},
    ]
    engine.restore(snap)
    await engine.start()
    assert engine.current_stage.id == "help" and engine.state.turn_count == 3 and log.entered == []
    assert engine.time_in_stage() == pytest.approx(1.0)
