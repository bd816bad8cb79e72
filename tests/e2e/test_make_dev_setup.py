"""``make dev`` set-up (scripts/dev.py): what it shows of the logs, what it says when providers are missing, and
the host option that lets a phone on the same network in (the LAN URL is what the tokens hand out)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.dev import DEV_MODE_NOTE, LogFilter, check_providers, lan_address, load_env_file
from tests.integration.worker.harness import API_KEY, API_SECRET, ROOT, BackgroundLoop, provider_env
from tests.integration.worker.openai_fake import OpenAIFake

ESC = "\x1b"


def test_log_filter_keeps_ours_warnings_and_milestones_and_drops_chatter() -> None:
    keep = LogFilter()
    lines = {
        "2026-12-02 16:44:19,225 INFO signalling.devserver.server: devserver listening on ws://x": True,
        "2026-12-02 16:44:19,225 INFO aioice.ice: Connection(0) Check CandidatePair(...) State.FROZEN": False,
        "2026-12-02 16:44:19,225 DEBUG asyncio: Using selector: EpollSelector": False,
        f"2026-12-02 16:44:23,708 - {ESC}[36mDEBUG{ESC}[0m asyncio - Using selector: EpollSelector": False,
        f"2026-12-02 16:44:23,710 - {ESC}[32mINFO{ESC}[0m livekit.agents - preloading plugins {{}}": False,
        f"2026-12-02 16:44:23,781 - {ESC}[32mINFO{ESC}[0m livekit.agents - registered worker {{}}": True,
        "2026-12-02 16:44:23,781 - INFO llmrtc.worker.session - turn started (text)": True,
        "2026-12-02 16:44:23,781 - WARNING livekit - dropping pass-through signal": True,
        "2026-12-02 16:44:23,781 ERROR livekit.rtc: publisher data channel closed": True,
        "INFO:     Started server process [22659]": False,
        "INFO:     Uvicorn running on http://127.0.0.1:49497 (Press CTRL+C to quit)": True,
        "Traceback (most recent call last):": True,
        '  File "x.py", line 1, in <module>': True,
        "LIVEKIT_URL=ws://127.0.0.1:7880": True,
        "": False,
    }
    for line, shown in lines.items():
        assert (keep(line + "\n") is not None) == shown, line
    assert keep(f"{ESC}[33mWARNING{ESC}[0m x: careful") == "WARNING x: careful"  # colours stripped
    # livekit-agents' advice to use `lk agent dev` becomes one line that applies here.
    advice = (
        "2026-12-02 - WARNING livekit.agents - dev mode is deprecated; use `lk agent dev` instead (https://x)"
    )
    assert keep(advice) == DEV_MODE_NOTE
    assert keep("in-process auto-reload has been removed from the Python CLI; use `lk agent dev`") is None
    verbose = LogFilter(verbose=True)
    assert verbose("2026-12-02 16:44:19,225 INFO aioice.ice: chatter") is not None


def test_missing_providers_are_named_for_stt_llm_and_tts(tmp_path: Path) -> None:
    problems = check_providers({"HOME": str(tmp_path)})
    assert [p.split(":")[0] for p in problems] == [
        "STT (speech to text)",
        "LLM (the language model)",
        "TTS (text to speech)",
    ]
    assert all(len(p) > 30 for p in problems), problems
    # OPENAI_BASE_URL alone is enough for all three (an OpenAI-compatible server), and blank values are unset.
    assert (
        check_providers({"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "LLM_PROVIDER": "", "STT_PROVIDER": ""})
        == []
    )
    env_file = tmp_path / ".env"
    env_file.write_text("LLM_PROVIDER=\nOPENAI_BASE_URL=http://x/v1\nAGENT_NAME=\n")
    assert load_env_file(env_file) == {"OPENAI_BASE_URL": "http://x/v1"}


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


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_host_option_serves_the_network_and_hands_out_the_lan_url(fake: OpenAIFake, tmp_path: Path) -> None:
    lan = lan_address()
    if lan.startswith("127."):
        pytest.skip("this machine has no network address besides loopback")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "OPENAI_", "DEV_"))}
    env.update(provider_env(fake), DEV_SERVER_PORT="0", TOKEN_SERVICE_PORT="0", DEV_HOST="0.0.0.0")
    env.update(LIVEKIT_API_KEY=API_KEY, LIVEKIT_API_SECRET=API_SECRET)
    log = tmp_path / "dev.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripts.dev", "--no-color", "--env-file", str(tmp_path / "no.env")],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        match = None
        while time.monotonic() < deadline and proc.poll() is None:
            match = re.search(r"on your network:\s+(http://\S+)", log.read_text(errors="replace"))
            if match:
                break
            time.sleep(0.3)
        assert match, log.read_text(errors="replace")[-4000:]
        network_url = match.group(1)
        assert network_url.startswith(f"http://{lan}:")
        # The page and the token service answer on the LAN address, and the token points clients there too.
        with urllib.request.urlopen(network_url, timeout=10) as resp:
            assert "<title>llmrtc" in resp.read().decode()
        request = urllib.request.Request(
            network_url + "api/token",
            data=json.dumps({"room": "phone-test", "name": "Phone"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            grant = json.loads(resp.read())
        assert grant["url"].startswith(f"ws://{lan}:"), grant["url"]
        out = log.read_text(errors="replace")
        assert f"LIVEKIT_URL=ws://{lan}:" in out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        proc.wait(30)
