"""The web client in headless Chromium against the real stack: dev server, token service, worker.

Chromium's fake microphone plays one WAV: "Hello there.", a pause while the agent answers at length, then
"What is the capital of France?" over the answer. The page must show the transcript, the answer streaming in,
the agent's audio playing, and the first answer cancelled by the second utterance. A screenshot of the page
mid-conversation goes to docs/screenshots/.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.e2e.stack import CHROMIUM, Stack, conversation_wav, ensure_web_build
from tests.fixtures import fixture_path
from tests.integration.worker.harness import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

playwright_api = pytest.importorskip("playwright.async_api")
SCREENSHOT = ROOT / "docs" / "screenshots" / "web-conversation.png"

FIRST_REPLY = (
    "Hello! It is good to hear you. I am the assistant in this room, and I can answer questions, "
    "look things up with tools, and follow a playbook. Ask me anything you like, and take your time, "
    "because I will keep talking for a little while so that you can try interrupting me."
)
SECOND_REPLY = "The capital of France is Paris."

# Collects the client's events in the page with timestamps (registered right after joining).
RECORD_EVENTS = """() => {
  window.__events = [];
  const names = ['transcript', 'llmChunk', 'llm', 'ttsStart', 'ttsComplete', 'ttsCancelled', 'bargeIn',
                 'speechStart', 'speechEnd', 'stateChange', 'reconnecting', 'agentState', 'ttsTrack', 'error'];
  for (const name of names) {
    window.llmrtc.on(name, (...args) => {
      const data = args.map((a) => (a instanceof MediaStream ? 'MediaStream'
        : a instanceof Error ? {code: a.code, message: a.message}
        : (a && typeof a === 'object' && 'kind' in a && 'sid' in a) ? 'track' : a));
      window.__events.push({name, at: performance.now(), data});
    });
  }
  const banner = document.getElementById('reconnecting-banner');
  new MutationObserver(() => window.__events.push({name: 'banner', at: performance.now(),
    data: [banner.hidden, banner.textContent.trim()]})).observe(banner, {attributes: true, subtree: true,
    childList: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def static_dir() -> Path:
    require(CHROMIUM.exists(), "Debian's chromium is not installed at /usr/bin/chromium")
    built = ensure_web_build()
    require(not isinstance(built, str), str(built))
    assert not isinstance(built, str)
    return built


@pytest.fixture(scope="module")
def stack(static_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("e2e")
    running = Stack.start(workdir, static_dir)
    try:
        yield running
    finally:
        running.stop()
        print(running.worker.output()[-6000:])


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("speech") / "conversation.wav"
    return conversation_wav(
        out,
        [
            (None, 1.0),
            (fixture_path("hello_48k"), 0.0),  # "Hello there." at about 2.0-2.7 s
            (None, 5.5),
            (fixture_path("capital_48k"), 0.0),  # "What is the capital of France?" at about 10.6-12.3 s
            (None, 2.0),
        ],
    )


@pytest.fixture
async def page(speech_wav: Path, stack: Stack) -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={speech_wav}%noloop",
                "--autoplay-policy=no-user-gesture-required",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
            ],
        )
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        tab = await context.new_page()
        logs: list[str] = []
        tab.on("console", lambda msg: logs.append(f"{msg.type}: {msg.text}"))
        tab.on("pageerror", lambda err: logs.append(f"pageerror: {err}"))
        try:
            yield tab
        finally:
            if logs:
                print("browser console:\n" + "\n".join(logs[-80:]))
            await context.close()
            await browser.close()


async def events(page: Any, name: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await page.evaluate(
        "(name) => (window.__events || []).filter((e) => e.name === name)", name
    )
    return found


async def test_join_speak_stream_play_and_barge_in(page: Any, stack: Stack) -> None:
    stack.fake.transcripts.extend(["Hello there.", "What is the capital of France?"])
    stack.fake.replies.extend([FIRST_REPLY, SECOND_REPLY])

    await page.goto(stack.tokens.url + "/?room=e2e-browser")
    await page.get_by_label("Your name").fill("Ada")
    assert await page.get_by_label("Room").input_value() == "e2e-browser"
    await page.get_by_label("Turn my microphone on when I join").uncheck()  # the WAV starts with the mic
    await page.get_by_role("button", name="Join room").click()

    await page.wait_for_selector("#connection[data-state='connected']", timeout=20_000)
    await page.evaluate(RECORD_EVENTS)
    # The agent comes with the room (named dispatch in the token) and gets ready.
    await page.wait_for_selector(".participant[data-agent='true']", timeout=30_000)
    await page.wait_for_selector("#agent[data-state='listening']", timeout=30_000)
    assert "Ada (you)" in await page.inner_text("#participants")

    await page.click("#mic-button")  # publish the microphone: Chromium starts playing the WAV now
    await page.wait_for_selector("#mic-button[aria-pressed='true']", timeout=10_000)
    mic_on = time.monotonic()

    # 1. What Ada said appears in the transcript under her name.
    first_user = page.locator(".entry[data-role='user']").first
    await first_user.wait_for(timeout=30_000)
    await page.wait_for_function(
        "() => document.querySelector(\".entry[data-role='user']\")?.textContent.includes('Hello there.')",
        timeout=30_000,
    )
    assert "Ada (you)" in await first_user.inner_text()

    # 2. The answer streams in (several llm_chunk events, text growing before the final llm event).
    answer = page.locator(".entry[data-role='assistant']").first
    await answer.wait_for(timeout=30_000)
    await page.wait_for_function(
        "(t) => document.querySelector(\".entry[data-role='assistant']\")?.textContent.includes(t)",
        arg=FIRST_REPLY[-40:],
        timeout=30_000,
    )
    await page.wait_for_function("() => window.__events.some((e) => e.name === 'llm')", timeout=15_000)
    chunks = await events(page, "llmChunk")
    finals = await events(page, "llm")
    assert len(chunks) >= 5, f"the answer did not stream: {len(chunks)} chunks"
    assert finals and chunks[0]["at"] < finals[0]["at"]
    assert "".join(
        c["data"][0] for c in chunks if c["data"][1]["turn_id"] == finals[0]["data"][1]["turn_id"]
    ) == (FIRST_REPLY)

    # 3. The agent's audio track plays: an <audio> element for the agent, playing, and its level meter moved.
    await page.wait_for_selector("#agent[data-state='speaking']", timeout=20_000)
    assert await events(page, "ttsTrack"), "no agent audio track was subscribed"
    await page.wait_for_function(
        "() => parseFloat(document.getElementById('agent-level').dataset.peak) > 0.01", timeout=15_000
    )
    playing = await page.evaluate(
        """() => [...document.querySelectorAll("#audio-sink audio[data-agent='true']")]
             .map((a) => ({paused: a.paused, time: a.currentTime, muted: a.muted}))"""
    )
    assert playing and any(not a["paused"] and a["time"] > 0 and not a["muted"] for a in playing), playing
    assert await events(page, "ttsStart")

    # 4. "What is the capital of France?" over the answer cancels it; the page shows the interruption.
    await page.wait_for_selector(".entry[data-role='assistant'][data-status='interrupted']", timeout=30_000)
    cancelled = await events(page, "ttsCancelled")
    assert cancelled and cancelled[0]["data"][0]["reason"] == "barge_in", cancelled
    first_turn = finals[0]["data"][1]["turn_id"]
    assert cancelled[0]["data"][0]["turn_id"] == first_turn
    assert not [e for e in await events(page, "ttsComplete") if e["data"][0]["turn_id"] == first_turn]
    interrupted = await page.inner_text(".entry[data-role='assistant'][data-status='interrupted']")
    assert "Interrupted · by Ada" in interrupted
    assert "Interrupted" in await page.inner_text("#tts-status")

    # 5. The second utterance is answered; the screenshot shows the conversation so far.
    await page.wait_for_function(
        "(t) => [...document.querySelectorAll(\".entry[data-role='assistant']\")].some((e) => e.textContent.includes(t))",
        arg=SECOND_REPLY,
        timeout=30_000,
    )
    users = await page.locator(".entry[data-role='user'] .entry-text").all_inner_texts()
    assert users[:2] == ["Hello there.", "What is the capital of France?"]
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 20_000
    assert not [e for e in await events(page, "error")], await events(page, "error")
    assert time.monotonic() - mic_on < 90

    # Leaving ends the call cleanly.
    await page.get_by_role("button", name="Leave").click()
    await page.wait_for_selector("#join-view:not([hidden])", timeout=10_000)
    assert await page.get_attribute("#connection", "data-state") == "closed"


async def test_typed_message_and_stop_button(page: Any, stack: Stack) -> None:
    long_reply = " ".join(f"Here is sentence {i} of a long typed answer." for i in range(1, 9))
    stack.fake.replies.append(long_reply)

    await page.goto(stack.tokens.url + "/")
    await page.get_by_label("Room").fill("e2e-typed")
    await page.get_by_label("Your name").fill("Grace Hopper")
    await page.get_by_label("Turn my microphone on when I join").uncheck()
    await page.get_by_role("button", name="Join room").click()
    await page.wait_for_selector("#agent[data-state='listening']", timeout=30_000)
    await page.evaluate(RECORD_EVENTS)
    assert await page.inner_text(".participant[data-agent='false'] .avatar") == "GH"
    assert "muted" in await page.inner_text(".participant[data-agent='false']")

    await page.get_by_label("Type a message to the assistant").fill("  Tell me something long.  ")
    await page.get_by_role("button", name="Send").click()
    typed = page.locator(".entry[data-role='user']").first
    await typed.wait_for(timeout=20_000)
    assert await page.get_by_label("Type a message to the assistant").input_value() == ""
    assert "Tell me something long." in await typed.inner_text()
    assert "typed" in await typed.inner_text()

    # While the agent speaks, "Stop answer" sends stop_speaking: the answer is cancelled as a stop request.
    await page.wait_for_selector("#stop-button:not([disabled])", timeout=30_000)
    await page.click("#stop-button")
    await page.wait_for_selector(".entry[data-role='assistant'][data-status='interrupted']", timeout=20_000)
    cancelled = await events(page, "ttsCancelled")
    assert [c["data"][0]["reason"] for c in cancelled] == ["stop_request"]
    assert "stopped by Grace Hopper" in await page.inner_text(".entry[data-role='assistant']")
    await page.wait_for_selector("#stop-button[disabled]", timeout=5_000)

    # Vision: the camera and the screen are published as tracks and previewed.
    await page.click("#camera-button")
    await page.wait_for_selector("#camera-button[aria-pressed='true']", timeout=10_000)
    await page.click("#screen-button")
    await page.wait_for_selector("#screen-button[aria-pressed='true']", timeout=10_000)
    captions = await page.locator("#previews figcaption").all_inner_texts()
    assert sorted(captions) == ["Your camera", "Your screen"], captions
    await page.click("#camera-button")
    await page.wait_for_selector("#camera-button[aria-pressed='false']", timeout=10_000)
    assert await page.locator("#previews figcaption").all_inner_texts() == ["Your screen"]

    # Microphone on, then muted: the button and the participant list say so.
    await page.click("#mic-button")
    await page.wait_for_selector("#mic-button[aria-pressed='true']", timeout=10_000)
    assert await page.inner_text("#mic-button .ctl-label") == "Mute"
    await page.wait_for_function(
        "() => !document.querySelector(\".participant[data-agent='false']\").textContent.includes('muted')",
        timeout=10_000,
    )
    await page.click("#mic-button")
    await page.wait_for_selector("#mic-button[aria-pressed='false']", timeout=10_000)
    assert await page.inner_text("#mic-button .ctl-label") == "Unmute"
    await page.wait_for_function(
        "() => document.querySelector(\".participant[data-agent='false']\").textContent.includes('muted')",
        timeout=10_000,
    )
    await page.wait_for_selector("#agent[data-state='listening']", timeout=20_000)
    assert stack.fake.chat_requests[-1]["messages"][-1]["content"].endswith("Tell me something long.")


async def test_reconnecting_banner(page: Any, stack: Stack) -> None:
    await page.goto(stack.tokens.url + "/?room=e2e-reconnect")
    await page.get_by_label("Your name").fill("Lin")
    await page.get_by_label("Turn my microphone on when I join").uncheck()
    await page.get_by_role("button", name="Join room").click()
    await page.wait_for_selector("#agent[data-state='listening']", timeout=30_000)
    await page.evaluate(RECORD_EVENTS)

    # Drop the signal connection the way livekit-client's own tests do; the dev server asks for a full
    # reconnect, which the client performs with our backoff policy.
    await page.evaluate("window.llmrtc.room.simulateScenario('signal-reconnect')")
    await page.wait_for_function(
        "() => (window.__events || []).some((e) => e.name === 'stateChange' && e.data[0] === 'reconnecting')",
        timeout=15_000,
    )
    await page.wait_for_selector("#connection[data-state='connected']", timeout=30_000)
    states = [e["data"][0] for e in await events(page, "stateChange")]
    assert states[:1] == ["reconnecting"] and states[-1] == "connected", states
    attempts = [e["data"] for e in await events(page, "reconnecting")]
    assert attempts and attempts[0] == [1, 8], attempts
    shown = [e["data"] for e in await events(page, "banner") if not e["data"][0]]
    assert shown and shown[0][1].startswith("Connection lost. Reconnecting"), shown
    assert await page.is_hidden("#reconnecting-banner")
    await page.wait_for_selector(".participant[data-agent='true']", timeout=30_000)


async def test_join_errors_are_shown(page: Any, stack: Stack) -> None:
    await page.goto(stack.tokens.url + "/")
    await page.get_by_label("Room").fill("not a room!")
    await page.get_by_label("Your name").fill("Ada")
    await page.get_by_role("button", name="Join room").click()
    assert "Enter a room name" in await page.inner_text("#join-error")
    assert await page.evaluate("document.activeElement.id") == "room-input"

    # The token service's refusal (here its rate limit) is shown as it words it, and nothing is joined.
    async def refuse(route: Any) -> None:
        await route.fulfill(
            status=429,
            content_type="application/json",
            body='{"error": {"code": "rate_limited", "message": "too many token requests; retry later"}}',
        )

    await page.route("**/api/token", refuse)
    await page.get_by_label("Room").fill("e2e-errors")
    await page.get_by_role("button", name="Join room").click()
    await page.wait_for_selector("#join-error:not([hidden])", timeout=10_000)
    assert await page.inner_text("#join-error") == "too many token requests; retry later"
    assert await page.is_visible("#join-view") and await page.is_hidden("#call-view")
    assert await page.get_attribute("#connection", "data-state") == "failed"
    assert await page.is_enabled("#join-button")
