"""Horizontal scaling: a room's conversation survives its worker.

Two ``python -m worker dev`` processes share one real ``redis-server`` (``SESSION_STORE_URL``) and register
with the dev server under the default agent name, dispatched by the participant's token. Worker A answers a
question; it is killed with SIGKILL; the dev server re-dispatches the room to worker B, which restores the
conversation from Redis: the chat request B sends for the next question carries the first question and
answer. Other participants see the agent under ``AGENT_DISPLAY_NAME``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from typing import TypeVar

import pytest

from signalling.devserver.server import DevServer
from tests.integration.worker.harness import (
    API_KEY,
    API_SECRET,
    BackgroundLoop,
    Human,
    WorkerProcess,
    dispatch_token,
    provider_env,
    ready_agent,
    said,
    serving_worker,
    wait_until,
)
from tests.integration.worker.openai_fake import OpenAIFake
from tests.unit.sessions.redis_server import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(90)]

Servers = tuple[DevServer, OpenAIFake, BackgroundLoop]
AGENT = "llmrtc-agent"
DISPLAY = "Robo"
ROOM = "failover-room"
T = TypeVar("T")


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


async def test_conversation_survives_a_killed_worker(
    servers: Servers, workers: dict[str, WorkerProcess], redis_server: RedisServer
) -> None:
    _, fake, _ = servers
    dev = servers[0]
    fake.replies.extend(["The capital of France is Paris.", "About two million people live in Paris."])
    alice = await Human(
        dev.url, ROOM, "alice", "Alice", jwt=dispatch_token("alice", "Alice", ROOM, AGENT)
    ).join()
    try:
        first_agent = await wait_until(lambda: ready_agent(alice), 30, "the agent to join and listen")
        assert first_agent.name == DISPLAY, "other participants see AGENT_DISPLAY_NAME"
        assert first_agent.identity.startswith("agent-")
        a = await wait_until(
            lambda: serving_worker(workers, first_agent.identity), 10, "the serving worker's log"
        )
        b = "B" if a == "A" else "A"

        n_chat = len(fake.chat_requests)
        await alice.send(json.dumps({"v": 1, "type": "text", "text": "What is the capital of France?"}))
        await alice.wait_for(lambda e: e["type"] == "tts_complete", within=30)
        assert said(fake.chat_requests[n_chat]) == [("user", "What is the capital of France?")]

        def saved() -> bool:
            with redis_server.client() as client:
                raw = client.get(f"llmrtc:session:{ROOM}")
            return raw is not None and b"The capital of France is Paris." in raw

        await wait_until(saved, 10, "worker A's save of the answer")

        proc = workers[a].proc
        assert proc is not None
        killed_at = time.monotonic()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)

        second_agent = await wait_until(
            lambda: ready_agent(alice, exclude=first_agent.identity), 30, "the room re-dispatched to B"
        )
        print(f"agent back and listening {time.monotonic() - killed_at:.2f} s after the kill")
        assert second_agent.name == DISPLAY
        assert serving_worker(workers, second_agent.identity) == b
        assert "session restored" in workers[b].output()

        n_chat = len(fake.chat_requests)
        mark = len(alice.events)
        await alice.send(json.dumps({"v": 1, "type": "text", "text": "How many people live there?"}))
        _, answer = await alice.wait_for(lambda e: e["type"] == "llm", within=30, start=mark)
        assert answer["text"] == "About two million people live in Paris."
        assert said(fake.chat_requests[n_chat]) == [
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
