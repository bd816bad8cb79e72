"""Three workers under one supervisor (``WORKER_PROCESSES=3``), six rooms spread over them by load, one worker
killed with SIGKILL while the rooms talk: its rooms come back on the other workers with their history, the
other rooms never notice (same agent, every question answered, no error), and the supervisor starts a fresh
worker in place of the dead one.

The humans type (no microphones: six rooms of audio on the two shared cores of the test machine would
measure the machine, not the failover). One real ``redis-server`` holds the conversations (``SESSION_STORE_URL``); each worker serves its own
``/metrics`` (``METRICS_PORT`` + its index), whose ``llmrtc_worker_rooms`` gauge shows the spread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from livekit import rtc

from signalling.devserver.server import DevServer
from tests.integration.worker.harness import (
    API_KEY,
    API_SECRET,
    BackgroundLoop,
    Human,
    WorkerProcess,
    provider_env,
    wait_until,
)
from tests.integration.worker.openai_fake import OpenAIFake
from tests.unit.sessions.redis_server import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]

Servers = tuple[DevServer, OpenAIFake, BackgroundLoop]
WORKERS = 3
ROOMS = 6


def _free_ports(n: int) -> int:
    """A base port with ``n`` consecutive free ports."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + n >= 65535:
            continue
        ok = True
        for port in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range")


@pytest.fixture(scope="module")
def pool(
    servers: Servers, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[WorkerProcess, int]]:
    dev, fake, _ = servers
    base = _free_ports(WORKERS)
    env = {
        "LIVEKIT_URL": dev.url,
        "LIVEKIT_API_KEY": API_KEY,
        "LIVEKIT_API_SECRET": API_SECRET,
        "AGENT_NAME": "",
        "SESSION_STORE_URL": redis_server.url,
        "WORKER_EXECUTOR": "thread",
        "WORKER_PROCESSES": str(WORKERS),
        "METRICS_PORT": str(base),
        "METRICS_HOST": "127.0.0.1",
        "DRAIN_TIMEOUT_S": "5",
        **provider_env(fake),
    }
    sup = WorkerProcess(env, tmp_path_factory.mktemp("pool") / "workers.log").start()
    try:
        deadline = time.monotonic() + 90
        while sup.output().count("registered worker") < WORKERS:
            assert sup.proc is not None and sup.proc.poll() is None, sup.output()[-4000:]
            assert time.monotonic() < deadline, sup.output()[-4000:]
            time.sleep(0.2)
        yield sup, base
    finally:
        sup.stop()
        if sup.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(sup.proc.pid, signal.SIGKILL)
        print(sup.output()[-6000:])


def _rooms_gauge(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as resp:
            text = resp.read().decode()
    except OSError:
        return -1.0
    for line in text.splitlines():
        if line.startswith("llmrtc_worker_rooms "):
            return float(line.split()[1])
    return 0.0


def _child(sup: WorkerProcess, index: int) -> psutil.Process:
    assert sup.proc is not None
    for child in psutil.Process(sup.proc.pid).children():
        with contextlib.suppress(psutil.Error):
            if child.environ().get("LLMRTC_WORKER_INDEX") == str(index):
                return child
    raise LookupError(f"no worker process {index}")


def _agent(human: Human) -> rtc.RemoteParticipant | None:
    for p in human.room.remote_participants.values():
        if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT and (
            p.attributes.get("lk.agent.state") in ("listening", "thinking", "speaking")
        ):
            return p
    return None


async def _ask(human: Human, text: str, within: float = 30.0) -> None:
    mark = len(human.events)
    await human.send(json.dumps({"v": 1, "type": "text", "text": text}))
    _, end = await human.wait_for(lambda e: e["type"] == "turn_end", within=within, start=mark)
    assert end["outcome"] == "completed", (human.room_name, human.types()[mark:])


def _request_with(fake: OpenAIFake, text: str) -> dict[str, Any]:
    for request in reversed(fake.chat_requests):
        if any(m.get("content") == text for m in request["messages"]):
            return request
    raise LookupError(text)


async def test_a_killed_worker_s_rooms_come_back_on_the_others_with_their_history(
    servers: Servers, pool: tuple[WorkerProcess, int], redis_server: RedisServer
) -> None:
    dev, fake, _ = servers
    sup, base = pool
    humans = [
        await Human(dev.url, f"scale-{i}", f"h{i}", f"Human {i}", microphone=False).join()
        for i in range(ROOMS)
    ]
    try:
        agents = {}
        for h in humans:
            agents[h.room_name] = (
                await wait_until(lambda h=h: _agent(h), 40, f"{h.room_name}'s agent")
            ).identity
            await _ask(h, f"First question in {h.room_name}")
        spread = [_rooms_gauge(base + i) for i in range(WORKERS)]
        print(f"rooms per worker: {spread}")
        assert sum(spread) == ROOMS
        assert sum(1 for n in spread if n > 0) >= 2, f"rooms not spread over the workers: {spread}"

        def saved(room: str) -> bool:
            with redis_server.client() as client:
                raw = client.get(f"llmrtc:session:{room}")
            return raw is not None and f"First question in {room}".encode() in raw

        for h in humans:
            await wait_until(lambda h=h: saved(h.room_name), 10, f"{h.room_name} saved")

        victim = max(range(WORKERS), key=lambda i: spread[i])
        victim_proc = _child(sup, victim)
        victim_proc.send_signal(signal.SIGKILL)  # as the FFI panic or an OOM kill would
        killed_at = time.monotonic()

        # the rooms of the others talk on, at once and while the victim's rooms move
        await asyncio.sleep(0.5)
        moved = [h for h in humans if (a := _agent(h)) is None or a.identity != agents[h.room_name]]
        kept = [h for h in humans if h not in moved]
        assert moved, "the killed worker held rooms"
        await asyncio.gather(*(_ask(h, f"Second question in {h.room_name}") for h in kept))
        for h in kept:
            agent = _agent(h)
            assert agent is not None and agent.identity == agents[h.room_name], "a kept room lost its agent"
            assert h.of_type("error") == [], h.types()

        # the moved rooms: a new agent, on another worker, with the conversation so far
        for h in moved:
            await wait_until(
                lambda h=h: (a := _agent(h)) is not None and a.identity != agents[h.room_name],
                30,
                f"{h.room_name} re-dispatched",
            )
        print(f"moved rooms back {time.monotonic() - killed_at:.1f} s after the kill")
        for h in moved:
            await _ask(h, f"Second question in {h.room_name}")
            request = _request_with(fake, f"Second question in {h.room_name}")
            said = [m["content"] for m in request["messages"] if m["role"] == "user"]
            assert f"First question in {h.room_name}" in said, said

        # the supervisor replaced the dead worker
        await wait_until(lambda: sup.output().count("registered worker") > WORKERS, 40, "a fresh worker")
        assert _child(sup, victim).pid != victim_proc.pid
    finally:
        for h in humans:
            await h.leave()
