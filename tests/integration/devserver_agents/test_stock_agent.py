"""An unmodified LiveKit Agents ``AgentSession`` (openai + silero plugins, local OpenAI-compatible fake) on the
development server: a person speaks, and the agent's spoken answer must be heard.

livekit-agents' room audio output waits for ``local_track_subscribed`` (the server's ``track_subscribed``
signal) before it plays anything; without it the agent runs STT, LLM and TTS and publishes silence.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from livekit import rtc

from signalling.devserver.server import DevServer
from tests.integration.worker.harness import API_KEY, API_SECRET, BackgroundLoop, Human
from tests.integration.worker.openai_fake import OpenAIFake

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
SPEECH = ROOT / "tests" / "fixtures" / "generated" / "capital_16k.wav"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevServer, OpenAIFake, Path]]:
    bg = BackgroundLoop()
    dev = DevServer("127.0.0.1", 0, API_KEY, API_SECRET)
    fake = OpenAIFake(default_transcript="What is the capital of France?", default_reply="Paris, of course.")
    bg.run(dev.start())
    bg.run(fake.start())
    log = tmp_path_factory.mktemp("stock-agent") / "agent.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "OPENAI_"))}
    env.update(
        LIVEKIT_URL=dev.url,
        LIVEKIT_API_KEY=API_KEY,
        LIVEKIT_API_SECRET=API_SECRET,
        OPENAI_API_KEY="sk-test-not-a-real-key",
        OPENAI_BASE_URL=fake.base_url,
        PYTHONUNBUFFERED="1",
    )
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.devserver_agents.stock_agent", "dev"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            while "registered worker" not in log.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the stock agent did not register:\n{log.read_text()[-4000:]}")
                time.sleep(0.2)
            yield dev, fake, log
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            bg.run(fake.stop())
            bg.run(dev.stop())
            bg.close()
            print(log.read_text(errors="replace")[-6000:])


async def test_stock_agent_session_answer_is_heard(
    stack: tuple[DevServer, OpenAIFake, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="signalling.devserver")  # its subscriptions, shown on a failure
    dev, fake, _ = stack
    human = await Human(dev.url, "stock-agent-room", "alice", "Alice").join()
    try:
        deadline = time.monotonic() + 60
        agent = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        while not any(p.kind == agent for p in human.room.remote_participants.values()):
            assert time.monotonic() < deadline, "no agent joined the room"
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)  # the agent subscribes to the microphone and starts listening
        started = time.monotonic()
        await human.say(SPEECH)
        loud = await human.wait_loud(started, frames=20, within=60)
        assert fake.transcriptions, "the agent never transcribed the speech"
        assert fake.chat_requests and fake.speech_requests, "no LLM or TTS request"
        assert fake.speech_requests[0]["input"].startswith("Paris")
        assert loud[0].at > started
    finally:
        await human.leave()
