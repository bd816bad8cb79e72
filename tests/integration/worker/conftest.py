"""Fixtures: one dev server, one fake OpenAI server and one worker (``python -m worker dev``) per module."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from signalling.devserver.server import DevServer
from tests.integration.worker.harness import (
    BackgroundLoop,
    WorkerProcess,
    running_servers,
    running_worker,
    worker_env,
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
    env = worker_env(dev, fake, VAD_MIN_SILENCE_MS="500", FALSE_INTERRUPTION_TIMEOUT="1.0")
    with running_worker(env, tmp_path_factory.mktemp("worker") / "worker.log") as proc:
        yield proc


@pytest.fixture
def room_name() -> str:
    return f"worker-test-{next(_rooms)}"
