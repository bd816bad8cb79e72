"""A burst of rooms dispatched at once to one worker: it takes as many as its load allows with each room
counted at its estimated cost (``WORKER_ROOM_CPU``), not all of them because none has started yet; the
others wait ("Waiting for the assistant to join" in the web client) and are served when rooms free up
(worker/load.py: admissions, and open rooms at their talking cost)."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from livekit import rtc

from signalling.devserver.server import DevServer
from tests.fixtures import fixture_path
from tests.integration.worker.harness import (
    BackgroundLoop,
    Human,
    WorkerProcess,
    running_worker,
    worker_env,
)
from tests.integration.worker.openai_fake import OpenAIFake

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(150)]

Servers = tuple[DevServer, OpenAIFake, BackgroundLoop]
ROOM_LOAD = 0.3
"""Each room counts this much of the load (starting, and open): with the threshold at 0.7, two or three
of a burst fit (the measured load of an idle worker is under 0.1), never all four."""


@pytest.fixture(scope="module")
def burst_worker(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    dev, fake, _ = servers
    fake.default_transcript = "What is the capital of France?"
    fake.default_reply = "Paris."
    cores = len(os.sched_getaffinity(0))
    env = worker_env(
        dev,
        fake,
        VAD_MIN_SILENCE_MS="500",
        WORKER_LOAD_THRESHOLD="0.7",
        # the worker counts a room at WORKER_ROOM_CPU / cores / 0.85 of its load (worker/load.py)
        WORKER_ROOM_CPU=f"{ROOM_LOAD * 0.85 * cores:.3f}",
    )
    with running_worker(env, tmp_path_factory.mktemp("burst") / "worker.log") as proc:
        yield proc


def _has_agent(human: Human) -> bool:
    return any(
        p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT for p in human.room.remote_participants.values()
    )


async def test_a_burst_of_rooms_is_admitted_as_the_load_allows_and_the_rest_wait(
    servers: Servers, burst_worker: WorkerProcess, tmp_path: Path
) -> None:
    dev, _, _ = servers
    humans = await asyncio.gather(
        *(Human(dev.url, f"burst-{i}", f"person-{i}", f"Person {i}").join() for i in range(4))
    )
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not any(_has_agent(h) for h in humans):
            assert loop.time() < deadline, "no room got an agent"
            await asyncio.sleep(0.2)
        # full with the rooms it took: it tells LiveKit so (no more offers), or declines an offer that raced
        # the report; then no room has left yet, so what it accepted is all it took of the burst
        deadline = loop.time() + 20
        while not re.search(r"marking as unavailable|full: declining job", burst_worker.output()):
            assert loop.time() < deadline, burst_worker.output()[-3000:]
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        accepted = burst_worker.output().count("accepting job")
        assert 1 <= accepted <= 3, burst_worker.output()[-3000:]
        first = [h for h in humans if _has_agent(h)]
        assert 1 <= len(first) <= accepted, [_has_agent(h) for h in humans]

        # the rooms it took leave; the waiting ones are served now, and they talk
        waiting = [h for h in humans if h not in first]
        await asyncio.gather(*(h.leave() for h in first))
        for human in waiting:
            await human.wait_agent_state("listening", within=60)
        start = len(waiting[-1].events)
        await waiting[-1].say(fixture_path("capital_16k"))
        _, end = await waiting[-1].wait_for(lambda e: e["type"] == "turn_end", within=30, start=start)
        assert end["outcome"] == "completed"
        for human in humans:  # refused, then served: nobody was told an error
            assert human.of_type("error") == [], human.types()
    finally:
        await asyncio.gather(*(h.leave() for h in humans), return_exceptions=True)
