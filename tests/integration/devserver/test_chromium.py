"""Compatibility: the JS ``livekit-client`` in headless Chromium against the development server.

The page (js/main.js, bundled with esbuild) publishes Chromium's fake microphone (a 660 Hz WAV) and measures
the pitch of the audio it receives; a Python SDK participant publishes a 440 Hz sine and exchanges data.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from livekit import rtc

from signalling.devserver.server import DevServer
from tests.conftest import require

from .conftest import make_token, wait_for
from .helpers import SAMPLE_RATE, AudioRecorder, dominant_frequency, publish_sine

pytestmark = [pytest.mark.integration, pytest.mark.browser]

JS_DIR = Path(__file__).parent / "js"
CHROMIUM = "/usr/bin/chromium"
MIC_HZ = 660.0
PY_HZ = 440.0


def _npm_install() -> None:
    if (JS_DIR / "node_modules" / "livekit-client").is_dir() and (
        JS_DIR / "node_modules" / ".bin" / "esbuild"
    ).exists():
        return
    npm = shutil.which("npm")
    require(npm is not None, "npm is not installed")
    assert npm is not None
    command = [npm, "ci" if (JS_DIR / "package-lock.json").exists() else "install", "--no-audit", "--no-fund"]
    subprocess.run(command, cwd=JS_DIR, check=True, timeout=300, capture_output=True)


@pytest.fixture(scope="module")
def page_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """index.html + the esbuild bundle of js/main.js."""
    require(os.path.exists(CHROMIUM), "Debian chromium is not installed")
    _npm_install()
    out = tmp_path_factory.mktemp("page")
    esbuild = JS_DIR / "node_modules" / ".bin" / "esbuild"
    subprocess.run(
        [
            str(esbuild),
            "main.js",
            "--bundle",
            "--format=iife",
            "--target=es2020",
            f"--outfile={out / 'bundle.js'}",
        ],
        cwd=JS_DIR,
        check=True,
        timeout=120,
        capture_output=True,
    )
    shutil.copy(JS_DIR / "index.html", out / "index.html")
    return out


@pytest.fixture
def mic_wav(tmp_path: Path) -> Path:
    """Two seconds of a 660 Hz tone (Chromium loops it as the fake microphone)."""
    path = tmp_path / "mic.wav"
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    pcm = (np.sin(2 * np.pi * MIC_HZ * t) * 12000).astype(np.int16)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(pcm.tobytes())
    return path


@pytest.fixture
async def page_server(page_dir: Path) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_static("/", page_dir)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/index.html"
    finally:
        await runner.cleanup()


async def _state(page: Any) -> dict[str, Any]:
    state: dict[str, Any] = await page.evaluate("() => JSON.parse(JSON.stringify(window.lkState))")
    return state


@pytest.mark.slow
@pytest.mark.parametrize("single_pc", [True, False], ids=["v1", "v0"])
async def test_browser_publishes_mic_and_receives_python_audio_and_data(
    server: DevServer, page_server: str, mic_wav: Path, single_pc: bool
) -> None:
    from playwright.async_api import async_playwright

    py = rtc.Room()
    inbox: asyncio.Queue[rtc.DataPacket] = asyncio.Queue()
    tracks: asyncio.Queue[tuple[rtc.Track, str]] = asyncio.Queue()
    py.on("data_received", inbox.put_nowait)
    py.on("track_subscribed", lambda track, pub, p: tracks.put_nowait((track, p.identity)))
    await py.connect(server.url, make_token("py"), rtc.RoomOptions())
    args = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={mic_wav}",
        "--autoplay-policy=no-user-gesture-required",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
    ]
    async with async_playwright() as pw, publish_sine(py, PY_HZ):
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            page = await browser.new_page()
            await page.goto(page_server)
            await page.evaluate(
                "([url, token, single]) => { window.lkStart(url, token, single); }",
                [server.url, make_token("browser"), single_pc],
            )
            await _wait_state(page, lambda s: s["published"] or s["error"], "browser connected and published")
            state = await _state(page)
            assert state["error"] is None, state["error"]
            assert "py" in state["participants"]
            (session,) = [s for s in server.signal_context.sessions if s.participant.identity == "browser"]
            assert session.single_pc is single_pc  # the path asked for, not a fallback

            # the browser's fake microphone arrives at the Python participant, pitch intact (Opus forwarded)
            track, sender = await asyncio.wait_for(tracks.get(), 30)
            assert sender == "browser"
            recorder = AudioRecorder(track)
            await wait_for(
                lambda: len(recorder.samples()) >= 3 * SAMPLE_RATE, within=30, what="browser audio"
            )
            tail = recorder.samples()[-SAMPLE_RATE:]
            await recorder.aclose()
            assert np.sqrt(np.mean(tail.astype(np.float64) ** 2)) > 500
            assert abs(dominant_frequency(tail) - MIC_HZ) <= 5.0

            # the Python participant's sine plays in the browser
            await _wait_state(
                page,
                lambda s: s["audioPeakHz"] is not None and abs(s["audioPeakHz"] - PY_HZ) <= 15,
                "440 Hz in the browser",
            )

            # data both ways, with the sender stamped by the server
            await py.local_participant.publish_data(b"hello-browser", topic="greeting")
            await _wait_state(
                page, lambda s: any(d["text"] == "hello-browser" for d in s["data"]), "data in the browser"
            )
            got = next(d for d in (await _state(page))["data"] if d["text"] == "hello-browser")
            assert (got["from"], got["topic"]) == ("py", "greeting")
            await page.evaluate("() => window.lkSend('hello-python', 'reply')")
            packet = await asyncio.wait_for(inbox.get(), 15)
            assert (packet.data, packet.participant.identity, packet.topic) == (
                b"hello-python",
                "browser",
                "reply",
            )
            await page.evaluate("() => window.lkStop()")
        finally:
            await browser.close()
            await py.disconnect()


async def _wait_state(page: Any, predicate: Any, what: str, within: float = 40.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        state = await _state(page)
        if predicate(state):
            return
        if state.get("error"):
            raise AssertionError(f"browser error while waiting for {what}: {state['error']}")
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {state}")
        await asyncio.sleep(0.2)
