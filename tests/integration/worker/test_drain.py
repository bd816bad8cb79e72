"""Graceful drain: SIGTERM to a worker in the middle of a conversation (``python -m worker start``).

Two production-mode workers share one real ``redis-server``. Worker A answers a long question; while the
answer plays, A gets SIGTERM. Then:

- the answer is heard to the end (``tts_complete``, then ``turn_end`` completed, audio until then);
- A reports draining: ``/readyz`` answers 503 and a new room's job goes to B, never to A;
- A exits within ``DRAIN_TIMEOUT_S`` (plus the shutdown's own few seconds);
- the conversation outlives the drain timeout: the room is handed to B, which restores the history from
  Redis (the chat request B sends for the next question carries the first exchange).
"""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from typing import TypeVar

import pytest

from signalling.devserver.server import DevServer
from tests.integration.worker.harness import (
    API_KEY,
    API_SECRET,
    ROOT,
    BackgroundLoop,
    Human,
    WorkerProcess,
    dispatch_token,
    provider_env,
    ready_agent,
    serving_worker,
    wait_until,
)
from tests.integration.worker.openai_fake import OpenAIFake
from tests.unit.sessions.redis_server import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(150)]

Servers = tuple[DevServer, OpenAIFake, BackgroundLoop]
AGENT = "llmrtc-agent"
DRAIN_S = 8
QUESTION = ROOT / "tests" / "fixtures" / "generated" / "capital_16k.wav"
T = TypeVar("T")


def _readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _metrics_port(proc: WorkerProcess) -> int | None:
    marker = "metrics and health on port "
    out = proc.output()
    if marker not in out:
        return None
    return int(out.split(marker, 1)[1].split()[0])


async def test_sigterm_drains_then_hands_the_room_over(
    servers: Servers, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    dev, fake, _ = servers
    env = {
        "LIVEKIT_URL": dev.url,
        "LIVEKIT_API_KEY": API_KEY,
        "LIVEKIT_API_SECRET": API_SECRET,
        "AGENT_NAME": AGENT,
        "SESSION_STORE_URL": redis_server.url,
        "DRAIN_TIMEOUT_S": str(DRAIN_S),
        "METRICS_PORT": "0",
        **provider_env(fake),
    }
    workers = {
        name: WorkerProcess(
            env, tmp_path_factory.mktemp(f"drain-{name}") / "worker.log", mode="start"
        ).start()
        for name in ("A", "B")
    }
    room = f"drain-{int(time.time())}"
    alice: Human | None = None
    try:
        for proc in workers.values():
            proc.wait_registered()
        # a long answer: about 5 s of speech at 65 ms per character
        long_answer = "Paris is the capital of France, and it has been for a very long time indeed."
        fake.speech_ms_per_char = 65.0
        fake.default_transcript = "What is the capital of France?"
        fake.replies.extend([long_answer, "Around two million people live in Paris itself."])
        alice = await Human(
            dev.url, room, "alice", "Alice", jwt=dispatch_token("alice", "Alice", room)
        ).join()
        first = await wait_until(lambda: ready_agent(alice), 40, "the agent to join and listen")
        a = await wait_until(lambda: serving_worker(workers, first.identity), 10, "the serving worker's log")
        b = "B" if a == "A" else "A"
        port_a = await wait_until(lambda: _metrics_port(workers[a]), 10, "worker A's metrics port")
        assert _readyz(port_a) == 200

        await alice.say(QUESTION)
        _, start = await alice.wait_for(lambda e: e["type"] == "tts_start", within=30)
        turn_id = start["turn_id"]
        proc_a = workers[a].proc
        assert proc_a is not None
        proc_a.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        # the current answer is heard to the end
        await alice.wait_for(
            lambda e: e["type"] == "turn_end" and e.get("turn_id") == turn_id and e["outcome"] == "completed",
            within=30,
        )
        assert [e for e in alice.of_type("tts_complete") if e["turn_id"] == turn_id]
        assert not [e for e in alice.of_type("tts_cancelled") if e["turn_id"] == turn_id]

        # A is draining: not ready, and a new room goes to B
        if proc_a.poll() is None:
            assert _readyz(port_a) == 503
        bob_room = f"{room}-new"
        bob = await Human(dev.url, bob_room, "bob", "Bob", jwt=dispatch_token("bob", "Bob", bob_room)).join()
        try:
            bobs_agent = await wait_until(lambda: ready_agent(bob), 40, "an agent for the new room")
            assert serving_worker(workers, bobs_agent.identity) == b, "no new job goes to a draining worker"
        finally:
            await bob.leave()

        # A exits within the drain timeout (plus the shutdown's own seconds)
        exited = await wait_until(
            lambda: proc_a.poll() is not None, DRAIN_S + 15, "the draining worker to exit"
        )
        assert exited, "the draining worker must exit"
        assert time.monotonic() - signalled <= DRAIN_S + 15

        # the conversation outlived the drain: the room continues on B with its history
        second = await wait_until(
            lambda: ready_agent(alice, exclude=first.identity), 40, "the room's agent on B"
        )
        assert serving_worker(workers, second.identity) == b
        asked = len(fake.chat_requests)
        await alice.say(QUESTION)
        await wait_until(lambda: len(fake.chat_requests) > asked, 30, "B's chat request")
        said = [
            (m["role"], m["content"].strip())
            for m in fake.chat_requests[-1]["messages"]
            if m["role"] in ("user", "assistant")
        ]
        assert ("assistant", long_answer.strip()) in said, json.dumps(said)[:2000]
    finally:
        if alice is not None:
            await alice.leave()
        for name, proc in workers.items():
            proc.stop()
            print(f"---- worker {name}\n{proc.output()[-3000:]}")
