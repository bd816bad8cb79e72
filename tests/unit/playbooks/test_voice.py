"""VoicePlaybookOrchestrator: STT -> playbook -> chunked streaming TTS, same events as the conversation one."""

from __future__ import annotations

import asyncio
from typing import Any

from llmrtc.events import (
    ErrorEvent,
    LLMChunkEvent,
    LLMFinalEvent,
    StageChangeEvent,
    ToolCallEvent,
    ToolResultEvent,
    TranscriptEvent,
    TTSAudioEvent,
    TTSCompleteEvent,
    TTSStartEvent,
    TurnCompleteEvent,
    TurnEvent,
)
from llmrtc.orchestrator import ConversationOrchestrator, ConversationProviders, OrchestratorConfig
from llmrtc.playbooks import KeywordCondition, Playbook, Stage, ToolCallCondition, Transition
from llmrtc.playbooks.voice import VoicePlaybookOrchestrator
from llmrtc.testing import FakeSTT, FakeTTS, ScriptedLLM, ScriptedReply, tone_wav
from llmrtc.tools import ToolRegistry, define_tool


def registry() -> ToolRegistry:
    @define_tool
    def verify_user(account: str) -> dict[str, Any]:
        """Verify an account."""
        return {"verified": account == "123"}

    return ToolRegistry([verify_user])


