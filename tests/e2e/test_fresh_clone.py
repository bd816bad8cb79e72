"""A newcomer's first run: a fresh clone, ``cp .env.example .env`` plus ONE provider variable
(``OPENAI_BASE_URL``, pointed at the local OpenAI-compatible fake), ``make dev``; the URL in its ready block
gives a working page (join, the assistant answers); SIGINT to ``make`` alone stops the whole stack.

The clone reuses this checkout's virtual environment and web packages instead of downloading them again
(``make dev BIN=... STAMP=...``, and ``web/node_modules`` linked), and asks for free ports (``DEV_SERVER_PORT=0``,
``TOKEN_SERVICE_PORT=0``) so it never collides with a stack already running here; everything else is the
clone's own: its Makefile, ``.env``, supervisor, dev server, token service, worker and web build.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require
from tests.e2e.browser import chromium, open_page
from tests.e2e.stack import CHROMIUM
from tests.integration.worker.harness import ROOT, BackgroundLoop
from tests.integration.worker.openai_fake import OpenAIFake


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

playwright_api = pytest.importorskip("playwright.async_api")
READY = re.compile(r"open the web client:\s+(http://\S+)")


@pytest.fixture
def fake() -> Iterator[OpenAIFake]:
    bg = BackgroundLoop()
    server = OpenAIFake(default_reply="Hello from a fresh clone.")
    bg.run(server.start())
    try:
        yield server
    finally:
        bg.run(server.stop())
        bg.close()


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    for tool in ("git", "make", "node"):
        require(shutil.which(tool) is not None, f"{tool} is not installed")
    require(CHROMIUM.exists(), "Debian's chromium is not installed at /usr/bin/chromium")
    modules = ROOT / "web" / "node_modules"
    require((modules / ".bin" / "tsc").exists(), "the web packages are not installed (make -C web build)")
    target = tmp_path / "llmrtc"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(target)], check=True, timeout=120)
    (target / "web" / "node_modules").symlink_to(modules, target_is_directory=True)
    return target


def _wait_for(log: Path, pattern: re.Pattern[str], proc: subprocess.Popen[bytes], within: float) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        match = pattern.search(log.read_text(errors="replace"))
        if match:
            return match.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    raise AssertionError(
        f"{pattern.pattern!r} not in the make dev output:\n{log.read_text(errors='replace')[-5000:]}"
    )


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        body: bytes = resp.read()
    return body.decode()


def _survivors(clone: Path) -> list[str]:
    found = subprocess.run(["pgrep", "-f", str(clone)], capture_output=True, text=True, check=False)
    return found.stdout.split()


def _refused(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
    except OSError:
        return True
    return False


async def test_fresh_clone_make_dev_gives_a_working_page(
    clone: Path, fake: OpenAIFake, tmp_path: Path
) -> None:
    shutil.copy(clone / ".env.example", clone / ".env")
    with (clone / ".env").open("a") as env_file:
        env_file.write(f"\nOPENAI_BASE_URL={fake.base_url}\n")
    stamp = tmp_path / "installed.stamp"
    stamp.touch()  # newer than the clone's pyproject.toml: `make` installs nothing
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LIVEKIT_", "OPENAI_", "TOKEN_", "WEB_", "DEV_", "LLMRTC_"))
        and not k.endswith(("_PROVIDER", "_API_KEY", "_BASE_URL"))
        and k not in ("AGENT_NAME", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")
    }
    env.update(DEV_SERVER_PORT="0", TOKEN_SERVICE_PORT="0")
    log = tmp_path / "make-dev.log"
    proc = await asyncio.to_thread(
        subprocess.Popen,
        ["make", "dev", f"BIN={ROOT / '.venv' / 'bin'}", f"STAMP={stamp}"],
        cwd=clone,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # as in a terminal: a test runner started in the background inherits SIGINT ignored, and make
        # would then ignore the Ctrl-C this test sends it
        preexec_fn=_default_sigint,
    )
    try:
        url = await asyncio.to_thread(_wait_for, log, READY, proc, 240)
        page_html = await asyncio.to_thread(_get, url)
        assert "<title>llmrtc" in page_html and '"detail"' not in page_html, page_html[:300]

        async with chromium(playwright_api) as browser, open_page(browser, "desktop") as page:
            await page.goto(url)
            await page.get_by_label("Room", exact=True).fill("first-run")
            await page.get_by_label("Your name").fill("Newcomer")
            await page.get_by_label("Turn my microphone on when I join").uncheck()
            await page.get_by_role("button", name="Join room").click()
            await page.wait_for_selector("#agent[data-state='listening']", timeout=60_000)
            await page.get_by_label("Type a message to the assistant").fill("Does this work?")
            await page.get_by_role("button", name="Send").click()
            await page.wait_for_function(
                "() => document.getElementById('transcript').textContent.includes('Hello from a fresh clone.')",
                timeout=60_000,
            )
        out = log.read_text(errors="replace")
        assert out.count("llmrtc is ready") == 1
        assert "lk agent dev" not in out
        assert len(out.splitlines()) < 120, f"{len(out.splitlines())} lines of output:\n{out[-4000:]}"
        assert fake.chat_requests, "the assistant never asked the LLM"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)  # make alone, as a task runner or `kill -INT` would
        try:
            rc = await asyncio.to_thread(proc.wait, 90)  # the whole stack stops; slow on a loaded machine
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    out = log.read_text(errors="replace")
    assert "stopped" in out, out[-3000:]
    assert rc != 0 or "stopped" in out
    assert await asyncio.to_thread(_refused, url), (
        "the token service still answers after make was interrupted"
    )
    survivors = await asyncio.to_thread(_survivors, clone)
    assert not survivors, f"processes of the stack survived: {survivors}"
