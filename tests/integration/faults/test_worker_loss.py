"""The turn in flight when a worker dies (issue 16, item 2), through a real room.

Two ``python -m worker dev`` processes share a real ``redis-server``. The LLM hangs (the fault-injecting fake),
so a turn is in flight when its worker goes:

- SIGKILL: the question was saved when the turn started; the worker the room is re-dispatched to restores it,
  ends the lost turn for the humans (``error`` ``turn_lost`` then ``turn_end`` ``error``) and answers the next
  question with the lost one in the history;
- SIGTERM: the worker cancels the turn and saves the question before it leaves; the humans get ``turn_end``
  ``cancelled`` (reason ``shutdown``): from the stopping worker while its room connection lasts, else (the
  development server drops a worker's participants as soon as the worker's connection closes) from the worker
  that takes the room over.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from typing import Any, TypeVar

import pytest

from signalling.devserver.server import DevServer
from tests.integration.faults.fault_fake import FaultyOpenAI
from tests.integration.worker.harness import (
    API_KEY,
    API_SECRET,
    BackgroundLoop,
    Human,
    WorkerProcess,
    dispatch_token,
    provider_env,
    ready_agent,
    running_servers,
    said,
    serving_worker,
    wait_until,
)
from tests.unit.sessions.redis_server import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(150)]

AGENT = "llmrtc-agent"
ROOM = "worker-loss-room"
T = TypeVar("T")
Servers = tuple[DevServer, FaultyOpenAI, BackgroundLoop]


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    with running_servers(FaultyOpenAI(default_reply="Here I am.")) as servers:
        yield servers


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
        "SESSION_STORE_URL": redis_server.url,
        "WORKER_EXECUTOR": "thread",
        "LLM_FIRST_TOKEN_TIMEOUT_S": "60",  # the hang outlives the kill
        "TURN_BUDGET_S": "60",
        "DRAIN_TIMEOUT_S": "1",  # SIGTERM: drain briefly, then the jobs shut down
        **provider_env(fake),
    }
    procs = {
        name: WorkerProcess(env, tmp_path_factory.mktemp(f"loss-{name}") / "worker.log").start()
        for name in ("A", "B", "C")
    }
    try:
        for proc in procs.values():
            proc.wait_registered()
        yield procs
    finally:
        for name, proc in procs.items():
            proc.stop()
            print(f"---- worker {name}\n{proc.output()[-3000:]}")


def _text(msg: str) -> str:
    return json.dumps({"v": 1, "type": "text", "text": msg})


def _stored(redis_server: RedisServer) -> dict[str, Any] | None:
    with redis_server.client() as client:
        raw = client.get(f"llmrtc:session:{ROOM}")
    return None if raw is None else json.loads(raw)


def _users(state: dict[str, Any] | None) -> list[str]:
    return [] if state is None else [m["content"] for m in state["history"] if m["role"] == "user"]


async def _ask_and_lose(
    alice: Human, fake: FaultyOpenAI, redis_server: RedisServer, question: str
) -> tuple[str, int]:
    """Ask ``question`` while the LLM hangs; once it is saved, the turn id and the events mark."""
    fake.inject("llm", "hang")
    mark = len(alice.events)
    await alice.send(_text(question))
    _, start = await alice.wait_for(lambda e: e["type"] == "turn_start", 10, mark)
    await wait_until(
        lambda: question in _users(_stored(redis_server)), 5, "the question saved when the turn started"
    )
    return start["turn_id"], mark


async def test_a_stopped_or_killed_workers_turn_ends_for_the_humans_and_its_question_survives(
    servers: Servers, workers: dict[str, WorkerProcess], redis_server: RedisServer
) -> None:
    dev, fake, _ = servers
    alice = await Human(
        dev.url, ROOM, "alice", "Alice", jwt=dispatch_token("alice", "Alice", ROOM, AGENT)
    ).join()
    try:
        agent = await wait_until(lambda: ready_agent(alice), 30, "the agent")
        serving = await wait_until(lambda: serving_worker(workers, agent.identity), 10, "the serving worker")

        # SIGTERM while the LLM hangs
        q1 = "What is the boiling point of water?"
        turn, mark = await _ask_and_lose(alice, fake, redis_server, q1)
        proc = workers[serving].proc
        assert proc is not None
        stopped_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        told_at, end = await alice.wait_for(
            lambda e: e["type"] == "turn_end" and e["turn_id"] == turn, 40, mark
        )
        fake.clear()
        print(
            f"SIGTERM: turn_end {end['outcome']} ({end.get('reason')}) {told_at - stopped_at:.2f} s after the signal"
        )
        assert (end["outcome"], end["reason"]) == ("cancelled", "shutdown")
        assert [e["type"] for _, e in alice.events[mark:] if e.get("turn_id") == turn].count("turn_end") == 1
        proc.wait(30)
        agent = await wait_until(lambda: ready_agent(alice, exclude=agent.identity), 30, "the next agent")
        serving = await wait_until(
            lambda: serving_worker(workers, agent.identity), 10, "the next serving worker"
        )
        n_chat = len(fake.chat_requests)
        mark = len(alice.events)
        await alice.send(_text("Did you get my question?"))
        await alice.wait_for(lambda e: e["type"] == "turn_end" and e["outcome"] == "completed", 20, mark)
        assert said(fake.chat_requests[n_chat])[-2:] == [("user", q1), ("user", "Did you get my question?")]

        # SIGKILL while the LLM hangs
        q2 = "And the freezing point?"
        turn, mark = await _ask_and_lose(alice, fake, redis_server, q2)
        proc = workers[serving].proc
        assert proc is not None
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
        killed_at = time.monotonic()
        fake.clear()
        _, error = await alice.wait_for(lambda e: e["type"] == "error" and e.get("turn_id") == turn, 40, mark)
        told_at, end = await alice.wait_for(
            lambda e: e["type"] == "turn_end" and e["turn_id"] == turn, 5, mark
        )
        print(f"SIGKILL: lost turn ended for the human {told_at - killed_at:.2f} s after the kill")
        assert (error["code"], error["retryable"]) == ("turn_lost", True)
        assert (end["outcome"], end["reason"]) == ("error", "worker_restarted")
        await wait_until(lambda: ready_agent(alice, exclude=agent.identity), 30, "the last agent")
        n_chat = len(fake.chat_requests)
        mark = len(alice.events)
        await alice.send(_text("Still there?"))
        await alice.wait_for(lambda e: e["type"] == "turn_end" and e["outcome"] == "completed", 20, mark)
        seen = said(fake.chat_requests[n_chat])
        assert seen[-2:] == [("user", q2), ("user", "Still there?")]
        assert ("user", q1) in seen
        state = _stored(redis_server)
        assert state is not None and "pending_turn" not in state.get("metadata", {})
    finally:
        fake.clear()
        await alice.leave()
