"""Fixtures for the dev server's agent dispatch, Twirp API and CLI tests.

The server runs as ``python -m signalling.devserver --dev --port 0`` (the CLI under test) and the workers as
real livekit-agents processes (``agent_app.py`` in ``dev`` mode); rooms are joined with the ``livekit`` SDK.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
from livekit import api, rtc

ROOT = Path(__file__).resolve().parents[3]
STARTUP_TIMEOUT = 40.0

T = TypeVar("T")


@dataclass
class ServerProc:
    """A dev server started from its CLI."""

    proc: subprocess.Popen[bytes]
    url: str
    api_key: str
    api_secret: str
    log: Path

    @property
    def http_url(self) -> str:
        return self.url.replace("ws://", "http://", 1)

    def api(self) -> api.LiveKitAPI:
        return api.LiveKitAPI(self.http_url, self.api_key, self.api_secret)

    def token(self, room: str, identity: str, config: api.RoomConfiguration | None = None) -> str:
        tok = (
            api.AccessToken(self.api_key, self.api_secret)
            .with_identity(identity)
            .with_grants(api.VideoGrants(room_join=True, room=room))
        )
        if config is not None:
            tok = tok.with_room_config(config)
        return tok.to_jwt()


@dataclass
class WorkerProc:
    """A livekit-agents worker process."""

    tag: str
    proc: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(repr=False, default_factory=dict)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(tmp: Path) -> ServerProc:
    """Start the CLI on a free port and read its LIVEKIT_* lines."""
    out, err = tmp / "server.out", tmp / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "signalling.devserver", "--dev", "--port", "0"],
        cwd=ROOT,
        stdout=out.open("wb"),
        stderr=err.open("wb"),
    )
    deadline = time.monotonic() + STARTUP_TIMEOUT
    values: dict[str, str] = {}
    while time.monotonic() < deadline and len(values) < 3:
        if proc.poll() is not None:
            raise RuntimeError(f"dev server exited: {err.read_text(errors='replace')}")
        for line in out.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key.startswith("LIVEKIT_"):
                values[key] = value
        time.sleep(0.05)
    if len(values) < 3:
        proc.kill()
        raise RuntimeError("dev server printed no LIVEKIT_* lines")
    return ServerProc(
        proc, values["LIVEKIT_URL"], values["LIVEKIT_API_KEY"], values["LIVEKIT_API_SECRET"], err
    )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int | None:
    """SIGTERM, then SIGKILL if it lingers; returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def stop_processes(procs: list[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    """Stop several processes at once (SIGTERM to all, then wait; SIGKILL what lingers)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def launch_worker(
    server: ServerProc,
    tmp: Path,
    tag: str,
    *,
    agent_name: str = "",
    job_load: float = 0.1,
    threshold: float = float("inf"),
) -> WorkerProc:
    """Start an agent_app worker (not waiting for it to register)."""
    env = dict(
        os.environ,
        LIVEKIT_URL=server.url,
        LIVEKIT_API_KEY=server.api_key,
        LIVEKIT_API_SECRET=server.api_secret,
        TEST_WORKER_TAG=tag,
        TEST_AGENT_NAME=agent_name,
        TEST_JOB_LOAD=str(job_load),
        TEST_LOAD_THRESHOLD=str(threshold),
        LIVEKIT_LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    log = tmp / f"worker-{tag}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.devserver_agents.agent_app", "dev"],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return WorkerProc(tag, proc, log, env)


def wait_registered(workers: list[WorkerProc], timeout: float = STARTUP_TIMEOUT) -> None:
    """Block until every worker logged its registration."""
    deadline = time.monotonic() + timeout
    pending = list(workers)
    while pending and time.monotonic() < deadline:
        for w in list(pending):
            if w.proc.poll() is not None:
                raise RuntimeError(f"worker {w.tag} exited:\n{w.output()[-3000:]}")
            if "registered worker" in w.output():
                pending.remove(w)
        time.sleep(0.1)
    if pending:
        raise RuntimeError(f"workers did not register: {[w.tag for w in pending]}")


@pytest.fixture(scope="module")
def devserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """One dev server (from the CLI) per test module."""
    server = start_server(tmp_path_factory.mktemp("devserver"))
    yield server
    stop_process(server.proc)


async def wait_for(probe: Callable[[], T | None], within: float, what: str) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)


def agents_in(room: rtc.Room) -> list[rtc.RemoteParticipant]:
    """The agent participants of ``room`` that have announced their worker."""
    return [
        p
        for p in room.remote_participants.values()
        if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT and p.attributes.get("worker")
    ]


async def join(
    server: ServerProc, room: str, identity: str, config: api.RoomConfiguration | None = None
) -> rtc.Room:
    """Join ``room`` as ``identity`` with the livekit SDK."""
    client = rtc.Room()
    await client.connect(server.url, server.token(room, identity, config))
    return client
