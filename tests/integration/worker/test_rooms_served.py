"""A worker keeps nothing native of the rooms it has served (jobs on threads, ``python -m worker dev``).

When the last human leaves, the dev server removes the agent at once (a server-ended session): livekit's Rust
core then cannot free the agent track's native audio source (livekit/rust-sdks#1443), which owns a capture
thread (``AudioSourceCapt``) with a 10 ms timer. The worker reuses such sources (``worker.audio_sources.SourcePool``):
after several rooms one after another, at most one such thread remains, and each room still hears the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.worker.harness import (
    Human,
    WorkerProcess,
    running_servers,
    running_worker,
    wait_until,
    worker_env,
)
from tests.integration.worker.openai_fake import OpenAIFake

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(150)]

ROOMS = 3
SETTLE_S = 5.0
CAPTURE_THREAD = "AudioSourceCapt"  # webrtc-sys' "AudioSourceCapture" task queue, cut to 15 characters


@pytest.fixture(scope="module")
def greeting_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, WorkerProcess]]:
    with running_servers(OpenAIFake()) as (dev, fake, _):
        env = worker_env(dev, fake, GREETING="Hello, how can I help you today?")
        with running_worker(env, tmp_path_factory.mktemp("served") / "worker.log") as proc:
            yield dev.url, proc


def capture_threads(pid: int) -> int:
    count = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # the thread ended while listed
            count += (task / "comm").read_text().strip() == CAPTURE_THREAD
    return count


def jobs_ended(proc: WorkerProcess) -> int:
    return proc.output().count("room is empty or closed: ending the job")


async def test_rooms_served_one_after_another_leave_one_capture_thread(
    greeting_worker: tuple[str, WorkerProcess],
) -> None:
    url, proc = greeting_worker
    assert proc.proc is not None
    pid = proc.proc.pid
    for i in range(ROOMS):
        joined = time.monotonic()
        human = await Human(url, f"served-{i}", "human", "Human").join()
        try:
            await human.wait_agent_state("listening", within=60)
            # the greeting is heard: the agent's source (a kept one from the second room on) plays here
            await human.wait_loud(joined, frames=20, within=15)
        finally:
            await human.leave()
        await wait_until(lambda i=i: jobs_ended(proc) > i, 20, f"the job of room {i} to end")
        # the job's teardown (its outbox may wait up to 2 + 2 s on the ended room) hands the source back
        await asyncio.sleep(SETTLE_S)
    threads = capture_threads(pid)
    assert threads <= 1, f"{threads} {CAPTURE_THREAD} threads after {ROOMS} rooms served one after another"
