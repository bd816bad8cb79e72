"""RoomSession: turns, attribution, floor policies, queueing, barge-in and false interruptions."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from worker.protocol import ErrorMsg, TranscriptMsg

PCM = b"\x00\x00" * 16000  # one second of 16 kHz audio
LONG = " ".join(f"This is sentence number {i} of a long answer." for i in range(1, 9))
MEDIUM = " ".join(f"This is sentence number {i}." for i in range(1, 5))


def text(msg: str) -> bytes:
    return json.dumps({"v": 1, "type": "text", "text": msg}).encode()


async def test_typed_text_turn_streams_events_in_order(make_session: Any) -> None:
    h = await make_session(["Four."])
    h.join("alice", "Alice")
    h.session.on_data("alice", text("What is two plus two?"))
    done = await h.room.wait_for(lambda e: e.type == "tts_complete")
    types = h.room.types()
    assert (
        types.index("transcript") < types.index("llm_chunk") < types.index("llm") < types.index("tts_start")
    )
    assert types.index("tts_start") < types.index("tts_complete")
    transcript = h.room.events("transcript")[0]
    assert isinstance(transcript, TranscriptMsg)
    assert (transcript.participant_identity, transcript.participant_name, transcript.source) == (
        "alice",
        "Alice",
        "text",
    )
    assert h.room.events("llm")[0].text == "Four."
    assert h.room.events("tts_start")[0].turn_id == done.turn_id
    assert len(h.room.audio.captured) > 0
    assert h.stt.calls == []
    assert h.room.states[:4] == ["listening", "thinking", "speaking", "listening"]
    assert h.room.user_transcripts == [("alice", "What is two plus two?")]
    assert h.room.agent_text[-1][2] is True


async def test_speech_is_transcribed_and_attributed_to_its_speaker(make_session: Any) -> None:
    h = await make_session(["Hi Alice.", "Hi Bob."], ["Hello, I am Alice.", "And I am Bob."])
    h.join("alice", "Alice")
    h.join("bob", "Bob")
    assert set(h.listeners) == {"alice", "bob"}
    h.session.on_speech_start("alice")
    h.session.on_speech_end("alice", PCM)
    await h.room.wait_for(lambda e: e.type == "tts_complete")
    h.session.on_speech_end("bob", PCM)
    await h.room.wait_for(lambda e: e.type == "llm" and e.text == "Hi Bob.")
    transcripts = h.room.events("transcript")
    assert [(t.participant_identity, t.participant_name, t.text) for t in transcripts] == [
        ("alice", "Alice", "Hello, I am Alice."),
        ("bob", "Bob", "And I am Bob."),
    ]
    users = [m for m in h.llm.requests[-1].messages if m.role == "user"]
    assert [(m.name, m.content) for m in users] == [("Alice", "Hello, I am Alice."), ("Bob", "And I am Bob.")]
    notes = [m.content for m in h.llm.requests[-1].messages if m.role == "system"]
    assert any("Alice joined the room" in n for n in notes)
    assert h.room.events("speech_start")[0].participant_identity == "alice"
    assert h.room.events("speech_end")[0].duration_ms == 1000


async def test_bad_messages_get_an_error_to_the_sender_only(make_session: Any) -> None:
    h = await make_session(["unused"])
    h.join("alice", "Alice")
    for payload, code in [
        (b"{nope", "invalid_json"),
        (json.dumps({"type": "text", "text": "a" * 20000}).encode(), "message_too_large"),
        (json.dumps({"type": "text", "text": 5}).encode(), "invalid_message"),
        (json.dumps({"type": "launch"}).encode(), "invalid_message"),
        (json.dumps({"v": 9, "type": "text", "text": "hi"}).encode(), "unsupported_version"),
        (b"[1, 2]", "invalid_message"),
    ]:
        h.session.on_data("alice", payload)
        event, dest = h.room.sent[-1]
        assert isinstance(event, ErrorMsg) and event.code == code
        assert dest == ["alice"]
    await asyncio.sleep(0.05)
    assert h.llm.requests == []
    assert h.room.events("transcript") == []


async def test_barge_in_with_words_cancels_the_turn(make_session: Any) -> None:
    h = await make_session([LONG, "Okay."], ["Stop please."])
    h.room.audio.speed = 2.0
    h.join("alice", "Alice")
    h.join("bob", "Bob")
    h.session.on_data("alice", text("Tell me a story."))
    start = await h.room.wait_for(lambda e: e.type == "tts_start")
    assert all(listener.agent_speaking for listener in h.listeners.values())
    await asyncio.sleep(0.3)
    h.session.on_speech_start("bob")
    h.session.on_interruption("bob")
    barge = h.room.events("barge_in")[0]
    assert (barge.turn_id, barge.participant_identity) == (start.turn_id, "bob")
    assert h.room.audio.clears >= 1
    paused_at = len(h.room.audio.captured)
    await asyncio.sleep(0.1)
    assert len(h.room.audio.captured) - paused_at <= 2 * 480, "at most the frame in flight after the pause"
    h.session.on_speech_end("bob", PCM)
    cancelled = await h.room.wait_for(lambda e: e.type == "tts_cancelled")
    assert (cancelled.turn_id, cancelled.reason, cancelled.by) == (start.turn_id, "barge_in", "bob")
    assert not [e for e in h.room.events("tts_complete") if e.turn_id == start.turn_id]
    await h.room.wait_for(lambda e: e.type == "llm" and e.text == "Okay.")
    await h.room.wait_for(lambda e: e.type == "tts_complete" and e.turn_id != start.turn_id)
    history = h.orchestrator.history
    spoken = next(m for m in history if m.role == "assistant")
    assert spoken.interrupted and len(spoken.content) < len(LONG)
    assert [m.content for m in history if m.role == "user"][-1] == "Stop please."


async def test_false_interruption_resumes_the_rest(make_session: Any) -> None:
    h = await make_session([MEDIUM], [""])
    h.room.audio.speed = 8.0
    h.join("alice", "Alice")
    h.session.on_data("alice", text("Tell me a story."))
    start = await h.room.wait_for(lambda e: e.type == "tts_start")
    await asyncio.sleep(0.2)
    h.session.on_speech_start("alice")
    h.session.on_interruption("alice")
    assert h.room.states[-1] == "listening"
    assert not h.listeners["alice"].agent_speaking
    h.session.on_speech_end("alice", PCM)  # a cough: the transcript is empty
    for _ in range(100):
        if h.room.states[-1] == "speaking":
            break
        await asyncio.sleep(0.01)
    assert h.room.states[-1] == "speaking" and h.listeners["alice"].agent_speaking, "barge-in armed again"
    done = await h.room.wait_for(lambda e: e.type == "tts_complete", within=10)
    assert done.turn_id == start.turn_id
    assert h.room.events("tts_cancelled") == []
    expected = sum(len(h.tts.render(c)) for c in h.tts.calls)
    assert abs(len(h.room.audio.captured) - expected) <= 960, "every sample played once, none skipped"


async def test_false_interruption_without_an_utterance_resumes_after_the_window(make_session: Any) -> None:
    h = await make_session([MEDIUM])
    h.room.audio.speed = 8.0
    h.join("alice", "Alice")
    h.session.on_data("alice", text("Tell me a story."))
    await h.room.wait_for(lambda e: e.type == "tts_start")
    h.session.on_interruption("alice")  # a noise burst: the onset rule fired, but no utterance follows
    paused = len(h.room.audio.captured)
    await asyncio.sleep(0.15)
    assert len(h.room.audio.captured) - paused <= 960
    await h.room.wait_for(lambda e: e.type == "tts_complete", within=10)
    assert h.room.events("tts_cancelled") == []


async def test_interruption_without_resume_cancels_at_onset(make_session: Any) -> None:
    h = await make_session([LONG], resume_false_interruption=False)
    h.room.audio.speed = 2.0
    h.join("alice", "Alice")
    h.session.on_data("alice", text("Tell me a story."))
    await h.room.wait_for(lambda e: e.type == "tts_start")
    h.session.on_interruption("alice")
    cancelled = await h.room.wait_for(lambda e: e.type == "tts_cancelled", within=2)
    assert cancelled.reason == "barge_in"


async def test_stop_speaking_cancels_and_barge_in_off_does_not(make_session: Any) -> None:
    h = await make_session([LONG], barge_in=False)
    h.room.audio.speed = 2.0
    h.join("alice", "Alice")
    h.session.on_data("alice", text("Tell me a story."))
    await h.room.wait_for(lambda e: e.type == "tts_start")
    h.session.on_interruption("alice")
    assert h.room.events("barge_in") == []
    h.session.on_data("alice", json.dumps({"type": "stop_speaking"}).encode())
    cancelled = await h.room.wait_for(lambda e: e.type == "tts_cancelled", within=2)
    assert (cancelled.reason, cancelled.by) == ("stop_request", "alice")


async def test_name_floor_answers_only_when_addressed(make_session: Any) -> None:
    h = await make_session(
        ["Yes?"],
        ["Nice weather today.", "Hey Robo, are you there?"],
        floor_policy="name",
        agent_display_name="Robo",
    )
    h.join("alice", "Alice")
    h.session.on_speech_end("alice", PCM)
    await h.room.wait_for(lambda e: e.type == "transcript")
    await asyncio.sleep(0.05)
    assert h.llm.requests == []
    h.session.on_speech_end("alice", PCM)
    await h.room.wait_for(lambda e: e.type == "llm")
    assert h.llm.requests[0].messages[-1].content == "Hey Robo, are you there?"


async def test_designated_floor_listens_to_the_holder_only(make_session: Any) -> None:
    h = await make_session(["Go ahead."], floor_policy="designated")
    h.join("alice", "Alice", **{"llmrtc.floor": "true"})
    h.join("bob", "Bob")
    assert set(h.listeners) == {"alice"}
    h.session.on_data("bob", text("Me too"))
    event, dest = h.room.sent[-1]
    assert isinstance(event, ErrorMsg) and event.code == "floor_denied" and dest == ["bob"]
    h.session.on_data("alice", text("Start please"))
    await h.room.wait_for(lambda e: e.type == "llm")
    assert len(h.llm.requests) == 1


async def test_merge_policy_answers_queued_utterances_in_one_turn(make_session: Any) -> None:
    h = await make_session([MEDIUM, "Both answered."], turn_queue_policy="merge", tokens_per_s=200.0)
    h.room.audio.speed = 20.0
    h.join("alice", "Alice")
    h.join("bob", "Bob")
    h.session.on_data("alice", text("First question"))
    await h.room.wait_for(lambda e: e.type == "llm_chunk")
    h.session.on_data("alice", text("Second from Alice"))
    h.session.on_data("bob", text("And one from Bob"))
    await h.room.wait_for(lambda e: e.type == "llm" and e.text == "Both answered.", within=10)
    assert len(h.llm.requests) == 2
    merged = h.llm.requests[1].messages[-1].content
    assert merged == "Alice: Second from Alice\nBob: And one from Bob"


async def test_queue_policy_answers_in_order(make_session: Any) -> None:
    h = await make_session(["One.", "Two.", "Three."], tokens_per_s=200.0)
    h.join("alice", "Alice")
    for q in ("q1", "q2", "q3"):
        h.session.on_data("alice", text(q))
    await h.room.wait_for(lambda e: e.type == "llm" and e.text == "Three.", within=10)
    assert [r.messages[-1].content for r in h.llm.requests] == ["q1", "q2", "q3"]
    last = h.room.events("llm")[-1].turn_id
    await h.room.wait_for(lambda e: e.type == "tts_complete" and e.turn_id == last)
    completes = h.room.events("tts_complete")
    assert len({c.turn_id for c in completes}) == 3
    starts = [e.turn_id for e in h.room.events("tts_start")]
    assert starts == [c.turn_id for c in completes], "one turn at a time: each ends before the next starts"


async def test_greeting_is_spoken_when_a_human_joins(make_session: Any) -> None:
    h = await make_session([], greeting="Welcome to the room!")
    h.join("alice", "Alice")
    await h.room.wait_for(lambda e: e.type == "tts_complete")
    assert h.tts.calls == ["Welcome to the room!"]
    assert h.room.events("llm")[0].text == "Welcome to the room!"
    assert any("Welcome to the room!" in m.content for m in h.orchestrator.history if m.role == "system")


async def test_last_human_leaving_mid_turn_ends_cleanly(make_session: Any) -> None:
    h = await make_session([LONG])
    h.room.audio.speed = 2.0
    h.join("alice", "Alice")
    h.session.on_data("alice", text("Tell me a story."))
    await h.room.wait_for(lambda e: e.type == "tts_start")
    h.session.on_participant_left("alice")
    await asyncio.wait_for(h.session.wait_empty(), 2)
    cancelled = await h.room.wait_for(lambda e: e.type == "tts_cancelled", within=2)
    assert cancelled.reason == "participant_left"
    assert h.room.events("error") == []
    await h.session.aclose()
    assert h.listeners["alice"].closed


async def test_provider_failure_becomes_an_error_event(make_session: Any) -> None:
    h = await make_session([])  # the scripted LLM has no reply: it raises InvalidRequestError
    h.join("alice", "Alice")
    h.session.on_data("alice", text("hello?"))
    error = await h.room.wait_for(lambda e: e.type == "error")
    assert error.turn_id is not None
    h.session.on_data("alice", text("still there?"))
    await asyncio.sleep(0.1)
    assert h.room.states[-1] == "listening"
