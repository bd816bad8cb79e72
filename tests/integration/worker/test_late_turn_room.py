"""A slow answer in a real room: the person is told (``turn_late``) when the turn becomes late, before any of
its audio, and then hears the answer (``python -m worker dev`` with ``TURN_LATE_S=1``, an official-SDK
participant, the LLM fake streaming slowly)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from signalling.devserver.server import DevServer
from tests.integration.worker.harness import BackgroundLoop, Human, WorkerProcess, running_worker, worker_env
from tests.integration.worker.openai_fake import OpenAIFake

pytestmark = [pytest.mark.integration, pytest.mark.slow]

Servers = tuple[DevServer, OpenAIFake, BackgroundLoop]


@pytest.fixture(scope="module")
def late_worker(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    dev, fake, _ = servers
    env = worker_env(dev, fake, TURN_LATE_S="1")
    with running_worker(env, tmp_path_factory.mktemp("late") / "worker.log") as proc:
        yield proc


async def test_a_slow_answer_is_announced_before_it_is_heard(
    servers: Servers, late_worker: WorkerProcess
) -> None:
    dev, fake, _ = servers
    fake.chunk_delay_s = 0.3  # ten pieces: the first sentence is whole ~3 s after the turn starts
    fake.replies.append("One two three four five six seven eight nine ten.")
    alice = await Human(dev.url, "late-turn-room", "alice", "Alice").join()
    try:
        await alice.wait_agent_state("listening", within=30)
        await alice.send(json.dumps({"v": 1, "type": "text", "text": "Count to ten, slowly."}))
        started_at, start = await alice.wait_for(lambda e: e["type"] == "turn_start", within=30)
        told_at, late = await alice.wait_for(lambda e: e["type"] == "error", within=30)
        assert (late["code"], late["turn_id"]) == ("turn_late", start["turn_id"])
        assert "tts_start" not in alice.types()  # told before anything of the answer played
        assert told_at - started_at < 2.5, told_at - started_at
        tts_at, _ = await alice.wait_for(lambda e: e["type"] == "tts_start", within=30)
        await alice.wait_for(lambda e: e["type"] == "turn_end" and e["outcome"] == "completed", within=30)
        await alice.wait_loud(tts_at - 0.5, frames=10, within=10)  # and then the answer is heard
        assert [e["code"] for e in alice.of_type("error")] == ["turn_late"]  # once
    finally:
        fake.chunk_delay_s = 0.0
        await alice.leave()
