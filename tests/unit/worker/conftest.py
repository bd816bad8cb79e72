"""A room session on the real orchestrator with scripted providers and an in-memory room."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from llmrtc.orchestrator import ConversationOrchestrator, ConversationProviders, OrchestratorConfig
from llmrtc.testing import FakeSTT, FakeTTS, ScriptedLLM
from worker.config import WorkerSettings
from worker.conversation import OrchestratorConversation
from worker.listeners import SpeechCallbacks
from worker.protocol import AgentState, ServerEvent
from worker.room import ParticipantInfo
from worker.session import RoomSession


class FakeAudio:
    """The agent track: plays ``speed`` times faster than real time; records what was captured."""

    def __init__(self, speed: float = 10.0) -> None:
        self.speed = speed
        self.captured = bytearray()
        self.clears = 0

    async def capture(self, pcm: bytes, sample_rate: int) -> None:
        self.captured.extend(pcm)
        await asyncio.sleep(len(pcm) / 2 / sample_rate / self.speed)

    async def flush(self) -> None:
        return None

    def clear(self) -> float:
        self.clears += 1
        return 0.0

    @property
    def queued_s(self) -> float:
        return 0.0

    async def wait_for_playout(self) -> None:
        return None


@dataclass
class FakeRoom:
    audio: FakeAudio = field(default_factory=FakeAudio)
    sent: list[tuple[ServerEvent, list[str] | None]] = field(default_factory=list)
    states: list[AgentState] = field(default_factory=list)
    user_transcripts: list[tuple[str, str]] = field(default_factory=list)
    interim_transcripts: list[tuple[str, str, str]] = field(default_factory=list)
    agent_text: list[tuple[str, str, bool]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def send(self, event: ServerEvent, destination: list[str] | None = None) -> None:
        self.sent.append((event, destination))
        self.changed.set()

    def set_agent_state(self, state: AgentState) -> None:
        if not self.states or self.states[-1] != state:
            self.states.append(state)

    def user_transcription(self, identity: str, text: str, segment_id: str, final: bool = True) -> None:
        if final:
            self.user_transcripts.append((identity, text))
        else:
            self.interim_transcripts.append((identity, text, segment_id))

    def agent_transcription(self, segment_id: str, delta: str, final: bool = False) -> None:
        self.agent_text.append((segment_id, delta, final))

    def events(self, kind: str | None = None) -> list[Any]:
        return [e for e, _ in self.sent if kind is None or e.type == kind]

    def types(self) -> list[str]:
        return [e.type for e, _ in self.sent]

    async def wait_for(self, predicate: Callable[[Any], bool], within: float = 5.0) -> Any:
        async def look() -> Any:
            while True:
                for event, _ in self.sent:
                    if predicate(event):
                        return event
                self.changed.clear()
                await self.changed.wait()

        return await asyncio.wait_for(look(), within)


class FakeListener:
    def __init__(self, identity: str, callbacks: SpeechCallbacks) -> None:
        self.identity = identity
        self.callbacks = callbacks
        self.agent_speaking = False
        self.pushed = 0
        self.closed = False

    def push(self, pcm16k: bytes) -> None:
        self.pushed += len(pcm16k)

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class Harness:
    session: RoomSession
    room: FakeRoom
    llm: ScriptedLLM
    stt: FakeSTT
    tts: FakeTTS
    orchestrator: ConversationOrchestrator
    listeners: dict[str, FakeListener]

    def join(self, identity: str, name: str, **attributes: str) -> ParticipantInfo:
        info = ParticipantInfo(identity, name, dict(attributes))
        self.session.on_participant_joined(info)
        return info


Factory = Callable[..., "asyncio.Future[Harness]"]


@pytest.fixture
async def make_session() -> AsyncIterator[Callable[..., Any]]:
    made: list[Harness] = []

    async def make(
        replies: list[str],
        transcripts: list[str] | None = None,
        *,
        tokens_per_s: float | None = None,
        **settings: Any,
    ) -> Harness:
        values = {"FALSE_INTERRUPTION_TIMEOUT": 0.3, **{k.upper(): v for k, v in settings.items()}}
        config = WorkerSettings(_env_file=None, **values)
        llm = ScriptedLLM(replies, tokens_per_s=tokens_per_s)
        stt = FakeSTT(transcripts or [])
        tts = FakeTTS(chars_per_second=15.0)
        orchestrator = ConversationOrchestrator(
            ConversationProviders(llm=llm, stt=stt, tts=tts), OrchestratorConfig(system_prompt="test")
        )
        room = FakeRoom()
        listeners: dict[str, FakeListener] = {}

        def factory(identity: str, callbacks: SpeechCallbacks) -> FakeListener:
            listeners[identity] = FakeListener(identity, callbacks)
            return listeners[identity]

        session = RoomSession(
            config, room, OrchestratorConversation(orchestrator, tts), factory, room_name="r1"
        )
        session.start()
        harness = Harness(session, room, llm, stt, tts, orchestrator, listeners)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        await harness.session.aclose()
