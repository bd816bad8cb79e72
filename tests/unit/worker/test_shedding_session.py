"""Turns the worker cannot answer in time are announced: turn_late (at the start or at the first audio),
audio_dropped to the speaker whose audio the VAD could not keep up with."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from worker.session import Utterance


def text(msg: str) -> bytes:
    return json.dumps({"v": 1, "type": "text", "text": msg}).encode()


async def test_a_turn_starting_late_is_announced_then_answered(make_session: Any) -> None:
    h = await make_session(["Four."], turn_late_s=1.0)
    h.join("alice", "Alice")
    h.session._enqueue(Utterance("alice", "Alice", "What is two plus two?", at=time.monotonic() - 3.0))
    late = await h.room.wait_for(lambda e: e.type == "error")
    assert late.code == "turn_late" and late.retryable is False
    end = await h.room.wait_for(lambda e: e.type == "turn_end")
    assert end.outcome == "completed" and end.turn_id == late.turn_id
    assert [e.code for e in h.room.events("error")] == ["turn_late"]  # once per turn


async def test_a_turn_whose_first_audio_is_late_is_announced(make_session: Any) -> None:
    h = await make_session(
        ["One two three four five six seven eight nine ten."], tokens_per_s=8.0, turn_late_s=0.5
    )
    h.join("alice", "Alice")
    h.session.on_data("alice", text("Count to ten."))
    end = await h.room.wait_for(lambda e: e.type == "turn_end", within=10)
    assert end.outcome == "completed"
    types = h.room.types()
    assert types.index("error") < types.index("tts_start")
    assert h.room.events("error")[0].code == "turn_late"


async def test_a_turn_not_heard_in_time_is_announced_when_it_becomes_late_not_when_it_plays(
    make_session: Any,
) -> None:
    # the first sentence takes ~2.5 s to stream; the person is told at TURN_LATE_S, while nothing plays yet
    h = await make_session(
        ["One two three four five six seven eight nine ten."], tokens_per_s=4.0, turn_late_s=0.5
    )
    h.join("alice", "Alice")
    asked = time.monotonic()
    h.session.on_data("alice", text("Count to ten."))
    late = await h.room.wait_for(lambda e: e.type == "error", within=10)
    told_after_s = time.monotonic() - asked
    assert late.code == "turn_late" and "tts_start" not in h.room.types()
    assert 0.4 < told_after_s < 2.0, told_after_s  # the answer plays ~2.5 s in
    end = await h.room.wait_for(lambda e: e.type == "turn_end", within=20)
    assert end.outcome == "completed"
    assert [e.code for e in h.room.events("error")] == ["turn_late"]  # once per turn, not again at playout


async def test_a_cancelled_turn_is_not_announced_late_afterwards(make_session: Any) -> None:
    h = await make_session(
        ["One two three four five six seven eight nine ten."], tokens_per_s=4.0, turn_late_s=1.0
    )
    h.join("alice", "Alice")
    h.session.on_data("alice", text("Count to ten."))
    await h.room.wait_for(lambda e: e.type == "turn_start")
    h.session._cancel_turn("barge_in", "alice")
    await h.room.wait_for(lambda e: e.type == "turn_end")
    await asyncio.sleep(1.3)
    assert h.room.events("error") == []


async def test_an_answer_in_time_gets_no_late_event(make_session: Any) -> None:
    h = await make_session(["Four."], turn_late_s=4.0)
    h.join("alice", "Alice")
    h.session.on_data("alice", text("What is two plus two?"))
    await h.room.wait_for(lambda e: e.type == "turn_end")
    assert h.room.events("error") == []


async def test_dropped_audio_is_told_to_its_speaker(make_session: Any) -> None:
    h = await make_session(["Four."])
    h.join("alice", "Alice")
    h.session.on_audio_dropped("alice", 10.2)
    [(event, destination)] = [(e, d) for e, d in h.room.sent if e.type == "error"]
    assert event.code == "audio_dropped" and destination == ["alice"]
