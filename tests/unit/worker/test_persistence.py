"""Room state in the session store: restore at job start, saves after turns and notes, conflicts, failures,
the process-wide store shared by job threads, agent name defaults and the accepted display name."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from livekit.agents import JobRequest
from livekit.agents.job import JobAcceptArguments
from livekit.protocol import agent, models

from llmrtc.errors import ConfigError, SessionStoreError
from llmrtc.orchestrator import ConversationOrchestrator, ConversationProviders, OrchestratorConfig
from llmrtc.sessions import InMemorySessionStore, SessionState, SessionStore
from llmrtc.testing import FakeSTT, FakeTTS, ScriptedLLM
from llmrtc.types import Message
from tests.unit.sessions.redis_server import start_redis
from tests.unit.worker.conftest import FakeListener, FakeRoom
from worker.config import DEFAULT_AGENT_NAME, WorkerSettings, load_settings
from worker.conversation import OrchestratorConversation
from worker.entrypoint import make_request_fnc, server_options
from worker.listeners import SpeechCallbacks
from worker.persistence import PersistentConversation, RoomPersistence
from worker.session import RoomSession
from worker.store import ProcessSessionStore

LONG = " ".join(f"This is sentence number {i} of a long answer." for i in range(1, 9))


def _text(msg: str) -> bytes:
    return json.dumps({"v": 1, "type": "text", "text": msg}).encode()


class Job:
    """One job of a room: a real orchestrator and RoomSession, persisted to ``store``."""

    def __init__(self, store: SessionStore | None, replies: list[str], room: str = "room-1") -> None:
        self.llm = ScriptedLLM(replies)
        self.tts = FakeTTS(chars_per_second=15.0)
        stt = FakeSTT([])
        self.orchestrator = ConversationOrchestrator(
            ConversationProviders(llm=self.llm, stt=stt, tts=self.tts), OrchestratorConfig(system_prompt="t")
        )
        self.persistence = RoomPersistence(store, room, self.orchestrator, metadata={"job": "AJ_test"})
        self.room = FakeRoom()
        settings = WorkerSettings(_env_file=None, FALSE_INTERRUPTION_TIMEOUT=0.3)

        def listener(identity: str, callbacks: SpeechCallbacks) -> FakeListener:
            return FakeListener(identity, callbacks)

        conversation = PersistentConversation(
            OrchestratorConversation(self.orchestrator, self.tts), self.persistence
        )
        self.session = RoomSession(settings, self.room, conversation, listener, room_name=room)

    async def start(self) -> bool:
        restored = await self.persistence.restore()
        self.session.start()
        return restored

    async def ask(self, identity: str, question: str) -> None:
        before = len(self.room.events("tts_complete"))
        self.session.on_data(identity, _text(question))
        await self.room.wait_for(
            lambda e: e.type == "tts_complete" and len(self.room.events("tts_complete")) > before
        )

    async def end(self, *, delete: bool = False) -> None:
        await self.session.aclose()
        await self.persistence.aclose(delete=delete)


async def _stored(store: SessionStore, room: str = "room-1", within: float = 3.0) -> SessionState:
    async def wait() -> SessionState:
        while True:
            state = await store.load(room)
            if state is not None:
                return state
            await asyncio.sleep(0.01)

    return await asyncio.wait_for(wait(), within)


async def _until(predicate: Any, within: float = 3.0) -> None:
    async def wait() -> None:
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)

    await asyncio.wait_for(wait(), within)


async def test_a_second_job_continues_the_conversation() -> None:
    store = InMemorySessionStore()
    first = Job(store, ["Paris."])
    assert await first.start() is False
    first.session.on_participant_joined(_info("alice", "Alice"))
    await first.ask("alice", "What is the capital of France?")
    await _until(
        lambda: any(m.content == "Paris." for m in first.orchestrator.history) and first.persistence.saves
    )
    await first.end()  # kept: SESSION_DELETE_ON_END is off by default

    stored = await store.load("room-1")
    assert stored is not None and stored.metadata == {"job": "AJ_test"}
    assert [(m.role, m.content) for m in stored.history if m.role != "system"] == [
        ("user", "What is the capital of France?"),
        ("assistant", "Paris."),
    ]

    second = Job(store, ["About two million."])
    assert await second.start() is True
    assert second.persistence.version == stored.version
    second.session.on_participant_joined(_info("alice", "Alice"))
    await second.ask("alice", "How many people live there?")
    request = second.llm.requests[-1]
    said = [(m.role, m.content) for m in request.messages if m.role in ("user", "assistant")]
    assert said == [
        ("user", "What is the capital of France?"),
        ("assistant", "Paris."),
        ("user", "How many people live there?"),
    ]
    await _until(lambda: second.persistence.saves >= 2)
    await second.end(delete=True)
    assert await store.load("room-1") is None, "SESSION_DELETE_ON_END forgets the room"


async def test_notes_and_interrupted_turns_are_saved() -> None:
    store = InMemorySessionStore()
    job = Job(store, [LONG])
    await job.start()
    job.room.audio.speed = 2.0
    job.session.on_participant_joined(_info("alice", "Alice"))
    state = await _stored(store)
    assert any(m.role == "system" and "Alice joined the room" in m.content for m in state.history)

    job.session.on_data("alice", _text("Tell me a story."))
    await job.room.wait_for(lambda e: e.type == "tts_start")
    await asyncio.sleep(0.3)
    job.session.on_data("alice", json.dumps({"type": "stop_speaking"}).encode())
    await job.room.wait_for(lambda e: e.type == "tts_cancelled")

    async def interrupted_saved() -> Message:
        while True:
            loaded = await store.load("room-1")
            answers = [m for m in (loaded.history if loaded else []) if m.role == "assistant"]
            if answers:
                return answers[-1]
            await asyncio.sleep(0.01)

    answer = await asyncio.wait_for(interrupted_saved(), 3)
    assert answer.interrupted and 0 < len(answer.content) < len(LONG)
    await job.end()


async def test_a_newer_save_by_another_worker_stops_this_job_saving(caplog: pytest.LogCaptureFixture) -> None:
    store = InMemorySessionStore()
    job = Job(store, ["One.", "Two."])
    await job.start()
    job.session.on_participant_joined(_info("alice", "Alice"))
    await job.ask("alice", "First?")
    await _until(lambda: job.persistence.saves >= 1 and not job.persistence._dirty)
    await asyncio.sleep(0.05)
    # another worker took the room over and saved its own state
    other = await store.load("room-1")
    assert other is not None
    other.history = [Message.user("from the other worker")]
    await store.save(other)

    with caplog.at_level(logging.WARNING, logger="llmrtc.worker.persistence"):
        await job.ask("alice", "Second?")
        await _until(lambda: not job.persistence.owned)
    assert "another worker saved this room" in caplog.text
    job.session.on_data("alice", _text("Third?"))  # the job goes on; it no longer writes
    await asyncio.sleep(0.1)
    await job.end(delete=True)  # never deletes a state it does not own
    kept = await store.load("room-1")
    assert kept is not None and [m.content for m in kept.history] == ["from the other worker"]


class BrokenStore(InMemorySessionStore):
    """Loads and saves fail as when Redis is down, until ``healed``."""

    healed = False
    attempts = 0

    async def load(self, session_id: str) -> SessionState | None:
        raise SessionStoreError("down", code="session_store_unavailable")

    async def save(self, state: SessionState, *, force: bool = False) -> SessionState:
        self.attempts += 1
        if not self.healed:
            raise SessionStoreError("down", code="session_store_unavailable")
        return await super().save(state, force=force)


async def test_store_failures_are_logged_and_the_conversation_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = BrokenStore()
    job = Job(store, ["Hello.", "Still here."])
    with caplog.at_level(logging.WARNING, logger="llmrtc.worker.persistence"):
        assert await job.start() is False
        job.session.on_participant_joined(_info("alice", "Alice"))
        await job.ask("alice", "Hi?")
        await _until(lambda: store.attempts >= 1)
    assert "could not load the room's session: session_store_unavailable" in caplog.text
    assert "session save failed: session_store_unavailable" in caplog.text
    assert job.persistence.owned
    store.healed = True
    await job.ask("alice", "Are you there?")
    await job.end()
    saved = await InMemorySessionStore.load(store, "room-1")
    assert saved is not None and saved.history[-1].content == "Still here."


class PlaybookLike:
    """What the persistence needs of a playbook orchestrator: history plus snapshot/restore."""

    def __init__(self) -> None:
        self.history: list[Message] = []
        self.stage = "intro"
        self.restored: list[dict[str, Any]] = []

    def load_history(self, messages: list[Message]) -> None:
        self.history = list(messages)

    def snapshot(self) -> dict[str, Any]:
        return {"stage": self.stage}

    def restore(self, data: dict[str, Any]) -> None:
        self.restored.append(data)
        self.stage = data["stage"]


async def test_playbook_state_is_saved_and_restored() -> None:
    store = InMemorySessionStore()
    first = PlaybookLike()
    persistence = RoomPersistence(store, "room-pb", first)
    await persistence.restore()
    first.history = [Message.user("hi")]
    first.stage = "billing"
    persistence.changed()
    await persistence.aclose()
    stored = await store.load("room-pb")
    assert stored is not None and stored.playbook == {"stage": "billing"}

    second = PlaybookLike()
    assert await RoomPersistence(store, "room-pb", second).restore() is True
    assert second.stage == "billing" and second.restored == [{"stage": "billing"}]
    assert [m.content for m in second.history] == ["hi"]


async def test_no_store_means_no_persistence() -> None:
    job = Job(None, ["Hi."])
    assert await job.start() is False
    job.session.on_participant_joined(_info("alice", "Alice"))
    await job.ask("alice", "Hello?")
    await job.end(delete=True)
    assert job.persistence.saves == 0


def test_process_store_serves_job_threads_with_their_own_loops(tmp_path: Path) -> None:
    server = start_redis(tmp_path)
    try:
        store = ProcessSessionStore(server.url, ttl_s=60)
        assert store.backend == "redis"
        errors: list[BaseException] = []

        def job(room: str) -> None:
            async def run() -> None:
                state = SessionState(session_id=room, history=[Message.user(room)])
                for _ in range(3):
                    await store.save(state)
                loaded = await store.load(room)
                assert loaded is not None and loaded.version == 3 == state.version
                assert [m.content for m in loaded.history] == [room]

            try:
                asyncio.run(run())  # each job thread runs its own event loop, as livekit-agents' threads do
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=job, args=(f"room-{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert errors == []
        with server.client() as client:
            assert sorted(k.decode() for k in client.keys("llmrtc:session:*")) == [
                f"llmrtc:session:room-{i}" for i in range(4)
            ]
        store.close()
        store.close()  # idempotent

        async def after_close() -> None:
            with pytest.raises(SessionStoreError) as info:
                await store.load("room-0")
            assert info.value.code == "session_store_closed"

        asyncio.run(after_close())
    finally:
        server.stop()


def test_process_store_rejects_a_bad_url() -> None:
    with pytest.raises(ConfigError):
        ProcessSessionStore("http://localhost:6379", ttl_s=60)


def test_session_store_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = WorkerSettings(_env_file=None)
    assert (settings.session_store_url, settings.session_ttl_s, settings.session_delete_on_end) == (
        "",
        1800.0,
        False,
    )
    monkeypatch.setenv("SESSION_STORE_URL", "redis://cache:6379/1")
    monkeypatch.setenv("SESSION_DELETE_ON_END", "true")
    settings = WorkerSettings(_env_file=None)
    assert settings.session_store_url == "redis://cache:6379/1" and settings.session_delete_on_end
    monkeypatch.setenv("SESSION_STORE_URL", "postgres://db/0")
    with pytest.raises(ConfigError, match="SESSION_STORE_URL"):
        load_settings(None)


def test_agent_name_defaults_to_the_token_services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from signalling.service.config import TokenServiceSettings

    monkeypatch.delenv("AGENT_NAME", raising=False)
    monkeypatch.delenv("LIVEKIT_AGENT_NAME", raising=False)
    token_default = TokenServiceSettings.model_fields["agent_name"].default
    assert WorkerSettings(_env_file=None).agent_name == DEFAULT_AGENT_NAME == token_default
    assert server_options(WorkerSettings(_env_file=None)).agent_name == "llmrtc-agent"

    env_file = tmp_path / ".env"
    env_file.write_text("AGENT_NAME=          # empty: automatic dispatch\n")
    assert load_settings(env_file).agent_name == "", "set but empty in .env: automatic dispatch"
    monkeypatch.setenv("AGENT_NAME", "helper")
    assert load_settings(env_file).agent_name == "helper", "the environment wins over .env"
    monkeypatch.setenv("AGENT_NAME", "")
    env_file.write_text("AGENT_NAME=helper\n")
    assert load_settings(env_file).agent_name == "", "set but empty in the environment: automatic dispatch"
    assert server_options(load_settings(env_file)).agent_name == ""
    monkeypatch.delenv("AGENT_NAME")
    monkeypatch.setenv("LIVEKIT_AGENT_NAME", "legacy")
    assert load_settings(None).agent_name == "legacy"


async def test_jobs_are_accepted_with_the_display_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.load import monitor

    monkeypatch.setattr(monitor(), "last", None)  # this test process's own load is not the worker's
    accepted: list[JobAcceptArguments] = []

    async def on_accept(args: JobAcceptArguments) -> None:
        accepted.append(args)

    async def on_reject(terminate: bool) -> None:
        raise AssertionError("the worker must not reject jobs")

    request = JobRequest(
        job=agent.Job(id="AJ_1", room=models.Room(name="r1"), agent_name="llmrtc-agent"),
        on_reject=on_reject,
        on_accept=on_accept,
    )
    settings = WorkerSettings(_env_file=None, AGENT_DISPLAY_NAME="Robo")
    await make_request_fnc(settings)(request)
    assert [(a.name, a.identity) for a in accepted] == [("Robo", "agent-AJ_1")]
    assert server_options(settings).request_fnc is not None


def _info(identity: str, name: str) -> Any:
    from worker.room import ParticipantInfo

    return ParticipantInfo(identity, name, {})


async def test_a_playbook_room_continues_in_its_stage_on_the_next_worker() -> None:
    from tests.unit.worker.test_conversation_modes import PLAYBOOK, TOOLS, _providers
    from worker.conversation import build_conversation

    store = InMemorySessionStore()
    settings = WorkerSettings(_env_file=None, PLAYBOOK=str(PLAYBOOK), TOOLS=str(TOOLS))

    async def job(reply: str, question: str) -> tuple[Any, FakeRoom, ScriptedLLM]:
        providers = _providers([reply, "Please tell me your account number and PIN."])
        conv = build_conversation(settings, providers, session_id="room-pb")
        persistence = RoomPersistence(store, "room-pb", conv.orchestrator)
        await persistence.restore()
        room = FakeRoom()

        def factory(identity: str, callbacks: SpeechCallbacks) -> FakeListener:
            return FakeListener(identity, callbacks)

        session = RoomSession(
            settings,
            room,
            PersistentConversation(conv, persistence),
            factory,
            room_name="room-pb",
        )
        session.start()
        session.on_participant_joined(_info("alice", "Alice"))
        session.on_data("alice", _text(question))
        await room.wait_for(lambda e: e.type == "tts_complete")
        await session.aclose()
        await persistence.aclose()
        assert isinstance(providers.llm, ScriptedLLM)
        return conv.orchestrator, room, providers.llm

    _, room, _ = await job("Sure, let me help you login first.", "I need help with my account login.")
    assert [(e.from_stage, e.to_stage) for e in room.events("stage_change")] == [("greeting", "auth")]
    stored = await store.load("room-pb")
    assert stored is not None and stored.playbook is not None
    assert stored.playbook["current_stage_id"] == "auth"

    second, room, llm = await job("Please tell me your account number.", "What do you need from me?")
    assert second.current_stage.id == "auth", "the stored stage continues"
    assert room.events("stage_change") == [], "restoring does not re-enter the stage"
    system = llm.requests[0].messages[0].content
    assert "account number and PIN" in system, "the auth stage's prompt is used"
    said = [m.content for m in llm.requests[0].messages if m.role in ("user", "assistant")]
    assert said[:2] == ["I need help with my account login.", "Sure, let me help you login first."]
