"""Fixtures: one dev server, one fake OpenAI server and one worker (``python -m worker dev``) per module."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from signalling.devserver.server import DevServer
from tests.integration.worker.harness import (
    API_KEY,
    API_SECRET,
    BackgroundLoop,
    WorkerProcess,
    provider_env,
    running_servers,
)
from tests.integration.worker.openai_fake import OpenAIFake

_rooms = itertools.count(1)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[DevServer, OpenAIFake, BackgroundLoop]]:
    with running_servers(OpenAIFake()) as servers:
        yield servers


@pytest.fixture(scope="module")
def worker(
    servers: tuple[DevServer, OpenAIFake, BackgroundLoop], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    dev, fake, _ = servers
    env = {
        "LIVEKIT_URL": dev.url,
        "LIVEKIT_API_KEY": API_KEY,
        "LIVEKIT_API_SECRET": API_SECRET,
        "AGENT_NAME": "",  # set but empty: automatic dispatch (the tests' tokens name no agent)
        "VAD_MIN_SILENCE_MS": "500",
        "FALSE_INTERRUPTION_TIMEOUT": "1.0",
        "WORKER_EXECUTOR": "thread",
        **provider_env(fake),
    }
    log: Path = tmp_path_factory.mktemp("worker") / "worker.log"
    proc = WorkerProcess(env, log).start()
    try:
        proc.wait_registered()
        yield proc
    finally:
        proc.stop()
        print(proc.output()[-6000:])


@pytest.fixture
def room_name() -> str:
    return f"worker-test-{next(_rooms)}"
