"""Issue 18's reproduced bugs, one test each, on the one turn engine.

- a guardrail raising in ``on_llm_end`` in a single-phase stage with a tool: the text written before the
  tool call is never shown or spoken;
- barge-in at the first audio chunk leaves the stage and the turn count unchanged, and no ``stage_change``
  precedes the audio; a turn played through a :class:`~llmrtc.playout.Playout` changes stage only after
  the playout played it all;
- ``HISTORY_LIMIT`` is honoured in playbook mode (the worker's ``build_conversation`` with a ``PLAYBOOK``);
- one retry layer: a failing OpenAI-compatible server gets exactly ``1 + PROVIDER_MAX_RETRIES`` requests
  for one turn through the real OpenAI provider.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from llmrtc.conversation import ConversationProviders, OrchestratorConfig
from llmrtc.errors import GuardrailError
from llmrtc.events import (
    ErrorEvent,
    LLMChunkEvent,
    StageChangeEvent,
    ToolCallEvent,
    TTSAudioEvent,
    TTSCompleteEvent,
    TTSStartEvent,
    TurnCompleteEvent,
    TurnEvent,
)
from llmrtc.hooks import Hooks
from llmrtc.orchestrator import ConversationOrchestrator
from llmrtc.playbooks import KeywordCondition, Playbook, Stage, Transition
from llmrtc.playbooks.voice import VoicePlaybookOrchestrator
from llmrtc.playout import Playout
from llmrtc.testing import FakeSTT, FakeTTS, ScriptedLLM, ScriptedReply
from llmrtc.tools import ToolRegistry, define_tool

SECRET_THEN_TOOL = ScriptedReply(
    text="The admin password is hunter2. Let me look that up.",
    tool_calls=[{"name": "lookup", "call_id": "c1", "arguments": {"what": "hours"}}],
)


def _tools() -> ToolRegistry:
    @define_tool
    def lookup(what: str) -> dict[str, Any]:
        """Look something up."""
        return {"what": what, "answer": "nine to five"}

    return ToolRegistry([lookup])


class NoSecrets(Hooks):
    """A guardrail: withholds any LLM round that mentions a password."""

    def __init__(self) -> None:
        self.rounds: list[str] = []

    def on_llm_end(self, ctx: Any, result: Any, timing: Any) -> None:
        self.rounds.append(result.full_text)
        if "password" in result.full_text:
            raise GuardrailError("no secrets")


async def _collect(events: AsyncIterator[TurnEvent]) -> list[TurnEvent]:
    return [e async for e in events]


# ---------------------------------------------------------------------------------------------- guardrail


@pytest.mark.parametrize("speak", [True, False])
async def test_guardrail_blocks_text_written_before_a_tool_call_in_a_single_phase_stage(speak: bool) -> None:
    stage = Stage(id="desk", system_prompt="Help.", tools=["lookup"], two_phase=False)
    book = Playbook(id="p", initial_stage="desk", stages=[stage])
    llm = ScriptedLLM([SECRET_THEN_TOOL, "We are open nine to five."])
    tts = FakeTTS(chars_per_second=500)
    guard = NoSecrets()
    voice = VoicePlaybookOrchestrator(ConversationProviders(llm=llm, tts=tts), book, _tools(), hooks=guard)
    events = await _collect(voice.run_text_turn_stream("when are you open?", speak=speak))
    assert guard.rounds == [SECRET_THEN_TOOL.text], "the guardrail saw the tool round"
    assert not any(isinstance(e, LLMChunkEvent | TTSAudioEvent | ToolCallEvent) for e in events), [
        type(e).__name__ for e in events
    ]
    assert tts.calls == [], "nothing of the blocked round reached the TTS"
    last = events[-1]
    assert isinstance(last, ErrorEvent) and last.error.code == "guardrail_blocked"
    assert len(llm.requests) == 1, "the tool did not run and no further round was asked for"
    assert [m.role for m in voice.history] == ["user"]
    assert voice.engine.state.turn_count == 0


async def test_guardrail_on_the_plain_assistant_with_a_tool() -> None:
    llm = ScriptedLLM([SECRET_THEN_TOOL, "We are open nine to five."])
    tts = FakeTTS(chars_per_second=500)
    plain = ConversationOrchestrator(
        ConversationProviders(llm=llm, tts=tts), tools=_tools(), hooks=NoSecrets()
    )
    events = await _collect(plain.run_text_turn_stream("when are you open?"))
    assert not any(isinstance(e, LLMChunkEvent | TTSAudioEvent | ToolCallEvent) for e in events)
    assert tts.calls == [] and isinstance(events[-1], ErrorEvent)


async def test_a_passing_guardrail_releases_the_text_before_the_tool_call_in_order() -> None:
    stage = Stage(id="desk", system_prompt="Help.", tools=["lookup"], two_phase=False)
    book = Playbook(id="p", initial_stage="desk", stages=[stage])
    before = ScriptedReply(
        text="Let me check that.",
        tool_calls=[{"name": "lookup", "call_id": "c1", "arguments": {"what": "hours"}}],
    )
    llm = ScriptedLLM([before, "We are open nine to five."])
    tts = FakeTTS(chars_per_second=500)
    voice = VoicePlaybookOrchestrator(
        ConversationProviders(llm=llm, tts=tts), book, _tools(), hooks=NoSecrets()
    )
    events = await _collect(voice.run_text_turn_stream("when are you open?"))
    assert isinstance(events[-1], TurnCompleteEvent)
    assert tts.calls == ["Let me check that.", "We are open nine to five."]
    kinds = [type(e) for e in events]
    assert kinds.index(LLMChunkEvent) < kinds.index(ToolCallEvent)


# ---------------------------------------------------------------------------------------------- commit


def _goodbye_playbook() -> Playbook:
    return Playbook(
        id="bye",
        initial_stage="help",
        stages=[Stage(id="help", system_prompt="Help."), Stage(id="end", system_prompt="Bye.")],
        transitions=[
            Transition(
                id="bye", from_stage="help", condition=KeywordCondition(keywords=["goodbye"]), target="end"
            )
        ],
    )


GOODBYE = "Goodbye and thank you for calling. Have a lovely evening."


def _voice(tts: FakeTTS, llm: ScriptedLLM | None = None) -> VoicePlaybookOrchestrator:
    return VoicePlaybookOrchestrator(
        ConversationProviders(llm=llm or ScriptedLLM([GOODBYE]), stt=FakeSTT(["bye"]), tts=tts),
        _goodbye_playbook(),
    )


async def test_barge_in_at_the_first_audio_chunk_changes_no_stage() -> None:
    voice = _voice(FakeTTS(chars_per_second=200))  # the whole answer is synthesized in no time
    stream = voice.run_text_turn_stream("bye", turn_id="t1")
    seen: list[TurnEvent] = []
    async for event in stream:
        seen.append(event)
        if isinstance(event, TTSAudioEvent):
            await asyncio.sleep(0.05)  # the producer runs ahead meanwhile: all of the audio is queued
            break  # the listener barged in at the first chunk
    await stream.aclose()
    assert not any(isinstance(e, StageChangeEvent) for e in seen)
    assert voice.current_stage.id == "help", "a cut turn changes no stage"
    assert voice.engine.state.turn_count == 0, "a cut turn is not counted"
    assert voice.history[0].content == "bye"
    assert all(m.interrupted for m in voice.history[1:] if m.role == "assistant")


async def test_barge_in_by_cancelling_the_consumer_task_changes_no_stage() -> None:
    voice = _voice(FakeTTS(chars_per_second=200))
    first_audio = asyncio.Event()
    seen: list[TurnEvent] = []

    async def consume() -> None:
        async for event in voice.run_text_turn_stream("bye", turn_id="t2"):
            seen.append(event)
            if isinstance(event, TTSAudioEvent):
                first_audio.set()
                await asyncio.sleep(10)  # the audio is being played when the user speaks

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_audio.wait(), 5)
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert voice.current_stage.id == "help" and voice.engine.state.turn_count == 0
    assert not any(isinstance(e, StageChangeEvent) for e in seen)


async def test_a_completed_turn_changes_stage_after_its_audio() -> None:
    voice = _voice(FakeTTS(chars_per_second=200))
    events = await _collect(voice.run_text_turn_stream("bye", turn_id="t3"))
    kinds = [type(e) for e in events]
    change = kinds.index(StageChangeEvent)
    assert kinds.index(TTSStartEvent) < change
    assert max(i for i, k in enumerate(kinds) if k is TTSAudioEvent) < change
    assert kinds.index(TTSCompleteEvent) < change < kinds.index(TurnCompleteEvent)
    assert voice.current_stage.id == "end" and voice.engine.state.turn_count == 1


class RealtimeOut:
    """An audio output that plays ``speed`` times faster than real time and remembers what it played."""

    def __init__(self, speed: float = 4.0) -> None:
        self.speed = speed
        self.played = bytearray()
        self.rate = 0

    async def capture(self, pcm: bytes, sample_rate: int) -> None:
        self.rate = sample_rate
        await asyncio.sleep(len(pcm) / 2 / sample_rate / self.speed)
        self.played.extend(pcm)

    async def flush(self) -> None:
        return None

    def clear(self) -> float:
        return 0.0

    @property
    def queued_s(self) -> float:
        return 0.0

    async def wait_for_playout(self) -> None:
        return None


async def test_a_played_turn_changes_stage_only_after_the_playout_played_it_all() -> None:
    voice = _voice(FakeTTS(sample_rate=16000, chars_per_second=40))  # about 1.4 s of audio, made at once
    out = RealtimeOut(speed=4.0)
    playout = Playout(out)
    at_change: dict[str, Any] = {}
    async for event in voice.run_text_turn_stream("bye", turn_id="t4", playout=playout):
        if isinstance(event, StageChangeEvent):
            at_change = {"done": playout.done, "completed": playout.completed, "played": len(out.played)}
            at_change["stage"] = voice.current_stage.id
    assert at_change, "the stage changed"
    assert at_change["done"] and at_change["completed"]
    assert at_change["played"] == round(1.0 * len(GOODBYE) / 40 * 16000) * 2 or at_change["played"] > 0
    assert at_change["played"] >= playout.fed_s * 16000 * 2 - 2, "every byte was played before the change"
    assert playout.heard_text() == GOODBYE
    assert voice.engine.state.turn_count == 1


async def test_a_played_turn_cut_at_its_first_audio_records_what_was_heard_and_stays() -> None:
    voice = _voice(FakeTTS(sample_rate=16000, chars_per_second=40))
    out = RealtimeOut(speed=1.0)
    started = asyncio.Event()
    playout = Playout(out, on_first_audio=started.set)
    seen: list[TurnEvent] = []

    async def consume() -> None:
        async for event in voice.run_text_turn_stream("bye", turn_id="t5", playout=playout):
            seen.append(event)

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 5)
    playout.pause()  # the worker's barge-in: silence at once, then the turn is cancelled
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert voice.current_stage.id == "help" and voice.engine.state.turn_count == 0
    assert not any(isinstance(e, StageChangeEvent | TurnCompleteEvent) for e in seen)
    heard = playout.heard_text()
    assistant = [m for m in voice.history if m.role == "assistant"]
    if heard:
        assert assistant and assistant[-1].content == heard and assistant[-1].interrupted
    else:
        assert not assistant, "nothing heard: no answer recorded"


# ---------------------------------------------------------------------------------------------- history


async def test_history_limit_is_honoured_in_playbook_mode(tmp_path: Path) -> None:
    from worker.config import WorkerSettings
    from worker.conversation import Providers, build_conversation

    book = tmp_path / "book.json"
    book.write_text(
        json.dumps(
            {
                "id": "one",
                "initial_stage": "a",
                "stages": [{"id": "a", "system_prompt": "Be brief."}],
            }
        )
    )
    settings = WorkerSettings(_env_file=None, PLAYBOOK=str(book), HISTORY_LIMIT=4)
    llm = ScriptedLLM([f"Answer {i}." for i in range(6)])
    conv = build_conversation(settings, Providers(llm=llm, stt=FakeSTT([]), tts=FakeTTS()), "room-h")
    assert isinstance(conv.orchestrator, VoicePlaybookOrchestrator)
    assert not isinstance(conv.orchestrator, ConversationOrchestrator), "playbook mode"
    for i in range(6):
        async for _ in conv.run_text_turn(f"Question {i}?", speaker="Ann", turn_id=f"h{i}"):
            pass
    assert len(conv.orchestrator.history) == 12
    for i, request in enumerate(llm.requests):
        messages = request.messages
        assert messages[0].role == "system" and messages[-1].content == f"Question {i}?"
        past = messages[1:-1]
        assert len(past) == min(2 * i, 4), f"turn {i}: the LLM saw {len(past)} past messages"
    assert [m.content for m in llm.requests[-1].messages[1:-1]] == [
        "Question 3?",
        "Answer 3.",
        "Question 4?",
        "Answer 4.",
    ]


async def test_history_limit_is_the_same_rule_for_the_plain_assistant() -> None:
    llm = ScriptedLLM([f"Answer {i}." for i in range(4)])
    plain = ConversationOrchestrator(ConversationProviders(llm=llm), OrchestratorConfig(history_limit=2))
    for i in range(4):
        await plain.run_text_turn(f"Question {i}?")
    assert [len(r.messages) - 2 for r in llm.requests] == [0, 2, 2, 2]


async def test_history_limit_zero_means_no_past_messages() -> None:
    llm = ScriptedLLM(["One.", "Two."])
    plain = ConversationOrchestrator(ConversationProviders(llm=llm), OrchestratorConfig(history_limit=0))
    await plain.run_text_turn("First?")
    await plain.run_text_turn("Second?")
    assert [m.content for m in llm.requests[1].messages[1:]] == ["Second?"]
    assert len(plain.history) == 4


# ---------------------------------------------------------------------------------------------- retries


class FailingOpenAI:
    """An OpenAI-compatible server whose chat completions always fail with HTTP 500; counts requests."""

    def __init__(self) -> None:
        self.chat_requests = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _chat(self, request: web.Request) -> web.Response:
        await request.read()
        self.chat_requests += 1
        return web.json_response(
            {"error": {"message": "the server had an error", "type": "server_error", "code": None}},
            status=500,
        )

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{self.port}/v1"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.mark.parametrize("max_retries", [0, 2])
@pytest.mark.parametrize("playbook_mode", [False, True])
async def test_one_retry_layer_a_failing_provider_gets_one_plus_max_retries_requests(
    max_retries: int, playbook_mode: bool
) -> None:
    from llmrtc.providers.registry import create_llm_from_env

    server = FailingOpenAI()
    base_url = await server.start()
    try:
        llm = create_llm_from_env(
            {
                "LLM_PROVIDER": "openai",
                "OPENAI_API_KEY": "sk-test-not-a-real-key",
                "OPENAI_BASE_URL": base_url,
                "OPENAI_MODEL": "gpt-test",
                "PROVIDER_MAX_RETRIES": str(max_retries),
            }
        )
        providers = ConversationProviders(llm=llm, tts=FakeTTS(chars_per_second=500))
        voice: VoicePlaybookOrchestrator
        if playbook_mode:
            two_phase = Stage(id="desk", system_prompt="Help.", tools=["lookup"], two_phase=True)
            book = Playbook(id="p", initial_stage="desk", stages=[two_phase])
            voice = VoicePlaybookOrchestrator(providers, book, _tools())
        else:
            voice = ConversationOrchestrator(providers, tools=_tools())
        events = await asyncio.wait_for(_collect(voice.run_text_turn_stream("hello?")), 30)
        last = events[-1]
        assert isinstance(last, ErrorEvent) and last.component == "llm"
        assert server.chat_requests == 1 + max_retries
        await llm.aclose()
    finally:
        await server.stop()


# ---------------------------------------------------------------------------------------------- heard


async def test_a_cut_after_a_tool_round_records_the_rounds_text_once() -> None:
    stage = Stage(id="desk", system_prompt="Help.", tools=["lookup"], two_phase=False)
    book = Playbook(id="p", initial_stage="desk", stages=[stage])
    first = ScriptedReply(
        text="Let me check that for you.",
        tool_calls=[{"name": "lookup", "call_id": "c1", "arguments": {"what": "hours"}}],
    )
    llm = ScriptedLLM([first, "We are open from nine in the morning to five in the evening every day."])
    tts = FakeTTS(sample_rate=16000, chars_per_second=40)
    voice = VoicePlaybookOrchestrator(ConversationProviders(llm=llm, tts=tts), book, _tools())
    playout = Playout(RealtimeOut(speed=2.0))

    async def consume() -> None:
        async for _ in voice.run_text_turn_stream("hours?", turn_id="r1", playout=playout):
            pass

    task = asyncio.create_task(consume())
    while playout.heard_s < 1.6:  # noqa: ASYNC110 - the first round is 0.65 s: cut inside the second
        await asyncio.sleep(0.01)
    playout.pause()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    heard = playout.heard_text()
    assert heard.startswith("Let me check that for you. We are open")
    roles = [(m.role, m.content, bool(m.tool_calls), m.interrupted) for m in voice.history]
    assert roles[1] == ("assistant", "Let me check that for you.", True, False)
    assert roles[2][0] == "tool"
    assert roles[3] == ("assistant", heard.removeprefix("Let me check that for you. "), False, True)
    # the transport's word after the turn ended (e.g. a later heard_text) is split the same way
    assert voice.interrupt("r1", "Let me check that for you. We are")
    assert voice.history[-1].content == "We are" and voice.history[-1].interrupted
    assert voice.interrupt("r1", "Let me")
    assert voice.history[-1].role == "tool", "nothing heard after the recorded round: no answer message"
