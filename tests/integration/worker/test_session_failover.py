"""Horizontal scaling: a room's conversation survives its worker.

Two ``python -m worker dev`` processes share one real ``redis-server`` (``SESSION_STORE_URL``) and register
with the dev server under the default agent name, dispatched by the participant's token. Worker A answers a
question; it is killed with SIGKILL; the dev server re-dispatches the room to worker B, which restores the
conversation from Redis: the chat request B sends for the next question carries the first question and
answer. Other participants see the agent under ``AGENT_DISPLAY_NAME``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from livekit import api, rtc

from signalling.devserver.server import DevServer
from tests.integration.worker.harness import (
    API_KEY,
    API_SECRET,
    BackgroundLoop,
    Human,
    WorkerProcess,
    provider_env,
)
from tests.integration.worker.openai_fake import OpenAIFake
from tests.unit.sessions.redis_server import RedisServer, start_redis

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(90)]

Servers = tuple[DevServer, OpenAIFake, BackgroundLoop]
AGENT = "llmrtc-agent"
DISPLAY = "Robo"
ROOM = "failover-room"
T = TypeVar("T")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def workers(
    servers: Servers, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, WorkerProcess]]:
    dev, fake, _ = servers
    env = {
        "LIVEKIT_URL": dev.url,
        "LIVEKIT_API_KEY": API_KEY,
        "LIVEKIT_API_SECRET": API_SECRET,
        "AGENT_NAME": AGENT,
        "AGENT_DISPLAY_NAME": DISPLAY,
        "SESSION_STORE_URL": redis_server.url,
        "WORKER_EXECUTOR": "thread",
        **provider_env(fake),
    }
    procs = {
        name: WorkerProcess(env, tmp_path_factory.mktemp(f"worker-{name}") / "worker.log").start()
        for name in ("A", "B")
    }
    try:
        for proc in procs.values():
            proc.wait_registered()
        yield procs
    finally:
        for name, proc in procs.items():
            proc.stop()
            print(f"---- worker {name}\n{proc.output()[-4000:]}")


def _token(identity: str, name: str) -> str:
    """A participant token that dispatches the agent by name, as the token service's do."""
    config = api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=AGENT)])
    return (
        api.AccessToken(API_KEY, API_SECRET)
        .with_identity(identity)
        .with_name(name)
        .with_grants(api.VideoGrants(room_join=True, room=ROOM))
        .with_room_config(config)
        .to_jwt()
    )


async def _wait(probe: Callable[[], T | None], within: float, what: str) -> T:
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {within:.0f} s for {what}")
        await asyncio.sleep(0.1)


def _ready_agent(human: Human, exclude: str = "") -> rtc.RemoteParticipant | None:
    for p in human.room.remote_participants.values():
        if (
            p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
            and p.identity != exclude
            and p.attributes.get("lk.agent.state") == "listening"
        ):
            return p
    return None


def _serving(workers: dict[str, WorkerProcess], agent_identity: str) -> str | None:
    """The worker whose log shows it joined ``ROOM`` as ``agent_identity`` (``agent-<job id>``)."""
    job = agent_identity.removeprefix("agent-")
    found = [name for name, proc in workers.items() if job in proc.output()]
    return found[0] if len(found) == 1 else None


def _said(request: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in request["messages"] if m["role"] in ("user", "assistant")]


async def test_conversation_survives_a_killed_worker(
    servers: Servers, workers: dict[str, WorkerProcess], redis_server: RedisServer
) -> None:
    _, fake, _ = servers
    dev = servers[0]
    fake.replies.extend(["The capital of France is Paris.", "About two million people live in Paris."])
    alice = await Human(dev.url, ROOM, "alice", "Alice", jwt=_token("alice", "Alice")).join()
    try:
        first_agent = await _wait(lambda: _ready_agent(alice), 30, "the agent to join and listen")
        assert first_agent.name == DISPLAY, "other participants see AGENT_DISPLAY_NAME"
        assert first_agent.identity.startswith("agent-")
        a = await _wait(lambda: _serving(workers, first_agent.identity), 10, "the serving worker's log")
        b = "B" if a == "A" else "A"

        n_chat = len(fake.chat_requests)
        await alice.send(json.dumps({"v": 1, "type": "text", "text": "What is the capital of France?"}))
        await alice.wait_for(lambda e: e["type"] == "tts_complete", within=30)
        assert _said(fake.chat_requests[n_chat]) == [("user", "What is the capital of France?")]

        def saved() -> bool:
            with redis_server.client() as client:
                raw = client.get(f"llmrtc:session:{ROOM}")
            return raw is not None and b"The capital of France is Paris." in raw

        await _wait(saved, 10, "worker A's save of the answer")

        proc = workers[a].proc
        assert proc is not None
        killed_at = time.monotonic()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)

        second_agent = await _wait(
            lambda: _ready_agent(alice, exclude=first_agent.identity), 30, "the room re-dispatched to B"
        )
        print(f"agent back and listening {time.monotonic() - killed_at:.2f} s after the kill")
        assert second_agent.name == DISPLAY
        assert _serving(workers, second_agent.identity) == b
        assert "session restored" in workers[b].output()

        n_chat = len(fake.chat_requests)
        mark = len(alice.events)
        await alice.send(json.dumps({"v": 1, "type": "text", "text": "How many people live there?"}))
        _, answer = await alice.wait_for(lambda e: e["type"] == "llm", within=30, start=mark)
        assert answer["text"] == "About two million people live in Paris."
        assert _said(fake.chat_requests[n_chat]) == [
            ("user", "What is the capital of France?"),
            ("assistant", "The capital of France is Paris."),
            ("user", "How many people live there?"),
        ]
    finally:
        await alice.leave()


def test_worker_logs_name_no_redis_secret(workers: dict[str, WorkerProcess]) -> None:
    """The store URL may carry a password: the worker logs the backend, never the URL."""
    for proc in workers.values():
        out = proc.output()
        assert "redis://" not in out