def playbook() -> Playbook:
    return Playbook(
        id="voice",
        initial_stage="auth",
        stages=[
            Stage(id="auth", system_prompt="Verify the caller.", tools=["verify_user"]),
            Stage(id="help", system_prompt="Help."),
            Stage(id="end", system_prompt="Bye."),
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


async def collect(events: Any) -> list[TurnEvent]:
    return [e async for e in events]


async def test_audio_turn_through_playbook_with_streaming_tts() -> None:
    llm = ScriptedLLM(
        [
            ScriptedReply(
                tool_calls=[{"name": "verify_user", "call_id": "v1", "arguments": {"account": "123"}}]
            ),
            "",
            "You are verified. How can I help you today?",
        ]
    )
    tts = FakeTTS(sample_rate=16000, chars_per_second=200)
    orch = VoicePlaybookOrchestrator(
        ConversationProviders(llm=llm, stt=FakeSTT(["my account is 123"]), tts=tts),
        playbook(),
        registry(),
    )
    events = await collect(orch.run_turn_stream(tone_wav(0.3), speaker="alice", turn_id="t1"))
    kinds = [type(e) for e in events]
    assert kinds[0] is TranscriptEvent and kinds[-1] is TurnCompleteEvent
    assert events[0].result.text == "my account is 123"  # type: ignore[union-attr]
    for kind in (ToolCallEvent, ToolResultEvent, LLMChunkEvent, TTSStartEvent, TTSAudioEvent, LLMFinalEvent):
        assert kind in kinds
    assert kinds.index(ToolResultEvent) < kinds.index(LLMChunkEvent) < kinds.index(TTSStartEvent)
    assert kinds.index(TTSCompleteEvent) < kinds.index(TurnCompleteEvent)
    change = next(e for e in events if isinstance(e, StageChangeEvent))
    assert (change.from_stage, change.to_stage) == ("auth", "help")
    # spoken sentence by sentence, all of it
    assert tts.calls == ["You are verified.", "How can I help you today?"]
    audio = [e for e in events if isinstance(e, TTSAudioEvent)]
    assert sum(1 for e in audio if e.last_in_segment) == 2 and all(
        e.chunk.sample_rate == 16000 for e in audio
    )
    assert orch.current_stage.id == "help"
    assert (
        orch.history[0].name == "alice"
        and orch.history[-1].content == "You are verified. How can I help you today?"
    )


async def test_same_event_types_as_conversation_orchestrator() -> None:
    reply = "Hello there. Nice to meet you."
    simple = Playbook(id="s", initial_stage="a", stages=[Stage(id="a", system_prompt="Be nice.")])
    voice = VoicePlaybookOrchestrator(
        ConversationProviders(llm=ScriptedLLM([reply]), tts=FakeTTS(chars_per_second=500)), simple
    )
    conv = ConversationOrchestrator(
        ConversationProviders(llm=ScriptedLLM([reply]), tts=FakeTTS(chars_per_second=500)),
        OrchestratorConfig(system_prompt="Be nice."),
    )
    ours = await collect(voice.run_text_turn_stream("hi", turn_id="x"))
    theirs = await collect(conv.run_text_turn_stream("hi", turn_id="x"))

    def shape(events: list[TurnEvent]) -> list[str]:
        out: list[str] = []
        for e in events:
            name = type(e).__name__
            if not out or out[-1] != name:
                out.append(name)
        return out

    assert {type(e) for e in ours} == {type(e) for e in theirs}
    for events in (ours, theirs):
        names = shape(events)
        assert names[0] == "TranscriptEvent" and names[-2:] == ["TTSCompleteEvent", "TurnCompleteEvent"]
        assert names.index("LLMChunkEvent") < names.index("LLMFinalEvent")
        assert names.index("TTSStartEvent") < names.index("TTSAudioEvent")
    assert [m.role for m in voice.history] == [m.role for m in conv.history] == ["user", "assistant"]
    assert voice.history[-1].content == conv.history[-1].content == reply


async def test_run_text_turn_collects_outcome() -> None:
    simple = Playbook(id="s", initial_stage="a", stages=[Stage(id="a")])
    voice = VoicePlaybookOrchestrator(
        ConversationProviders(
            llm=ScriptedLLM(["One. Two."]), tts=FakeTTS(sample_rate=8000, chars_per_second=100)
        ),
        simple,
    )
    outcome = await voice.run_text_turn("count")
    assert outcome.completed and outcome.text == "One. Two." and outcome.sample_rate == 8000
    assert outcome.audio_duration_s > 0


async def test_barge_in_records_only_spoken_sentences() -> None:
    simple = Playbook(id="s", initial_stage="a", stages=[Stage(id="a")])
    tts = FakeTTS(sample_rate=8000, chars_per_second=100, realtime_factor=0.5)
    voice = VoicePlaybookOrchestrator(
        ConversationProviders(
            llm=ScriptedLLM(["First sentence here. Second one is long and never heard."]), tts=tts
        ),
        simple,
    )
    stream = voice.run_text_turn_stream("talk", turn_id="b1")
    first_done = False
    async for event in stream:
        if first_done:
            break  # the consumer took the whole first sentence, then the user spoke
        first_done = isinstance(event, TTSAudioEvent) and event.last_in_segment
    assert voice.interrupt("b1")
    await stream.aclose()  # type: ignore[attr-defined]
    answer = voice.history[-1]
    assert answer.role == "assistant" and answer.interrupted
    assert answer.content == "First sentence here."
    # after the turn: the transport says what was really heard
    assert voice.interrupt("b1", "First")
    assert voice.history[-1].content == "First" and voice.history[-1].interrupted
    assert not voice.interrupt("unknown-turn", "x")


async def test_text_only_turn_and_empty_transcript_and_stt_error() -> None:
    simple = Playbook(id="s", initial_stage="a", stages=[Stage(id="a")])
    voice = VoicePlaybookOrchestrator(
        ConversationProviders(llm=ScriptedLLM(["Written only."]), stt=FakeSTT(["   "])), simple
    )
    events = await collect(voice.run_text_turn_stream("hi"))
    assert not any(isinstance(e, TTSAudioEvent) for e in events)
    assert isinstance(events[-1], TurnCompleteEvent) and events[-1].text == "Written only."

    empty = await collect(voice.run_turn_stream(tone_wav(0.2)))
    assert isinstance(empty[-1], TurnCompleteEvent) and empty[-1].metadata == {"empty_transcript": True}

    broken = await collect(voice.run_turn_stream(b"not a wav"))
    assert isinstance(broken[-1], ErrorEvent) and broken[-1].component == "stt"


async def test_llm_failure_is_an_error_event_and_nothing_is_spoken() -> None:
    simple = Playbook(id="s", initial_stage="a", stages=[Stage(id="a")])
    tts = FakeTTS()
    voice = VoicePlaybookOrchestrator(ConversationProviders(llm=ScriptedLLM([]), tts=tts), simple)
    events = await asyncio.wait_for(collect(voice.run_text_turn_stream("hi")), 5)
    assert isinstance(events[-1], ErrorEvent) and events[-1].component == "llm"
    assert tts.calls == [] and not any(isinstance(e, TurnCompleteEvent) for e in events)


async def test_barge_in_during_phase1_keeps_finished_tool_and_no_answer() -> None:
    started = asyncio.Event()

    @define_tool(interruption="finish")
    async def book_slot(slot: str) -> dict[str, str]:
        """Book a slot (never cut half-way)."""
        started.set()
        await asyncio.sleep(0.2)
        return {"booked": slot}

    pb = Playbook(id="b", initial_stage="a", stages=[Stage(id="a", tools=["book_slot"])])
    llm = ScriptedLLM(
        [ScriptedReply(tool_calls=[{"name": "book_slot", "call_id": "k1", "arguments": {"slot": "9am"}}])]
    )
    tts = FakeTTS()
    voice = VoicePlaybookOrchestrator(ConversationProviders(llm=llm, tts=tts), pb, ToolRegistry([book_slot]))

    async def consume() -> list[TurnEvent]:
        return [e async for e in voice.run_text_turn_stream("book 9am", turn_id="p1")]

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 4)
    assert voice.interrupt("p1", "")
    events = await asyncio.wait_for(task, 4)
    assert not any(isinstance(e, TurnCompleteEvent) for e in events)
    history = voice.history
    assert [m.role for m in history] == ["user", "assistant", "tool"]
    assert history[1].tool_calls[0].name == "book_slot" and "9am" in history[2].content
    assert tts.calls == [] and voice.engine.state.turn_count == 0


async def test_guardrail_withholds_the_answer_before_it_is_spoken() -> None:
    from llmrtc.errors import GuardrailError
    from llmrtc.hooks import Hooks

    class NoSecrets(Hooks):
        def on_llm_end(self, ctx: Any, result: Any, timing: Any) -> None:
            if "password" in result.full_text:
                raise GuardrailError("no secrets")

    simple = Playbook(id="s", initial_stage="a", stages=[Stage(id="a")])
    tts = FakeTTS()
    voice = VoicePlaybookOrchestrator(
        ConversationProviders(llm=ScriptedLLM(["The admin password is hunter2. Anything else?"]), tts=tts),
        simple,
        hooks=NoSecrets(),
    )
    events = await collect(voice.run_text_turn_stream("what's the password?"))
    assert isinstance(events[-1], ErrorEvent) and events[-1].error.code == "guardrail_blocked"
    assert not any(isinstance(e, LLMChunkEvent | TTSAudioEvent) for e in events)
    assert [m.role for m in voice.history] == ["user"]
