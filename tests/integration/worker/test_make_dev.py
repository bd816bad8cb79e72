"""``make dev`` (scripts/dev.py): the whole local stack from one command, and a Python participant talking to it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.fixtures import fixture_path
from tests.integration.worker.harness import API_KEY, API_SECRET, ROOT, BackgroundLoop, Human, provider_env
from tests.integration.worker.openai_fake import OpenAIFake

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(150)]


@pytest.fixture
def fake() -> Iterator[OpenAIFake]:
    bg = BackgroundLoop()
    server = OpenAIFake()
    bg.run(server.start())
    try:
        yield server
    finally:
        bg.run(server.stop())
        bg.close()


def _start_dev(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "OPENAI_"))}
    full.update(env)
    return subprocess.Popen(
        [sys.executable, "-m", "scripts.dev", "--no-color", "--env-file", str(log.parent / "no.env")],
        cwd=ROOT,
        env=full,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_for(log: Path, pattern: str, proc: subprocess.Popen[bytes], within: float) -> re.Match[str]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        match = re.search(pattern, log.read_text(errors="replace"))
        if match:
            return match
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(
        f"{pattern!r} not seen in the make dev output:\n{log.read_text(errors='replace')[-4000:]}"
    )


async def test_make_dev_stack_answers_a_participant(fake: OpenAIFake, tmp_path: Path) -> None:
    log = tmp_path / "dev.log"
    env = {
        **provider_env(fake),
        "DEV_SERVER_PORT": "0",
        "TOKEN_SERVICE_PORT": "0",
        "LIVEKIT_API_KEY": API_KEY,
        "LIVEKIT_API_SECRET": API_SECRET,
    }
    proc = _start_dev(env, log)
    try:
        _wait_for(log, r"LIVEKIT_URL=(ws://\S+)", proc, 30)
        tokens = _wait_for(log, r"TOKEN_SERVICE_URL=(http://\S+)", proc, 30).group(1)
        _wait_for(log, r"\[worker\]\s.*registered worker", proc, 60)
        _wait_for(log, r"\[tokens\]\s.*Uvicorn running", proc, 60)
        # a participant joins the way the web client does: a token from the token service
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{tokens}/api/token", json={"room": "make-dev-room", "identity": "carol", "name": "Carol"}
            ) as resp,
        ):
            assert resp.status == 200, await resp.text()
            grant = await resp.json()
        fake.transcripts.append("Hello, can you hear me?")
        fake.replies.append("Yes, I can hear you.")
        human = await Human(grant["url"], "make-dev-room", "carol", "Carol", jwt=grant["token"]).join()
        try:
            await human.wait_agent_state("listening", within=30)
            await human.say(fixture_path("hello_16k"))
            await human.wait_for(lambda e: e["type"] == "tts_complete", within=40)
            start_at = next(at for at, ev in human.events if ev["type"] == "tts_start")
            await human.wait_loud(start_at - 0.5, frames=20)
            assert human.of_type("llm")[0]["text"] == "Yes, I can hear you."
        finally:
            await human.leave()
        out = log.read_text(errors="replace")
        assert "[devserver]" in out and "[worker]" in out and "[tokens]" in out
    except BaseException:
        print(log.read_text(errors="replace")[-12000:])  # the stack's own account, shown with the failure
        raise
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        rc = proc.wait(30)
    out = log.read_text(errors="replace")
    assert "stopped" in out, out[-3000:]
    assert rc == 0


def test_make_dev_without_providers_says_what_to_set(tmp_path: Path) -> None:
    log = tmp_path / "dev.log"
    env = {"LLM_PROVIDER": "", "DEV_SERVER_PORT": "0", "HOME": str(tmp_path)}
    blank = {k: "" for k in os.environ if k.endswith("_API_KEY") or k.endswith("_BASE_URL")}
    proc = _start_dev({**blank, **env}, log)
    rc = proc.wait(60)
    out = log.read_text(errors="replace")
    assert rc == 2, out
    assert "no usable AI providers are configured" in out
    assert ".env.example" in out
    assert "[devserver]" not in out, "nothing starts without providers"
