"""Issue 16 in the room session: deadlines reach the human promptly, every turn ends in exactly one terminal
event whatever fails, the history keeps the question and what was heard, a killed worker's question survives,
vendor text never reaches the room, and a long monologue cut at the maximum utterance length is answered once,
when the speaker stops."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from llmrtc.errors import ProviderConnectionError, ProviderServerError
from llmrtc.orchestrator import ConversationOrchestrator, ConversationProviders, OrchestratorConfig
from llmrtc.sessions import InMemorySessionStore, SessionStore
from llmrtc.testing import FakeSTT, FakeTTS, ScriptedLLM
from llmrtc.types import TTSChunk, TTSConfig
from tests.unit.worker.conftest import FakeListener, FakeRoom
from worker.config import WorkerSettings
from worker.conversation import OrchestratorConversation
from worker.errors import error_message
from worker.listeners import SpeechCallbacks
from worker.persistence import PersistentConversation, RoomPersistence
from worker.room import ParticipantInfo
from worker.session import RoomSession

PCM = b"\x00\x00" * 16000
LONG = " ".join(f"This is sentence number {i} of a long answer." for i in range(1, 9))
HANG = 3600.0


def _text(msg: str) -> bytes:
    return json.dumps({"v": 1, "type": "text", "text": msg}).encode()


class Room:
    """A RoomSession on the real orchestrator, scripted providers, optionally persisted to ``store``."""

    def __init__(
        self,
        replies: list[str],
        transcripts: list[str] | None = None,
        *,
        store: SessionStore | None = None,
        config: dict[str, Any] | None = None,
        tts: FakeTTS | None = None,
        **settings: Any,
    ) -> None:
        self.llm = ScriptedLLM(replies)
        self.tts = tts or FakeTTS(chars_per_second=15.0)
        self.stt = FakeSTT(transcripts or [])
        self.orchestrator = ConversationOrchestrator(
            ConversationProviders(llm=self.llm, stt=self.stt, tts=self.tts),
            OrchestratorConfig(system_prompt="t", **(config or {})),
        )
        self.persistence = RoomPersistence(store, "room-1", self.orchestrator, metadata={"job": "AJ_x"})
        self.room = FakeRoom()
        values = {"FALSE_INTERRUPTION_TIMEOUT": 0.3, **{k.upper(): v for k, v in settings.items()}}
        self.listeners: dict[str, FakeListener] = {}

        def listener(identity: str, callbacks: SpeechCallbacks) -> FakeListener:
            self.listeners[identity] = FakeListener(identity, callbacks)
            return self.listeners[identity]

        conversation = PersistentConversation(
            OrchestratorConversation(self.orchestrator, self.tts), self.persistence
        )
        self.session = RoomSession(
            WorkerSettings(_env_file=None, **values), self.room, conversation, listener, room_name="room-1"
        )

    async def start(self) -> Room:
        await self.persistence.restore()
        self.session.start()
        self.session.on_participant_joined(ParticipantInfo("alice", "Alice", {}))
        return self

    async def close(self) -> None:
        await self.session.aclose()
        await self.persistence.aclose()

    def terminal(self, turn_id: str) -> list[Any]:
        return [e for e in self.room.events("turn_end") if e.turn_id == turn_id]

    def said(self) -> list[tuple[str, str]]:
        return [(m.role, m.content) for m in self.orchestrator.history if m.role in ("user", "assistant")]


async def _ended(room: Room, within: float = 5.0) -> Any:
    start = await room.room.wait_for(lambda e: e.type == "turn_start", within)
    return start, await room.room.wait_for(
        lambda e: e.type == "turn_end" and e.turn_id == start.turn_id, within
    )


# ---------------------------------------------------------------------------------------------- deadlines


async def test_hung_llm_tells_the_human_within_the_deadline_and_the_next_turn_is_served() -> None:
    r = await Room(["never", "Back again."], config={"llm_first_token_timeout_s": 0.4}).start()
    try:
        r.llm.ttft_s = HANG
        t0 = time.monotonic()
        r.session.on_data("alice", _text("Anyone there?"))
        error = await r.room.wait_for(lambda e: e.type == "error", within=3)
        told = time.monotonic() - t0
        start, end = await _ended(r)
        assert 0.35 <= told < 1.5
        assert (error.code, error.component, error.retryable) == ("provider_timeout", "llm", True)
        assert error.turn_id == start.turn_id and end.outcome == "error"
        await asyncio.sleep(0.05)
        assert r.room.states[-1] == "listening"
        assert r.said() == [("user", "Anyone there?")]
        r.llm.ttft_s = 0.0
        r.session.on_data("alice", _text("Now?"))
        done = await r.room.wait_for(lambda e: e.type == "turn_end" and e.outcome == "completed", within=5)
        assert len(r.terminal(done.turn_id)) == 1
        assert r.said() == [("user", "Anyone there?"), ("user", "Now?"), ("assistant", "Back again.")]
    finally:
        await r.close()


def test_worker_settings_carry_the_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_FIRST_TOKEN_TIMEOUT_S", "2.5")
    monkeypatch.setenv("TURN_BUDGET_S", "0")
    monkeypatch.setenv("STT_TIMEOUT_S", "")
    settings = WorkerSettings(_env_file=None)
    assert settings.deadline_overrides() == {"llm_first_token_timeout_s": 2.5, "turn_budget_s": None}
    from worker.conversation import Providers, build_conversation

    providers = Providers(llm=ScriptedLLM([]), stt=FakeSTT([]), tts=FakeTTS())
    conv = build_conversation(settings, providers)
    config = conv.orchestrator.config
    assert config.llm_first_token_timeout_s == 2.5 and config.turn_budget_s is None
    assert config.stt_timeout_s == OrchestratorConfig().stt_timeout_s  # blank: the default


# ---------------------------------------------------------------------------------------------- one terminal event


async def test_llm_error_one_terminal_event_and_the_question_kept() -> None:
    r = await Room([]).start()  # no reply left: the scripted LLM raises
    try:
        r.session.on_data("alice", _text("What now?"))
        start, end = await _ended(r)
        await asyncio.sleep(0.1)
        assert end.outcome == "error" and len(r.terminal(start.turn_id)) == 1
        assert [e.turn_id for e in r.room.events("error")] == [start.turn_id]
        assert r.said() == [("user", "What now?")]
    finally:
        await r.close()


async def test_tts_failure_mid_answer_records_what_was_heard_and_sends_no_tts_complete() -> None:
    r = await Room(["First part is fine. Then BROKEN part. And more."]).start()
    try:
        r.tts.fail_on = "BROKEN"
        r.session.on_data("alice", _text("Go on."))
        start, end = await _ended(r)
        await asyncio.sleep(0.1)
        types = r.room.types()
        assert "tts_complete" not in types
        assert end.outcome == "error" and len(r.terminal(start.turn_id)) == 1
        assert types.index("error") < types.index("turn_end")
        assert end.heard_text == "First part is fine."
        assert r.said() == [("user", "Go on."), ("assistant", "First part is fine.")]
        assert r.orchestrator.history[-1].interrupted
    finally:
        await r.close()


class CutTTS(FakeTTS):
    """Sentences with BROKEN get a quarter of their audio, in pieces, then the stream breaks."""

    async def speak_stream(self, text: str, config: TTSConfig | None = None) -> AsyncIterator[TTSChunk]:
        if "BROKEN" not in text:
            async for chunk in super().speak_stream(text, config):
                yield chunk
            return
        pcm = self.render(text)
        quarter = len(pcm) // 8 * 2
        step = quarter // 10 * 2
        for start in range(0, quarter, step):  # the speaker holds the last piece back: ~a fifth is played
            yield TTSChunk(pcm=pcm[start : start + step], sample_rate=self.sample_rate)
        raise ProviderConnectionError("the stream broke", provider=self.name)


async def test_a_sentence_cut_by_the_tts_counts_only_the_words_played() -> None:
    second = "Then this BROKEN sentence has quite a few more words in it."
    r = await Room([f"First part is fine. {second}"], tts=CutTTS(chars_per_second=15.0)).start()
    try:
        r.session.on_data("alice", _text("Go on."))
        _, end = await _ended(r)
        assert end.outcome == "error"
        heard = end.heard_text
        assert heard.startswith("First part is fine. Then")
        kept = heard.removeprefix("First part is fine. ").split()
        assert 1 <= len(kept) <= 5 < len(second.split()), heard  # about a quarter of the sentence
        assert r.said()[-1] == ("assistant", heard)
    finally:
        await r.close()


async def test_stop_and_participant_left_each_end_the_turn_once() -> None:
    r = await Room([LONG, LONG]).start()
    try:
        r.room.audio.speed = 2.0
        r.session.on_data("alice", _text("Tell me a story."))
        await r.room.wait_for(lambda e: e.type == "tts_start")
        r.session.on_data("alice", json.dumps({"v": 1, "type": "stop_speaking"}).encode())
        start, end = await _ended(r)
        assert (end.outcome, end.reason) == ("cancelled", "stop_request")
        r.session.on_data("alice", _text("Another one."))
        second = await r.room.wait_for(lambda e: e.type == "turn_start" and e.turn_id != start.turn_id)
        await r.room.wait_for(lambda e: e.type == "tts_start" and e.turn_id == second.turn_id)
        r.session.on_participant_left("alice")
        end2 = await r.room.wait_for(lambda e: e.type == "turn_end" and e.turn_id == second.turn_id)
        await asyncio.sleep(0.1)
        assert (end2.outcome, end2.reason) == ("cancelled", "participant_left")
        assert len(r.terminal(start.turn_id)) == 1 and len(r.terminal(second.turn_id)) == 1
        users = [c for role, c in r.said() if role == "user"]
        assert users == ["Tell me a story.", "Another one."]
    finally:
        await r.close()


async def test_shutdown_mid_turn_ends_it_and_persists_the_question() -> None:
    store = InMemorySessionStore()
    r = await Room(["never"], store=store).start()
    r.llm.ttft_s = HANG
    r.session.on_data("alice", _text("Still thinking?"))
    start = await r.room.wait_for(lambda e: e.type == "turn_start")
    await asyncio.sleep(0.1)
    await r.close()  # the job shuts down (SIGTERM, drain over)
    ends = r.terminal(start.turn_id)
    assert len(ends) == 1 and (ends[0].outcome, ends[0].reason) == ("cancelled", "shutdown")
    stored = await store.load("room-1")
    assert stored is not None
    assert [(m.role, m.content) for m in stored.history if m.role == "user"] == [("user", "Still thinking?")]
    assert "pending_turn" not in stored.metadata


async def test_a_killed_workers_question_survives_and_the_next_worker_ends_its_turn() -> None:
    store = InMemorySessionStore()
    first = await Room(["never"], store=store).start()
    first.llm.ttft_s = HANG
    first.session.on_data("alice", _text("What did I ask?"))
    start = await first.room.wait_for(lambda e: e.type == "turn_start")
    for _ in range(50):  # the question is saved when the turn starts, not when it ends
        stored = await store.load("room-1")
        if stored is not None and stored.metadata.get("pending_turn"):
            break
        await asyncio.sleep(0.02)
    assert stored is not None
    assert stored.metadata["pending_turn"]["turn_id"] == start.turn_id
    assert stored.history[-1].content == "What did I ask?"
    # SIGKILL: the first job never runs another line; a new worker restores the room
    second = Room(["You asked what you asked."], store=store)
    assert await second.persistence.restore()
    assert second.persistence.lost_turn == {"turn_id": start.turn_id}
    assert second.said() == [("user", "What did I ask?")]
    events = second.persistence.lost_turn_events()
    assert [e.type for e in events] == ["error", "turn_end"]
    assert events[0].turn_id == events[1].turn_id == start.turn_id
    assert events[0].retryable and events[1].outcome == "error"
    assert second.persistence.lost_turn_events() == []
    second.session.start()
    second.session.on_participant_joined(ParticipantInfo("alice", "Alice", {}))
    second.session.on_data("alice", _text("Well?"))
    await second.room.wait_for(lambda e: e.type == "turn_end" and e.outcome == "completed")
    asked = [m for m in second.llm.requests[-1].messages if m.role == "user"]
    assert [m.content for m in asked] == ["What did I ask?", "Well?"]
    await second.close()
    stored = await store.load("room-1")
    assert stored is not None and "pending_turn" not in stored.metadata
    assert [m.content for m in stored.history if m.role == "user"] == ["What did I ask?", "Well?"]
    first.session._closed = True  # the killed job: its tasks just stop
    first.llm.ttft_s = 0.0
    await first.session.aclose()


async def test_a_pending_question_is_not_saved_twice() -> None:
    store = InMemorySessionStore()
    r = await Room(["Same answer.", "Same answer."], store=store).start()
    try:
        for _ in range(2):
            r.session.on_data("alice", _text("yes"))
            await r.room.wait_for(lambda e: e.type == "turn_end" and e.outcome == "completed")
            r.room.sent.clear()
        await asyncio.sleep(0.1)
    finally:
        await r.close()
    stored = await store.load("room-1")
    assert stored is not None
    assert [(m.role, m.content) for m in stored.history if m.role != "system"] == [
        ("user", "yes"),
        ("assistant", "Same answer."),
        ("user", "yes"),
        ("assistant", "Same answer."),
    ]


# ---------------------------------------------------------------------------------------------- vendor text


def test_vendor_text_goes_to_the_log_not_the_room(caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-live-ABCDEF0123456789SECRET"
    url = "http://llm-internal.corp.example:8443/v1/chat"
    error = ProviderServerError(f"server error: upstream {url} rejected key {secret}", provider="openai")
    with caplog.at_level(logging.WARNING, logger="llmrtc.worker.errors"):
        msg = error_message(error, "llm", turn_id="turn_1")
    wire = msg.model_dump_json()
    assert secret not in wire and url not in wire and "corp.example" not in wire
    assert msg.code == "provider_server_error" and msg.retryable is True
    assert secret in caplog.text and url in caplog.text


# ---------------------------------------------------------------------------------------------- long speech


async def test_a_long_monologue_cut_at_the_length_limit_is_answered_once_when_the_speaker_stops() -> None:
    pieces = [
        "So the first thing is the budget,",
        "and then the schedule for the spring,",
        "and that is all.",
    ]
    r = await Room(["Got it."], pieces).start()
    try:
        r.session.on_speech_start("alice")
        r.session.on_speech_end("alice", PCM, split=True)  # cut at the maximum utterance length
        r.session.on_speech_start("alice")  # the same speech goes on
        await asyncio.sleep(0.2)
        assert r.room.events("turn_start") == [], "a cut must not start a turn while the person talks"
        r.session.on_speech_end("alice", PCM, split=True)
        r.session.on_speech_start("alice")
        await asyncio.sleep(0.2)
        assert r.room.events("turn_start") == []
        r.session.on_speech_end("alice", PCM)  # the person stops
        _, end = await _ended(r)
        assert end.outcome == "completed"
        assert len(r.room.events("turn_start")) == 1
        assert [t.text for t in r.room.events("transcript")] == pieces
        assert len(r.room.events("speech_start")) == 1 and len(r.room.events("speech_end")) == 1
        assert r.room.events("speech_end")[0].duration_ms == 3000
        assert r.said() == [("user", " ".join(pieces)), ("assistant", "Got it.")]
    finally:
        await r.close()


async def test_a_cut_on_the_last_words_ends_the_utterance_after_the_silence() -> None:
    r = await Room(["Sure."], ["That was my whole question."], vad_min_silence_ms=100).start()
    try:
        r.session.on_speech_start("alice")
        r.session.on_speech_end("alice", PCM, split=True)  # cut, and no speech follows
        _, end = await _ended(r, within=3)
        assert end.outcome == "completed"
        assert r.said() == [("user", "That was my whole question."), ("assistant", "Sure.")]
        assert len(r.room.events("speech_end")) == 1
    finally:
        await r.close()


async def test_a_shutdown_turn_the_room_never_heard_of_is_announced_by_the_next_worker() -> None:
    store = InMemorySessionStore()
    first = await Room(["never"], store=store).start()
    first.llm.ttft_s = HANG
    first.session.on_data("alice", _text("Are you stopping?"))
    start = await first.room.wait_for(lambda e: e.type == "turn_start")
    await first.session.aclose()
    assert first.session.shutdown_turn == start.turn_id
    first.persistence.mark_lost(start.turn_id)  # the entrypoint does this when the room was already gone
    await first.persistence.aclose()
    second = Room([], store=store)
    assert await second.persistence.restore()
    assert second.said() == [("user", "Are you stopping?")]
    events = second.persistence.lost_turn_events()
    assert [(e.type, e.turn_id) for e in events] == [("turn_end", start.turn_id)]
    assert (events[0].outcome, events[0].reason) == ("cancelled", "shutdown")
