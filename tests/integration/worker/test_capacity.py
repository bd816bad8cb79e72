"""Capacity in a real room: a full worker refuses new rooms and keeps answering its own, a room it cannot
serve in time is told so (event and spoken line), and one room's failing or hung job leaves the other rooms
of the worker talking.

The worker is the real one (``tests/integration/worker/capacity_agent.py``: the real entrypoint and request
handler, with load injected through a control file and faults injected by room name), in one process with
the thread executor, on the development server, with participants on the livekit SDK.
"""

from __future__ import annotations

import asyncio
import re
import urllib.request
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
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("capacity") / "load"
    path.write_text("0")
    return path


@pytest.fixture(scope="module")
def capacity_worker(
    servers: Servers, control: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    dev, fake, _ = servers
    fake.default_transcript = QUESTION
    fake.default_reply = "Paris."
    env = worker_env(
        dev,
        fake,
        VAD_MIN_SILENCE_MS="500",
        WORKER_LOAD_THRESHOLD="0.7",
        METRICS_PORT="0",
        CAPACITY_CONTROL=str(control),
    )
    log = tmp_path_factory.mktemp("capacity-worker") / "worker.log"
    with running_worker(env, log, module="tests.integration.worker.capacity_agent") as proc:
        yield proc


def _metrics(worker: WorkerProcess) -> str:
    found = re.search(r"metrics and health on port (\d+)", worker.output())
    assert found, worker.output()[-2000:]
    with urllib.request.urlopen(f"http://127.0.0.1:{found.group(1)}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def _value(text: str, name: str, labels: str = "") -> float:
    for line in text.splitlines():
        if line.startswith(name + (("{" + labels) if labels else "")) or (
            not labels and line.startswith(name + " ")
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _wait_load(worker: WorkerProcess, at_least: float, within: float = 10.0) -> float:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        load = _value(await asyncio.to_thread(_metrics, worker), "llmrtc_worker_load")
        if load >= at_least:
            return load
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"load stayed at {load}")
        await asyncio.sleep(0.3)


def _agents(human: Human) -> list[rtc.RemoteParticipant]:
    return [
        p
        for p in human.room.remote_participants.values()
        if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    ]


async def _ready(human: Human, within: float = 30.0) -> None:
    await human.wait_agent_state("listening", within=within)


async def _ask(human: Human, within: float = 30.0) -> dict[str, object]:
    """Say the question; the turn's end (it must complete: an answer, not an error)."""
    start = len(human.events)
    await human.say(fixture_path("capital_16k"))
    _, end = await human.wait_for(lambda e: e["type"] == "turn_end", within=within, start=start)
    assert end["outcome"] == "completed", human.types()
    return end


async def test_a_full_worker_refuses_new_rooms_and_keeps_answering_its_own(
    servers: Servers, capacity_worker: WorkerProcess, control: Path
) -> None:
    dev, _, _ = servers
    alice = await Human(dev.url, "cap-kept", "alice", "Alice").join()
    bob: Human | None = None
    try:
        await _ready(alice)
        await _ask(alice)

        await asyncio.to_thread(control.write_text, "0.9")  # over WORKER_LOAD_THRESHOLD=0.7: full
        assert await _wait_load(capacity_worker, 0.9) >= 0.9
        bob = await Human(dev.url, "cap-refused", "bob", "Bob").join()
        await asyncio.sleep(4.0)
        assert _agents(bob) == [], "a full worker must not take a new room"
        await _ask(alice)  # the room it holds is still answered
        assert _agents(alice), "the kept room keeps its agent"

        await asyncio.to_thread(
            control.write_text, "0"
        )  # capacity again: the waiting room gets its agent and is answered
        await _ready(bob, within=30)
        await _ask(bob)
        # nothing was dropped without an event: every utterance ended its turn with an answer, and no
        # error was sent to anyone
        for human in (alice, bob):
            assert [e for e in human.of_type("error")] == [], human.types()
    finally:
        await asyncio.to_thread(control.write_text, "0")
        await alice.leave()
        if bob is not None:
            await bob.leave()


async def test_a_room_the_worker_cannot_serve_is_told_so(
    servers: Servers, capacity_worker: WorkerProcess
) -> None:
    dev, fake, _ = servers
    carol = await Human(dev.url, "busy-1", "carol", "Carol").join()
    try:
        at, event = await carol.wait_for(lambda e: e["type"] == "error", within=40)
        assert event["code"] == "worker_busy"
        assert event["retryable"] is True
        await carol.wait_loud(at - 0.5, frames=20, within=10)  # the spoken busy line
        assert any("busy" in r.get("input", "") for r in fake.speech_requests)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while _agents(carol):  # then the agent leaves the room
            assert loop.time() < deadline, "the agent stayed in a room it cannot serve"
            await asyncio.sleep(0.2)
        text = await asyncio.to_thread(_metrics, capacity_worker)
        assert _value(text, "llmrtc_worker_shed_total", 'what="room"') >= 1
    finally:
        await carol.leave()


async def test_a_crashed_or_hung_job_leaves_the_other_rooms_talking(
    servers: Servers, capacity_worker: WorkerProcess
) -> None:
    dev, _, _ = servers
    alice = await Human(dev.url, "iso-kept", "alice3", "Alice").join()
    mallory = await Human(dev.url, "crash-1", "mallory", "Mallory").join()
    sam: Human | None = None
    try:
        await _ready(alice)
        await _ready(mallory)
        await _ask(alice)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while "injected crash in crash-1" not in capacity_worker.output():
            assert loop.time() < deadline, "the crash was not injected"
            await asyncio.sleep(0.2)
        await _ask(alice)  # the crashed job's room is gone; this one talks on
        assert capacity_worker.proc is not None and capacity_worker.proc.poll() is None

        sam = await Human(dev.url, "stuck-1", "sam", "Sam").join()
        deadline = loop.time() + 20
        while "blocking the loop of stuck-1" not in capacity_worker.output():
            assert loop.time() < deadline, "the hang was not injected"
            await asyncio.sleep(0.05)
        started = loop.time()
        end = await _ask(alice, within=20)  # answered while the other job's loop is blocked
        assert end["outcome"] == "completed"
        assert loop.time() - started < 12.0
        assert capacity_worker.proc.poll() is None
    finally:
        for human in (alice, mallory, sam):
            if human is not None:
                await human.leave()
