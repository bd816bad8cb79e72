"""ConversationOrchestrator: streaming turns, history, tools, vision, barge-in, guardrails."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from llmrtc.errors import CodecError, ProviderConnectionError, ProviderServerError
from llmrtc.events import (
    ErrorEvent,
    LLMChunkEvent,
    LLMFinalEvent,
    ToolCallEvent,
    ToolResultEvent,
    TranscriptEvent,
    TTSAudioEvent,
    TTSCompleteEvent,
    TTSStartEvent,
    TurnCompleteEvent,
    TurnEvent,
)
from llmrtc.history import is_consistent, window
from llmrtc.hooks import Hooks
from llmrtc.metrics import InMemoryMetrics, MetricNames
from llmrtc.orchestrator import ConversationOrchestrator, ConversationProviders, OrchestratorConfig
from llmrtc.testing import FakeSTT, FakeTTS, FakeVision, ScriptedLLM, ScriptedReply, tone_wav
from llmrtc.tools import ToolRegistry, define_tool
from llmrtc.types import Message, ToolCallRequest, VisionAttachment

WAV = tone_wav(0.3)
LONG = (
    "Sure, I can help with that right away. The museum opens at nine in the morning and closes at six. "
    "Tickets cost twelve euros for adults and six for children. Is there anything else you need?"
)


def orch(
    llm: ScriptedLLM, *, stt: list[str] | None = None, tts: FakeTTS | None = None, **kw: Any
) -> ConversationOrchestrator:
    providers = ConversationProviders(llm=llm, stt=FakeSTT(stt or ["hello"]), tts=tts)
    return ConversationOrchestrator(providers, **kw)


async def collect(it: Any) -> list[TurnEvent]:
    return [ev async for ev in it]


async def test_first_audio_arrives_before_the_llm_finishes() -> None:
    llm = ScriptedLLM([LONG], ttft_s=0.3, tokens_per_s=20)
    o = orch(llm, stt=["when does the museum open?"], tts=FakeTTS())
    t0 = time.perf_counter()
    stamps: list[tuple[float, TurnEvent]] = []
    async for ev in o.run_turn_stream(WAV):
        stamps.append((time.perf_counter() - t0, ev))
    first_audio = next(t for t, ev in stamps if isinstance(ev, TTSAudioEvent))
    llm_done = next(t for t, ev in stamps if isinstance(ev, LLMFinalEvent))
    last_chunk = max(t for t, ev in stamps if isinstance(ev, LLMChunkEvent))
    assert first_audio >= 0.3  # not before the first token
    assert first_audio < last_chunk < llm_done + 1e-9
    assert llm_done - first_audio > 1.0  # the LLM streams for seconds after the first audio
    segments = {ev.segment: ev.text for _, ev in stamps if isinstance(ev, TTSAudioEvent)}
    assert segments[0] == "Sure, I can help with that right away."
    assert " ".join(segments[i] for i in sorted(segments)) == LONG
    kinds = [type(ev) for _, ev in stamps]
    assert kinds[0] is TranscriptEvent and kinds[-1] is TurnCompleteEvent
    assert kinds.index(TTSStartEvent) < kinds.index(TTSAudioEvent) and TTSCompleteEvent in kinds


async def test_history_records_turns_with_speaker_names() -> None:
    llm = ScriptedLLM(["Hi Alice.", "Hello Bob."])
    o = orch(llm, stt=["hello", "hi there"], tts=FakeTTS())
    await o.run_turn(WAV, speaker="Alice")
    out = await o.run_turn(WAV, speaker="Bob")
    assert out.completed and out.text == "Hello Bob." and out.transcript == "hi there"
    assert out.audio_duration_s == pytest.approx(len("Hello Bob.") / 15, abs=0.03)
    assert [(m.role, m.name, m.content) for m in o.history] == [
        ("user", "Alice", "hello"),
        ("assistant", None, "Hi Alice."),
        ("user", "Bob", "hi there"),
        ("assistant", None, "Hello Bob."),
    ]
    sent = llm.requests[1].messages
    assert sent[0].role == "system" and sent[-1] == Message.user("hi there", name="Bob")


async def test_speaker_prefix_mode_labels_content_for_the_llm_only() -> None:
    llm = ScriptedLLM(["ok"])
    o = orch(llm, config=OrchestratorConfig(speaker_labels="prefix"))
    await o.run_text_turn("hi", speaker="Alice")
    assert llm.requests[0].messages[-1].content == "[Alice] hi"
    assert o.history[0].content == "hi" and o.history[0].name == "Alice"


async def test_empty_transcript_makes_no_llm_call() -> None:
    llm = ScriptedLLM(["never"])
    o = orch(llm, stt=["   "], tts=FakeTTS())
    events = await collect(o.run_turn_stream(WAV))
    assert [type(e) for e in events] == [TranscriptEvent, TurnCompleteEvent]
    assert llm.requests == [] and o.history == []
    assert (await o.run_turn(b"")).completed and llm.requests == []


async def test_llm_error_mid_stream_yields_error_and_keeps_history() -> None:
    boom = ProviderConnectionError("stream dropped", provider="scripted")
    llm = ScriptedLLM(
        ["First answer.", ScriptedReply("Partial answer that breaks", error=boom, error_after_chars=10)]
    )
    errors: list[tuple[str, str | None, str]] = []

    class Rec(Hooks):
        def on_llm_error(self, ctx: Any, error: Exception) -> None:
            errors.append(("llm_error", ctx.component, type(error).__name__))

        def on_error(self, ctx: Any, error: Exception) -> None:
            errors.append(("error", ctx.component, type(error).__name__))

    metrics = InMemoryMetrics()
    o = orch(llm, stt=["one", "two"], tts=FakeTTS(), hooks=Rec(), metrics=metrics)
    await o.run_turn(WAV)
    before = o.history
    events = await collect(o.run_turn_stream(WAV))
    assert any(isinstance(e, LLMChunkEvent) for e in events)  # it did stream before failing
    err = events[-1]
    assert isinstance(err, ErrorEvent) and err.error is boom and err.component == "llm"
    assert not any(isinstance(e, TurnCompleteEvent | LLMFinalEvent) for e in events)
    assert o.history == [*before, Message.user("two")]  # everyone saw the question: the LLM keeps it
    assert is_consistent(o.history)
    assert errors == [
        ("llm_error", "llm", "ProviderConnectionError"),
        ("error", "llm", "ProviderConnectionError"),
    ]
    assert metrics.counter(MetricNames.ERRORS, {"component": "llm", "code": "provider_connection"}) == 1


async def test_stt_error_and_bad_audio_yield_error_events() -> None:
    o = orch(ScriptedLLM([]), tts=FakeTTS())
    events = await collect(o.run_turn_stream(b"not a wav"))
    assert isinstance(events[-1], ErrorEvent) and isinstance(events[-1].error, CodecError)
    assert events[-1].component == "stt" and o.history == []
    no_stt = ConversationOrchestrator(ConversationProviders(llm=ScriptedLLM([])))
    out = await no_stt.run_turn(WAV)
    assert out.error is not None and out.error.code == "config_error"


async def test_cancel_mid_speech_records_only_spoken_segments() -> None:
    llm = ScriptedLLM([LONG], tokens_per_s=200)
    o = orch(llm, stt=["tell me about the museum"], tts=FakeTTS(realtime_factor=0.05))
    stream = o.run_turn_stream(WAV)
    async for ev in stream:
        if isinstance(ev, TTSAudioEvent) and ev.segment == 1 and ev.last_in_segment:
            break  # consumer stops here: segments 0 and 1 were fully taken
    await stream.aclose()
    hist = o.history
    assert [m.role for m in hist] == ["user", "assistant"]
    assert hist[1].interrupted
    assert (
        hist[1].content
        == "Sure, I can help with that right away. The museum opens at nine in the morning and closes at six."
    )
    assert is_consistent(hist)


async def test_cancelling_the_consuming_task_and_interrupt_with_spoken_text() -> None:
    llm = ScriptedLLM([LONG], tokens_per_s=100)
    o = orch(llm, tts=FakeTTS(realtime_factor=0.2))
    started = asyncio.Event()
    turn_ids: list[str] = []

    async def consume() -> None:
        async for ev in o.run_turn_stream(WAV, turn_id="T1"):
            turn_ids.append(ev.turn_id)
            if isinstance(ev, TTSAudioEvent):
                started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert o.interrupt("T1", spoken_text="Sure, I can help")
    hist = o.history
    assert hist[-1].content == "Sure, I can help" and hist[-1].interrupted
    assert not o.interrupt("unknown-turn")


async def test_interrupt_while_running_stops_the_stream() -> None:
    llm = ScriptedLLM([LONG], tokens_per_s=50)
    o = orch(llm, tts=FakeTTS())
    seen: list[TurnEvent] = []
    async for ev in o.run_text_turn_stream("museum?", turn_id="T"):
        seen.append(ev)
        if isinstance(ev, TTSAudioEvent):
            assert o.interrupt("T", spoken_text="Sure")
    assert sum(isinstance(e, TTSAudioEvent) for e in seen) == 1  # nothing after the interrupt
    assert o.history[-1] == Message.assistant("Sure", interrupted=True)


async def test_interrupt_after_completion_amends_the_answer() -> None:
    o = orch(ScriptedLLM(["One two three. Four five six."]), tts=FakeTTS())
    out = await o.run_text_turn("count", turn_id="T")
    assert out.completed and o.history[-1].content == "One two three. Four five six."
    assert o.interrupt("T", spoken_text="One two")
    assert o.history[-1] == Message.assistant("One two", interrupted=True)
    assert o.interrupt("T", spoken_text="")
    assert [m.role for m in o.history] == ["user"]


async def test_text_turn_without_tts_records_shown_text_on_cancel() -> None:
    o = ConversationOrchestrator(ConversationProviders(llm=ScriptedLLM(["alpha beta gamma delta"])))
    stream = o.run_text_turn_stream("go")
    got = ""
    async for ev in stream:
        if isinstance(ev, LLMChunkEvent):
            got += ev.content
            if got.strip() == "alpha beta":
                break
    await stream.aclose()
    assert o.history[-1] == Message.assistant("alpha beta", interrupted=True)


weather_calls: list[str] = []


@define_tool
async def get_weather(city: str) -> dict[str, Any]:
    """Current weather."""
    weather_calls.append(city)
    return {"city": city, "temp_c": 21}


async def test_tool_loop_records_calls_and_results() -> None:
    llm = ScriptedLLM(
        [
            ScriptedReply(
                "Let me check.",
                tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}, "call_id": "c1"}],
            ),
            "It is 21 degrees in Paris.",
        ]
    )
    o = orch(llm, tts=FakeTTS(), tools=ToolRegistry([get_weather]))
    out = await o.run_text_turn("weather in Paris?")
    assert out.text == "It is 21 degrees in Paris."
    assert [c.name for c in out.tool_calls] == ["get_weather"] and out.tool_results[0].success
    kinds = [type(e) for e in out.events]
    assert kinds.index(ToolCallEvent) < kinds.index(ToolResultEvent) < kinds.index(LLMFinalEvent)
    assert [m.role for m in o.history] == ["user", "assistant", "tool", "assistant"]
    assert o.history[1].tool_calls[0].call_id == "c1" and o.history[2].tool_call_id == "c1"
    assert llm.requests[0].tools[0].name == "get_weather"
    second = llm.requests[1].messages
    assert second[-1].role == "tool" and '"temp_c": 21' in second[-1].content
    # the spoken text covers both rounds
    spoken = {e.text for e in out.events if isinstance(e, TTSAudioEvent)}
    assert spoken == {"Let me check.", "It is 21 degrees in Paris."}


async def test_bad_tool_arguments_and_timeouts_go_back_to_the_llm() -> None:
    @define_tool(timeout_s=0.05)
    async def slow_lookup(q: str) -> str:
        await asyncio.sleep(5)
        return q

    llm = ScriptedLLM(
        [
            ScriptedReply(
                tool_calls=[
                    {"name": "get_weather", "arguments": {"city": 42}, "call_id": "bad"},
                    {"name": "slow_lookup", "arguments": {"q": "x"}, "call_id": "slow"},
                ]
            ),
            "Sorry, I could not get that.",
        ]
    )
    o = orch(llm, tools=ToolRegistry([get_weather, slow_lookup]))
    out = await o.run_text_turn("weather?")
    assert [r.error_code for r in out.tool_results] == ["tool_invalid_arguments", "tool_timeout"]
    tool_msgs = [m for m in llm.requests[1].messages if m.role == "tool"]
    assert [m.tool_call_id for m in tool_msgs] == ["bad", "slow"]
    assert "tool_invalid_arguments" in tool_msgs[0].content and "tool_timeout" in tool_msgs[1].content
    assert out.text == "Sorry, I could not get that." and is_consistent(o.history)


async def test_tool_round_limit_then_forced_answer() -> None:
    def script(request: Any) -> ScriptedReply:
        if request.tool_choice == "none":
            return ScriptedReply("Final answer without tools.")
        n = len(llm.requests)
        return ScriptedReply(
            tool_calls=[{"name": "get_weather", "arguments": {"city": f"c{n}"}, "call_id": f"k{n}"}]
        )

    llm = ScriptedLLM(script)
    o = orch(llm, tools=ToolRegistry([get_weather]), config=OrchestratorConfig(max_tool_rounds=2))
    out = await o.run_text_turn("loop")
    assert len(llm.requests) == 3
    assert [r.tool_choice for r in llm.requests] == ["auto", "auto", "none"]
    assert out.text == "Final answer without tools." and len(out.tool_results) == 2
    assert is_consistent(o.history)


async def test_cancel_during_tool_execution_leaves_no_dangling_calls() -> None:
    started = asyncio.Event()

    @define_tool
    async def long_task() -> str:
        started.set()
        await asyncio.sleep(5)
        return "never"

    llm = ScriptedLLM([ScriptedReply("Working on it.", tool_calls=[{"name": "long_task", "call_id": "L"}])])
    o = orch(llm, tts=FakeTTS(), tools=ToolRegistry([long_task]))
    stream = o.run_text_turn_stream("do it")
    async for _ in stream:
        if started.is_set():
            break
    await stream.aclose()
    hist = o.history
    assert is_consistent(hist)
    assert all(not m.tool_calls for m in hist) and all(m.role != "tool" for m in hist)
    assert hist[0].role == "user"


async def test_cancel_keeps_results_of_finish_tools() -> None:
    @define_tool(interruption="finish")
    async def book_table() -> str:
        await asyncio.sleep(0.1)
        return "booked"

    started = asyncio.Event()
    llm = ScriptedLLM([ScriptedReply(tool_calls=[{"name": "book_table", "call_id": "B"}])])
    o = orch(llm, tools=ToolRegistry([book_table]))
    stream = o.run_text_turn_stream("book")
    async for ev in stream:
        if isinstance(ev, ToolCallEvent):
            started.set()
            break
    await stream.aclose()
    roles = [(m.role, m.tool_call_id or [c.call_id for c in m.tool_calls]) for m in o.history]
    assert roles == [("user", []), ("assistant", ["B"]), ("tool", "B")]
    assert o.history[2].content == "booked"


async def test_vision_attachments_to_vision_llm_or_described() -> None:
    image = VisionAttachment.from_bytes(b"\x89PNG fake", mime_type="image/png")
    seeing = ScriptedLLM(["I see it."], vision=True)
    o = ConversationOrchestrator(ConversationProviders(llm=seeing))
    await o.run_text_turn("what is this?", [image])
    assert seeing.requests[0].messages[-1].attachments == [image]

    blind = ScriptedLLM(["A laptop, then."])
    vision = FakeVision("A laptop on a desk.")
    o2 = ConversationOrchestrator(ConversationProviders(llm=blind, vision=vision))
    await o2.run_text_turn("what is this?", [image])
    msg = blind.requests[0].messages[-1]
    assert (
        msg.attachments == []
        and "A laptop on a desk." in msg.content
        and msg.content.startswith("what is this?")
    )
    assert vision.calls[0].attachments == [image]

    bad = await o.run_text_turn("and this?", [{"data": "not base64!!"}])  # type: ignore[list-item]
    assert bad.error is not None and bad.error.code == "invalid_attachment" and len(seeing.requests) == 1

    nothing = ScriptedLLM(["No idea."])
    o3 = ConversationOrchestrator(ConversationProviders(llm=nothing))
    await o3.run_text_turn("what is this?", [image])
    assert nothing.requests[0].messages[-1] == Message.user("what is this?")


async def test_history_window_never_splits_tool_exchanges() -> None:
    calls = [ToolCallRequest(call_id="x", name="t")]
    msgs = [
        Message.user("a"),
        Message.assistant("", tool_calls=calls),
        Message.tool("r", tool_call_id="x", tool_name="t"),
        Message.assistant("done"),
        Message.user("b"),
    ]
    assert window(msgs, 3) == msgs[3:]
    assert window(msgs, 4) == msgs[1:]
    assert window(msgs, 0) == []
    llm = ScriptedLLM(["r1", "r2", "r3"])
    o = orch(llm, config=OrchestratorConfig(history_limit=2, system_prompt="S"))
    for t in ("one", "two", "three"):
        await o.run_text_turn(t)
    sent = llm.requests[2].messages
    assert [m.content for m in sent] == ["S", "two", "r2", "three"]


async def test_context_notes_and_reset() -> None:
    llm = ScriptedLLM(["ok"])
    o = orch(llm)
    o.add_context_note("Alice joined the room")
    await o.run_text_turn("hi", speaker="Alice")
    assert llm.requests[0].messages[1] == Message.system("Alice joined the room")
    o.reset()
    assert o.history == []


async def test_guardrail_withholds_the_answer() -> None:
    class Guard(Hooks):
        def on_llm_end(self, ctx: Any, result: Any, timing: Any) -> None:
            if "secret" in result.full_text:
                raise ValueError("policy violation")

    tts = FakeTTS()
    o = orch(
        ScriptedLLM(["The secret code is 1234. Keep it safe."], tokens_per_s=500), tts=tts, hooks=Guard()
    )
    events = await collect(o.run_text_turn_stream("tell me"))
    assert not any(isinstance(e, TTSAudioEvent | LLMChunkEvent | TurnCompleteEvent) for e in events)
    err = events[-1]
    assert (
        isinstance(err, ErrorEvent)
        and err.error.code == "guardrail_blocked"
        and "policy" in err.error.message
    )
    assert [m.role for m in o.history] == ["user"]  # the question stays; the withheld answer does not


async def test_raising_hooks_do_not_break_the_turn() -> None:
    class Broken(Hooks):
        def on_turn_start(self, ctx: Any) -> None:
            raise RuntimeError("x")

        async def on_llm_chunk(self, ctx: Any, chunk: Any, index: int) -> None:
            raise RuntimeError("x")

        def on_tts_chunk(self, ctx: Any, chunk: Any) -> None:
            raise RuntimeError("x")

        def on_stt_end(self, ctx: Any, result: Any, timing: Any) -> None:
            raise RuntimeError("x")

        def on_turn_end(self, ctx: Any, timing: Any) -> None:
            raise RuntimeError("x")

    o = orch(ScriptedLLM(["All good here."]), tts=FakeTTS(), hooks=Broken())
    out = await o.run_turn(WAV)
    assert out.completed and out.error is None and out.text == "All good here." and out.audio


async def test_hooks_and_metrics_fire_for_every_stage() -> None:
    seen: list[tuple[str, str | None]] = []

    class Rec(Hooks):
        pass

    for name in (
        "on_turn_start",
        "on_stt_start",
        "on_stt_end",
        "on_llm_start",
        "on_llm_end",
        "on_tts_start",
        "on_tts_end",
        "on_turn_end",
        "on_tool_start",
        "on_tool_end",
    ):
        setattr(Rec, name, (lambda n: lambda self, ctx, *a: seen.append((n, ctx.turn_id)))(name))

    metrics = InMemoryMetrics()
    llm = ScriptedLLM(
        [ScriptedReply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Oslo"}}]), "Cold."]
    )
    o = orch(
        llm, tts=FakeTTS(), hooks=Rec(), metrics=metrics, tools=ToolRegistry([get_weather]), session_id="S"
    )
    await o.run_turn(WAV, turn_id="T9")
    names = [n for n, _ in seen]
    assert names[0] == "on_turn_start" and names[-1] == "on_turn_end"
    for n in (
        "on_stt_start",
        "on_stt_end",
        "on_llm_start",
        "on_llm_end",
        "on_tts_start",
        "on_tts_end",
        "on_tool_start",
        "on_tool_end",
    ):
        assert n in names
    assert {t for _, t in seen} == {"T9"}
    assert names.count("on_llm_end") == 2
    for metric in (
        MetricNames.STT_DURATION,
        MetricNames.LLM_TTFT,
        MetricNames.LLM_DURATION,
        MetricNames.TTS_DURATION,
        MetricNames.TURN_DURATION,
        MetricNames.TURN_FIRST_AUDIO,
        MetricNames.TOOL_DURATION,
    ):
        assert metrics.timings(metric), metric
    assert metrics.counter(MetricNames.TURNS) == 1 and metrics.counter(MetricNames.TOOL_CALLS) == 1


async def test_tts_failure_is_reported_and_only_the_spoken_part_recorded() -> None:
    o = orch(ScriptedLLM(["Fine start here. Then BROKEN part."]), tts=FakeTTS(fail_on="BROKEN"))
    metrics = InMemoryMetrics()
    o.metrics.inner = metrics
    out = await o.run_text_turn("go")
    errors = [e for e in out.events if isinstance(e, ErrorEvent)]
    assert (
        len(errors) == 1 and errors[0].component == "tts" and isinstance(errors[0].error, ProviderServerError)
    )
    # issue 16: the history keeps what was spoken, not the whole answer; no tts_complete after the error
    assert not out.completed
    assert not any(isinstance(e, TTSCompleteEvent) for e in out.events)
    assert o.history[-2].content == "go"
    assert o.history[-1].content == "Fine start here." and o.history[-1].interrupted
    assert metrics.counter(MetricNames.ERRORS, {"component": "tts"}) == 1


async def test_non_streaming_tts_speaks_once_at_the_end() -> None:
    tts = FakeTTS()
    o = orch(ScriptedLLM(["One. Two. Three."]), tts=tts, config=OrchestratorConfig(streaming_tts=False))
    await o.run_text_turn("go")
    assert tts.calls == ["One. Two. Three."]


async def test_custom_chunker_callable() -> None:
    tts = FakeTTS()
    o = orch(ScriptedLLM(["a|b|c"]), tts=tts, chunker=lambda text: text.split("|"))
    await o.run_text_turn("go")
    assert tts.calls == ["a", "b", "c"]
