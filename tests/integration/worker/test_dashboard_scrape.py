"""The Grafana dashboard names only metrics the worker really exports (checked against a real scrape).

One worker (``METRICS_PORT``) in a real room serves a spoken turn, a typed turn, a turn stopped mid-answer
(an interruption), a turn whose LLM fails (an error), and typed turns beyond ``MAX_QUEUED_TURNS`` (shed):
then every series the dashboard's panels query must be in its ``/metrics``, and the VAD must have judged
Alice's speech with Silero and skipped her silence.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator

import pytest

from signalling.devserver.server import DevServer
from tests.integration.faults.fault_fake import FaultyOpenAI
from tests.integration.worker.harness import (
    API_KEY,
    API_SECRET,
    ROOT,
    BackgroundLoop,
    Human,
    WorkerProcess,
    provider_env,
    running_servers,
)
from tests.unit.deploy.dashboard import dashboard_metric_names, scrape_sample_names

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(150)]

QUESTION = ROOT / "tests" / "fixtures" / "generated" / "capital_16k.wav"
LONG = "This answer goes on for a while so that someone can stop it. " * 3


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[DevServer, FaultyOpenAI, BackgroundLoop]]:
    with running_servers(
        FaultyOpenAI(default_transcript="What is the capital of France?", default_reply="Paris.")
    ) as servers:
        yield servers


def _text(msg: str) -> str:
    return json.dumps({"v": 1, "type": "text", "text": msg})


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
    return text


def _port(proc: WorkerProcess) -> int:
    marker = "metrics and health on port "
    return int(proc.output().split(marker, 1)[1].split()[0])


async def test_every_dashboard_series_is_exported(
    servers: tuple[DevServer, FaultyOpenAI, BackgroundLoop], tmp_path_factory: pytest.TempPathFactory
) -> None:
    dev, fake, _ = servers
    env = {
        "LIVEKIT_URL": dev.url,
        "LIVEKIT_API_KEY": API_KEY,
        "LIVEKIT_API_SECRET": API_SECRET,
        "AGENT_NAME": "",
        "METRICS_PORT": "0",
        "MAX_QUEUED_TURNS": "1",
        "VISION": "off",
        **provider_env(fake),
    }
    worker = WorkerProcess(env, tmp_path_factory.mktemp("scrape") / "worker.log").start()
    alice: Human | None = None
    try:
        worker.wait_registered()
        alice = await Human(dev.url, "scrape-room", "alice", "Alice").join()
        await alice.wait_agent_state("listening", within=30)

        mark = len(alice.events)
        await alice.say(QUESTION)  # STT, VAD lag, first audio, usage
        _, end = await alice.wait_for(lambda e: e["type"] == "turn_end", 30, mark)
        assert end["outcome"] == "completed"

        fake.replies.extend([LONG])  # a long answer, stopped: an interruption; typed turns behind it: shed
        mark = len(alice.events)
        await alice.send(_text("Tell me a long story."))
        await alice.wait_for(lambda e: e["type"] == "tts_start", 20, mark)
        for i in range(3):
            await alice.send(_text(f"And another thing {i}."))
        await alice.wait_for(lambda e: e["type"] == "error" and e["code"] == "turn_dropped", 10, mark)
        await alice.send(json.dumps({"v": 1, "type": "stop_speaking"}))
        await alice.wait_for(lambda e: e["type"] == "tts_cancelled", 10, mark)

        fake.inject("llm", "500")  # an error by code
        mark = len(alice.events)
        await alice.send(_text("This one fails."))
        await alice.wait_for(lambda e: e["type"] == "turn_end" and e["outcome"] == "error", 20, mark)
        fake.clear()

        await asyncio.sleep(1.0)  # the load gauge is sampled periodically
        text = await asyncio.to_thread(_scrape, _port(worker))
        scraped = scrape_sample_names(text)
        wanted = dashboard_metric_names()
        missing = sorted(wanted - scraped)
        assert not missing, f"the dashboard queries series the worker does not export: {missing}"
        # Alice's speech went to Silero; her silence around it (VAD_SILENCE_FLOOR_DBFS) did not
        windows = {
            line.split('result="', 1)[1].split('"', 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("llmrtc_vad_windows_total{")
        }
        assert windows.get("evaluated", 0) > 0 and windows.get("skipped", 0) > 0, windows
    finally:
        if alice is not None:
            await alice.leave()
        worker.stop()
