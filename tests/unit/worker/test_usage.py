"""Usage per turn: LLM tokens, TTS characters and STT seconds in ``turn_end`` and in the metrics."""

from __future__ import annotations

from typing import Any

from llmrtc.metrics import InMemoryMetrics, MetricNames


async def test_a_completed_turn_reports_what_it_consumed(make_session: Any) -> None:
    h = await make_session(["Paris is the capital."], ["What is the capital of France?"])
    h.join("alice", "Alice")
    h.session.on_speech_start("alice")
    h.session.on_speech_end("alice", b"\x01\x00" * 16000)  # one second of speech
    end = await h.room.wait_for(lambda e: e.type == "turn_end")
    assert end.outcome == "completed"
    usage = end.usage
    assert usage["llm_output_tokens"] > 0 and usage["llm_input_tokens"] > 0
    assert usage["tts_characters"] == len("Paris is the capital.")
    assert usage["stt_audio_s"] == 1.0


async def test_usage_metrics_are_counted_by_the_pipeline(make_session: Any) -> None:
    h = await make_session(["Hello there, Alice."])
    metrics = InMemoryMetrics()
    h.orchestrator.metrics = metrics
    h.orchestrator.speech.metrics = metrics
    h.orchestrator.playbook_orchestrator.metrics = metrics
    h.join("alice", "Alice")
    h.session.on_data("alice", b'{"type": "text", "text": "hi"}')
    await h.room.wait_for(lambda e: e.type == "turn_end")
    chars = [r.value for r in metrics.records if r.name == MetricNames.TTS_CHARACTERS]
    tokens = [r for r in metrics.records if r.name == MetricNames.LLM_TOKENS]
    assert sum(chars) == len("Hello there, Alice.")
    assert {dict(r.tags)["direction"] for r in tokens} == {"input", "output"}


async def test_the_room_sums_its_turns(make_session: Any) -> None:
    h = await make_session(["One.", "Two two."])
    h.join("alice", "Alice")
    for text in ("first", "second"):
        h.session.on_data("alice", f'{{"type": "text", "text": "{text}"}}'.encode())
        await h.room.wait_for(
            lambda e, t=text: (
                e.type == "turn_end" and len(h.room.events("turn_end")) == (1 if t == "first" else 2)
            )
        )
    ends = h.room.events("turn_end")
    assert (
        h.session.usage["tts_characters"]
        == sum(e.usage["tts_characters"] for e in ends)
        == len("One.Two two.")
    )
    assert h.session.usage["llm_output_tokens"] == sum(e.usage["llm_output_tokens"] for e in ends)
