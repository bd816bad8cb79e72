"""Deadlines sized for conversation (issue 16, item 1): a hung or slow provider fails its step promptly with a
retryable ProviderTimeoutError, the question stays in the history, and a fallback provider takes over within
the deadline."""

from __future__ import annotations

import asyncio
import time

import pytest

from llmrtc.audio.wav import pcm16_to_wav
from llmrtc.conversation import ConversationProviders, OrchestratorConfig
from llmrtc.deadlines import NO_DEADLINES, BoundedLLM, Deadlines
from llmrtc.errors import ProviderResponseError, ProviderTimeoutError
from llmrtc.events import ErrorEvent, TTSCompleteEvent, TurnCompleteEvent
from llmrtc.orchestrator import ConversationOrchestrator
from llmrtc.providers.fallback import FallbackLLM, FallbackTTS
from llmrtc.testing import FakeSTT, FakeTTS, ScriptedLLM

HANG = 3600.0


def orch(
    llm: object, tts: object | None = None, stt: object | None = None, **config: object
) -> ConversationOrchestrator:
    providers = ConversationProviders(llm=llm, stt=stt, tts=tts)  # type: ignore[arg-type]
    return ConversationOrchestrator(providers, OrchestratorConfig(system_prompt="test", **config))  # type: ignore[arg-type]


def test_defaults_are_sized_for_conversation() -> None:
    config = OrchestratorConfig()
    deadlines = Deadlines.from_settings(config)
    assert deadlines == Deadlines()
    assert deadlines.llm_first_token_s is not None and deadlines.llm_first_token_s <= 10
    assert deadlines.turn_budget_s is not None and deadlines.turn_budget_s <= 20
    off = Deadlines.from_settings(
        OrchestratorConfig(
            stt_timeout_s=None,
            llm_first_token_timeout_s=0,
            llm_idle_timeout_s=None,
            tts_first_byte_timeout_s=None,
            turn_budget_s=None,
        )
    )
    assert off == NO_DEADLINES
    llm = ScriptedLLM(["x"])
    assert off.llm(llm) is llm


async def test_hung_llm_fails_the_turn_at_its_first_token_deadline_and_keeps_the_question() -> None:
    o = orch(ScriptedLLM(["Never."], ttft_s=HANG), llm_first_token_timeout_s=0.3)
    started = time.monotonic()
    out = await asyncio.wait_for(o.run_text_turn("Are you there?", speak=False), 5)
    took = time.monotonic() - started
    assert isinstance(out.error, ProviderTimeoutError) and out.error.retryable
    assert 0.25 <= took < 1.5
    assert [(m.role, m.content) for m in o.history] == [("user", "Are you there?")]
    errors = [e for e in out.events if isinstance(e, ErrorEvent)]
    assert len(errors) == 1 and errors[0].component == "llm"


async def test_a_stalled_llm_stream_fails_at_the_idle_deadline() -> None:
    class Stalling(ScriptedLLM):
        async def stream(self, request):  # type: ignore[no-untyped-def,override]
            first = True
            async for chunk in super().stream(request):
                yield chunk
                if first:
                    first = False
                    await asyncio.sleep(HANG)

    o = orch(Stalling(["Hello there, this never ends."]), llm_idle_timeout_s=0.3)
    started = time.monotonic()
    out = await asyncio.wait_for(o.run_text_turn("hi", speak=False), 5)
    assert isinstance(out.error, ProviderTimeoutError)
    assert "next LLM token" in out.error.message
    assert time.monotonic() - started < 1.5
    assert o.history[0].content == "hi"


async def test_hung_tts_fails_at_the_first_byte_deadline_without_tts_complete() -> None:
    o = orch(ScriptedLLM(["Hello there."]), tts=FakeTTS(latency_s=HANG), tts_first_byte_timeout_s=0.3)
    started = time.monotonic()
    out = await asyncio.wait_for(o.run_text_turn("hi"), 5)
    assert time.monotonic() - started < 1.5
    errors = [e for e in out.events if isinstance(e, ErrorEvent)]
    assert len(errors) == 1 and errors[0].component == "tts"
    assert isinstance(errors[0].error, ProviderTimeoutError) and errors[0].error.retryable
    assert not any(isinstance(e, TTSCompleteEvent | TurnCompleteEvent) for e in out.events)
    # nothing was heard: the question is kept, no answer is recorded
    assert [(m.role, m.content) for m in o.history] == [("user", "hi")]


