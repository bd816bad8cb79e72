"""``examples/own_services/agent.py dev`` in a real room, under both job executors.

The agent's own STT, LLM and TTS classes call the example's services (``services.py``, run here on an
ephemeral port); the TTS request body is ``{"text", "voice", "speed"}``, not OpenAI's. A participant on the
official SDK asks a spoken question and hears the answer's audio.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import os
import subprocess
import sys
import wave
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from aiohttp import web

from signalling.devserver.server import DevServer
from tests.fixtures import fixture_path
from tests.integration.worker.harness import API_KEY, API_SECRET, ROOT, BackgroundLoop, Human, WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

EXAMPLE = ROOT / "examples" / "own_services"
QUESTION = "What is the capital of France?"
ANSWER = "The capital of France is Paris."
_rooms = itertools.count(1)


def _services_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("own_services_services", EXAMPLE / "services.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


class Stack:
    def __init__(self) -> None:
        self.bg = BackgroundLoop()
        self.dev = DevServer("127.0.0.1", 0, API_KEY, API_SECRET)
        self.services = _services_module().Services(transcript=QUESTION)
        self.bg.run(self.dev.start())
        self.runner = web.AppRunner(self.services.app(), access_log=None)
        self.bg.run(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.bg.run(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def close(self) -> None:
        self.bg.run(self.runner.cleanup())
        self.bg.run(self.dev.stop())
        self.bg.close()


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack()
    try:
        yield s
    finally:
        s.close()


@pytest.mark.parametrize("executor", ["thread", "process"])
async def test_own_services_agent_answers_in_a_room(stack: Stack, executor: str, tmp_path: Path) -> None:
    env = {
        "LIVEKIT_URL": stack.dev.url,
        "LIVEKIT_API_KEY": API_KEY,
        "LIVEKIT_API_SECRET": API_SECRET,
        "AGENT_NAME": "",
        "WORKER_EXECUTOR": executor,
        "VAD_MIN_SILENCE_MS": "500",
        "SERVICES_URL": f"http://127.0.0.1:{stack.port}/api/v1",
    }
    worker = WorkerProcess(env, tmp_path / "worker.log", script=EXAMPLE / "agent.py").start()
    room = f"own-services-{executor}-{next(_rooms)}"
    tts_before = len(stack.services.requests["tts"])
    try:
        await asyncio.to_thread(worker.wait_registered, 90.0)
        alice = await Human(stack.dev.url, room, f"alice-{executor}", "Alice").join()
        try:
            await alice.wait_agent_state("listening", within=60)
            await alice.say(fixture_path("capital_16k"))
            _, transcript = await alice.wait_for(lambda e: e["type"] == "transcript", within=60)
            assert (
                transcript["text"] == QUESTION and transcript["participant_identity"] == f"alice-{executor}"
            )
            _, llm = await alice.wait_for(lambda e: e["type"] == "llm", within=60)
            assert llm["text"] == ANSWER
            start_at, _ = await alice.wait_for(lambda e: e["type"] == "tts_start", within=60)
            await alice.wait_for(lambda e: e["type"] == "tts_complete", within=60)
            # 31 characters at 55 ms each: about 1.7 s of the services' voice, heard at the listener
            loud = await alice.wait_loud(start_at - 0.5, frames=60, within=10)
            assert loud[-1].at - loud[0].at > 1.0
        finally:
            await alice.leave()
        bodies = stack.services.requests["tts"][tts_before:]
        assert bodies and all(set(b) == {"text", "voice", "speed"} for b in bodies), bodies
        assert " ".join(b["text"] for b in bodies) == ANSWER
        assert stack.services.requests["stt"] and stack.services.requests["llm"]
        system = stack.services.requests["llm"][-1]["messages"][0]
        assert system["role"] == "system" and system["content"].startswith(
            "You are a helpful voice assistant."
        )
    finally:
        worker.stop()
        print(worker.output()[-4000:])


def test_own_services_agent_in_the_console(stack: Stack, tmp_path: Path) -> None:
    """``python examples/own_services/agent.py console``: typed text and a WAV, through the same classes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "OPENAI_"))}
    env.update(
        SERVICES_URL=f"http://127.0.0.1:{stack.port}/api/v1",
        LLMRTC_ENV_FILE=str(tmp_path / "no.env"),
        PYTHONPATH=str(ROOT),
    )
    wav_out = tmp_path / "agent.wav"
    args = ["--say", "What can you do?", "--wav", str(fixture_path("capital_16k")), "--out", str(wav_out)]
    out = subprocess.run(
        [sys.executable, str(EXAMPLE / "agent.py"), "console", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "[agent] I answer questions through your own speech, language and voice services." in out.stdout
    assert f"[You] {QUESTION}" in out.stdout and f"[agent] {ANSWER}" in out.stdout
    assert out.stdout.count("[turn completed]") == 2
    with wave.open(str(wav_out)) as wav:
        seconds = wav.getnframes() / wav.getframerate()
    spoken = len("I answer questions through your own speech, language and voice services.") + len(ANSWER)
    assert seconds == pytest.approx(spoken * 0.055, abs=0.3)