async def test_hung_stt_fails_at_its_deadline() -> None:
    o = orch(ScriptedLLM([]), stt=FakeSTT(["never"], latency_s=HANG), stt_timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(ProviderTimeoutError):
        await o.transcribe(pcm16_to_wav(b"\x00\x00" * 1600, 16000))
    assert time.monotonic() - started < 1.5


async def test_turn_budget_bounds_the_time_to_first_audio() -> None:
    # each step is within its own deadline (tokens every 0.2 s, no sentence end for 2 s) but no audio
    # comes: the budget ends the turn
    slow = ScriptedLLM(["word " * 10 + "end."], tokens_per_s=5)
    o = orch(slow, tts=FakeTTS(), llm_idle_timeout_s=1.0, turn_budget_s=0.6)
    started = time.monotonic()
    out = await asyncio.wait_for(o.run_text_turn("tell me"), 5)
    took = time.monotonic() - started
    assert isinstance(out.error, ProviderTimeoutError) and out.error.retryable
    assert "turn budget" in out.error.message
    assert 0.55 <= took < 1.5
    errors = [e for e in out.events if isinstance(e, ErrorEvent)]
    assert len(errors) == 1 and errors[0].component == "llm"
    assert [(m.role, m.content) for m in o.history] == [("user", "tell me")]
    # the next turn is served
    slow._script.append("Here.")  # type: ignore[attr-defined]
    slow.tokens_per_s = None
    again = await asyncio.wait_for(o.run_text_turn("again"), 5)
    assert again.completed and again.text == "Here."


async def test_a_fallback_llm_takes_over_within_the_deadline() -> None:
    hung = ScriptedLLM(["never"], ttft_s=HANG)
    backup = ScriptedLLM(["Backup here."])
    o = orch(FallbackLLM([hung, backup]), llm_first_token_timeout_s=1.0, turn_budget_s=2.0)
    started = time.monotonic()
    out = await asyncio.wait_for(o.run_text_turn("hello?", speak=False), 5)
    took = time.monotonic() - started
    assert out.completed and out.text == "Backup here."
    assert 0.45 <= took < 1.0  # the hung provider had half of the first-token deadline
    assert len(backup.requests) == 1


async def test_a_fallback_tts_takes_over_within_the_deadline() -> None:
    o = orch(
        ScriptedLLM(["Hello there."]),
        tts=FallbackTTS([FakeTTS(latency_s=HANG), FakeTTS()]),
        tts_first_byte_timeout_s=0.6,
    )
    out = await asyncio.wait_for(o.run_text_turn("hi"), 5)
    assert out.completed and out.audio
    assert o.history[-1].content == "Hello there."


def test_bounded_llm_keeps_the_providers_identity() -> None:
    llm = ScriptedLLM(["x"])
    bounded = Deadlines(llm_first_token_s=1.0).llm(llm)
    assert isinstance(bounded, BoundedLLM) and bounded.name == llm.name
    assert bounded.capabilities == llm.capabilities
    chain = Deadlines(llm_first_token_s=1.0).llm(FallbackLLM([llm, ScriptedLLM(["y"])]))
    assert isinstance(chain, FallbackLLM)
    assert all(isinstance(p, BoundedLLM) and p.first_token_s == 0.5 for p in chain.providers)


async def test_an_llm_answer_its_sdk_cannot_parse_fails_as_a_provider_response_error() -> None:
    class Garbled(ScriptedLLM):
        async def stream(self, request):  # type: ignore[no-untyped-def,override]
            raise ValueError("Expecting value: line 1 column 1 (char 0)")
            yield  # pragma: no cover

    o = orch(Garbled([]))
    out = await asyncio.wait_for(o.run_text_turn("hi", speak=False), 5)
    assert isinstance(out.error, ProviderResponseError) and out.error.retryable
    errors = [e for e in out.events if isinstance(e, ErrorEvent)]
    assert len(errors) == 1 and errors[0].component == "llm"
    assert o.history[0].content == "hi"
