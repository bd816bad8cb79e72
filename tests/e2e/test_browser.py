"""The web client in headless Chromium against the real stack: dev server, token service, worker.

Desktop: Chromium's fake microphone plays one WAV: "Hello there.", a pause while the agent answers at length,
then "What is the capital of France?" over the answer. The page must show the transcript, the answer streaming
in, the agent's audio playing (visualiser, captions paced by it), the first answer cut at what was heard, the
devices, the network quality, and stay accessible (axe-core). Phone (390x844, touch): typed turns, the queue
and Stop, the mobile layout (accessible icon buttons, mute shown by shape, transcript space, long names, the
orb's glow). Join form errors at both sizes, the reconnect banner. Screenshots go to docs/screenshots/.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.e2e.browser import (
    RECORD_EVENTS,
    axe_violations,
    chromium,
    events,
    join,
    layout_problems,
    open_page,
    overlaps,
    screenshot,
)
from tests.e2e.stack import (
    CHROMIUM,
    Stack,
    TokenService,
    conversation_wav,
    ensure_web_build,
    token_settings,
)
from tests.fixtures import fixture_path

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

playwright_api = pytest.importorskip("playwright.async_api")

FIRST_REPLY = (
    "Hello! It is good to hear you. I am the assistant in this room, and I can answer questions, "
    "look things up with tools, and follow a playbook. Ask me anything you like, and take your time, "
    "because I will keep talking for a little while so that you can try interrupting me."
)
SECOND_REPLY = "The capital of France is Paris."
LONG_NAME = "Maximiliana Alexandra Bartholomew-Featherstonehaugh"
LONG_ROOM = "quarterly-planning-review-for-the-platform-and-infrastructure-tm"  # 64 characters


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
async def browser(speech_wav: Path) -> AsyncIterator[Any]:
    async with chromium(playwright_api, speech_wav) as running:
        yield running


async def test_desktop_conversation_barge_in_and_heard_text(browser: Any, stack: Stack) -> None:
    stack.fake.transcripts.extend(["Hello there.", "What is the capital of France?"])
    stack.fake.replies.extend([FIRST_REPLY, SECOND_REPLY])
    problems: list[str] = []

    async with open_page(browser, "desktop") as page:
        await page.goto(stack.tokens.url + "/?room=e2e-browser")
        await page.get_by_label("Your name").fill("Ada")
        assert await page.get_by_label("Room", exact=True).input_value() == "e2e-browser"
        problems += await axe_violations(page, "join page (desktop)")
        await screenshot(page, "join-desktop")
        await page.get_by_label("Turn my microphone on when I join").uncheck()  # the WAV starts with the mic
        await page.get_by_role("button", name="Join room").click()

        await page.wait_for_selector("#connection[data-state='connected']", timeout=20_000)
        await page.evaluate(RECORD_EVENTS)
        # Focus moves into the call (not lost on the hidden form).
        assert await page.evaluate("document.activeElement.id") == "call-title"
        # The agent comes with the room (named dispatch in the token) and gets ready.
        await page.wait_for_selector(".participant[data-agent='true']", timeout=30_000)
        await page.wait_for_selector("#agent[data-state='listening']", timeout=30_000)
        assert "Ada (you)" in await page.inner_text("#participants")
        # Mic off is said in words and shown by the crossed-out icon, not only by colour.
        assert await page.is_visible("#mic-off") and "microphone is off" in await page.inner_text("#mic-off")
        assert await page.is_visible("#mic-button .icon-off") and await page.is_hidden("#mic-button .icon-on")
        assert await page.inner_text("#mic-button .ctl-label") == "Unmute"

        # Devices: microphone, camera and speaker pickers with the browser's (fake) devices.
        await page.get_by_role("button", name="Devices").click()
        assert await page.get_attribute("#devices-button", "aria-expanded") == "true"
        await page.wait_for_function(
            "() => document.querySelectorAll('#device-audioinput option').length > 0"
        )
        mics = await page.locator("#device-audioinput option").all_inner_texts()
        cams = await page.locator("#device-videoinput option").all_inner_texts()
        assert mics and cams and await page.get_by_label("Speaker").count() == 1, (mics, cams)
        assert not await overlaps(page, "#devices-panel", "#controls")
        await page.keyboard.press("Escape")
        assert await page.is_hidden("#devices-panel")

        await page.click("#mic-button")  # publish the microphone: Chromium starts playing the WAV now
        await page.wait_for_selector("#mic-button[aria-pressed='true']", timeout=10_000)
        assert await page.is_hidden("#mic-off")
        mic_on = time.monotonic()

        # 1. What Ada said appears in the transcript under her name.
        first_user = page.locator(".entry[data-role='user']").first
        await page.wait_for_function(
            "() => document.querySelector(\".entry[data-role='user']\")?.textContent.includes('Hello there.')",
            timeout=30_000,
        )
        assert "Ada (you)" in await first_user.inner_text()

        # 2. The answer streams in; the agent speaks: audio plays, the visualiser moves, captions follow the
        # audio (revealed while it plays, well behind the text the LLM already wrote).
        await page.wait_for_selector("#agent[data-state='speaking']", timeout=30_000)
        await page.wait_for_selector("#visualiser[data-active='true']", timeout=10_000)
        await page.wait_for_selector("#captions:not([hidden])", timeout=10_000)
        shown_1 = int(await page.get_attribute("#captions", "data-shown") or 0)
        await asyncio.sleep(1.2)
        shown_2 = int(await page.get_attribute("#captions", "data-shown") or 0)
        written = len(await page.inner_text(".entry[data-role='assistant'] .entry-text"))
        assert 0 < shown_1 < shown_2 < len(FIRST_REPLY), (shown_1, shown_2)
        assert shown_2 < written or written == len(FIRST_REPLY), "captions run ahead of the written text"
        await page.wait_for_function("() => window.__events.some((e) => e.name === 'llm')", timeout=15_000)
        chunks = await events(page, "llmChunk")
        finals = await events(page, "llm")
        assert len(chunks) >= 5, f"the answer did not stream: {len(chunks)} chunks"
        assert finals and chunks[0]["at"] < finals[0]["at"]
        first_turn = finals[0]["data"][1]["turn_id"]
        assert "".join(c["data"][0] for c in chunks if c["data"][1]["turn_id"] == first_turn) == FIRST_REPLY
        await page.wait_for_function(
            "() => parseFloat(document.getElementById('agent-level').dataset.peak) > 0.01", timeout=15_000
        )
        playing = await page.evaluate(
            """() => [...document.querySelectorAll("#audio-sink audio[data-agent='true']")]
                 .map((a) => ({paused: a.paused, time: a.currentTime, muted: a.muted}))"""
        )
        assert playing and any(not a["paused"] and a["time"] > 0 and not a["muted"] for a in playing), playing
        # Network quality, measured from WebRTC statistics (the dev server does not rate connections).
        await page.wait_for_function(
            "() => ['excellent', 'good'].includes(document.getElementById('network').dataset.level)",
            timeout=15_000,
        )
        assert "Network:" in await page.inner_text("#network")
        problems += await axe_violations(page, "live conversation (desktop)")

        # 3. "What is the capital of France?" over the answer cancels it; what was not heard is struck through.
        await page.wait_for_selector(
            ".entry[data-role='assistant'][data-status='interrupted']", timeout=30_000
        )
        await screenshot(page, "barge-in-desktop")
        cancelled = await events(page, "ttsCancelled")
        assert cancelled and cancelled[0]["data"][0]["reason"] == "barge_in", cancelled
        assert cancelled[0]["data"][0]["turn_id"] == first_turn
        assert not [e for e in await events(page, "ttsComplete") if e["data"][0]["turn_id"] == first_turn]
        entry = page.locator(".entry[data-role='assistant'][data-status='interrupted']")
        assert "Interrupted · by Ada" in await entry.inner_text()
        heard = cancelled[0]["data"][0]["heard_text"]
        shown_heard = await entry.locator(".entry-heard").inner_text()
        assert shown_heard.split() == heard.split(), (shown_heard, heard)
        assert FIRST_REPLY.startswith(shown_heard.strip()), shown_heard
        assert len(heard) < len(FIRST_REPLY)
        unheard = entry.locator(".entry-unheard")
        assert await unheard.count() == 1
        assert "line-through" in await unheard.evaluate("(e) => getComputedStyle(e).textDecorationLine")
        assert (shown_heard + await unheard.evaluate("(e) => e.lastChild.textContent")).split() == (
            FIRST_REPLY.split()
        )
        # Captions stop at the heard text, never at words that were not spoken.
        assert int(await page.get_attribute("#captions", "data-shown") or 0) <= len(heard)
        assert "Interrupted" in await page.inner_text("#tts-status")

        # 4. The second utterance is answered.
        await page.wait_for_function(
            "(t) => [...document.querySelectorAll(\".entry[data-role='assistant']\")]"
            ".some((e) => e.textContent.includes(t))",
            arg=SECOND_REPLY,
            timeout=30_000,
        )
        users = await page.locator(".entry[data-role='user'] .entry-text").all_inner_texts()
        assert users[:2] == ["Hello there.", "What is the capital of France?"]
        await page.wait_for_selector("#agent[data-state='listening']", timeout=20_000)
        await screenshot(page, "conversation-desktop")
        assert not [e for e in await events(page, "error")], await events(page, "error")
        assert time.monotonic() - mic_on < 90
        assert await layout_problems(page) == []

        # Leaving keeps the transcript, with Rejoin.
        entries = await page.locator(".entry").count()
        await page.get_by_role("button", name="Leave").click()
        await page.wait_for_selector("#ended:not([hidden])", timeout=10_000)
        assert await page.get_attribute("#connection", "data-state") == "closed"
        assert await page.locator(".entry").count() >= entries
        assert await page.is_visible("#rejoin-button") and await page.is_hidden("#controls")
        assert await page.is_disabled("#text-input")
        assert await page.inner_text("#agent-state") == "Not connected"
        await page.get_by_role("button", name="Change room").click()
        assert await page.is_visible("#join-view") and await page.is_hidden("#call-view")
        assert await page.evaluate("document.activeElement.id") == "room-input"
        assert await page.inner_text("#connection-text") == "Not connected"
    assert problems == [], problems


async def test_phone_typed_turns_queue_stop_and_layout(browser: Any, stack: Stack) -> None:
    long_reply = " ".join(f"Here is sentence {i} of a long typed answer." for i in range(1, 12))
    stack.fake.replies.append(long_reply)
    problems: list[str] = []

    async with open_page(browser, "phone") as page:
        await page.goto(stack.tokens.url + "/")
        await page.get_by_label("Room", exact=True).fill(LONG_ROOM)
        await page.get_by_label("Your name").fill(LONG_NAME)
        await page.get_by_label("Turn my microphone on when I join").uncheck()
        problems += await axe_violations(page, "join page (phone)")
        await screenshot(page, "join-phone")
        await page.get_by_role("button", name="Join room").tap()
        await page.wait_for_selector("#agent[data-state='listening']", timeout=30_000)
        await page.evaluate(RECORD_EVENTS)
        me = page.locator(".participant[data-agent='false']")
        assert await me.locator(".avatar").inner_text() == "MB"
        assert "muted" in await me.inner_text()

        # Icon buttons keep their accessible names below 860 px, where their labels are visually hidden.
        for name in ("Unmute", "Camera", "Share screen", "Devices", "Leave"):
            button = page.get_by_role("button", name=name, exact=True)
            assert await button.count() == 1 and await button.is_visible(), name
        label_box = await page.locator("#leave-button .ctl-label").bounding_box()
        assert label_box is not None and label_box["width"] <= 1
        assert await page.is_visible("#mic-button .icon-off")  # muted: a crossed-out microphone
        # The transcript gets most of the screen; nothing scrolls sideways or clips the long names.
        height = await page.evaluate("document.getElementById('transcript').getBoundingClientRect().height")
        assert height >= 0.4 * 844, f"the transcript gets {height} of 844 px"
        assert await layout_problems(page) == []
        assert not await overlaps(page, "#controls", "#composer")

        await page.get_by_label("Type a message to the assistant").fill("  Tell me something long.  ")
        await page.get_by_role("button", name="Send").tap()
        typed = page.locator(".entry[data-role='user']").first
        await typed.wait_for(timeout=20_000)
        assert await page.get_by_label("Type a message to the assistant").input_value() == ""
        assert "Tell me something long." in await typed.inner_text() and "typed" in await typed.inner_text()

        # While the agent speaks, two more typed messages wait in the queue, and the page says so.
        await page.wait_for_selector("#stop-button:not([disabled])", timeout=30_000)
        for text in ("And one more thing.", "Also this."):
            await page.get_by_label("Type a message to the assistant").fill(text)
            await page.get_by_role("button", name="Send").tap()
        await page.wait_for_function(
            "() => document.querySelectorAll(\".entry[data-role='user'][data-status='queued']\").length === 2",
            timeout=15_000,
        )
        assert "Queued" in await page.inner_text(".entry[data-role='user'][data-status='queued']")
        problems += await axe_violations(page, "live conversation (phone)")
        await screenshot(page, "conversation-phone")

        # Stop answer: the answer is cancelled as a stop request, the queued messages are shown as dropped.
        await page.get_by_role("button", name="Stop answer").tap()
        await page.wait_for_selector(
            ".entry[data-role='assistant'][data-status='interrupted']", timeout=20_000
        )
        cancelled = await events(page, "ttsCancelled")
        assert [c["data"][0]["reason"] for c in cancelled] == ["stop_request"]
        answer = page.locator(".entry[data-role='assistant'][data-status='interrupted']")
        assert f"stopped by {LONG_NAME}" in await answer.inner_text()
        assert await answer.locator(".entry-unheard").count() == 1  # the rest of the answer was never spoken
        dropped = page.locator(".entry[data-role='user'][data-status='dropped']")
        assert await dropped.count() == 2
        assert "Not answered · stopped" in await dropped.first.inner_text()
        await page.wait_for_selector("#stop-button[disabled]", timeout=5_000)
        await screenshot(page, "barge-in-phone")

        # Microphone on, then muted: the button and the participant list say so.
        await page.locator("#mic-button").tap()
        await page.wait_for_selector("#mic-button[aria-pressed='true']", timeout=10_000)
        assert await page.get_by_role("button", name="Mute", exact=True).count() == 1
        await page.wait_for_function(
            "() => !document.querySelector(\".participant[data-agent='false']\").textContent.includes('muted')",
            timeout=10_000,
        )
        await page.locator("#mic-button").tap()
        await page.wait_for_selector("#mic-button[aria-pressed='false']", timeout=10_000)
        await page.wait_for_function(
            "() => document.querySelector(\".participant[data-agent='false']\").textContent.includes('muted')",
            timeout=10_000,
        )
        # Vision: the camera and the screen are published as tracks and previewed.
        await page.locator("#camera-button").tap()
        await page.wait_for_selector("#camera-button[aria-pressed='true']", timeout=10_000)
        assert await page.locator("#previews figcaption").all_inner_texts() == ["Your camera"]
        await page.locator("#camera-button").tap()
        await page.wait_for_selector("#camera-button[aria-pressed='false']", timeout=10_000)
        assert await page.locator("#previews figcaption").count() == 0
        asked = [r["messages"][-1]["content"] for r in stack.fake.chat_requests]
        assert any(str(c).endswith("Tell me something long.") for c in asked), asked
        assert await layout_problems(page) == []
    assert problems == [], problems


async def test_reconnecting_banner(browser: Any, stack: Stack) -> None:
    async with open_page(browser, "desktop") as page:
        await join(page, stack.tokens.url, "e2e-reconnect", "Lin")
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
        assert attempts and attempts[0] == [1, 12], attempts
        shown = [e["data"] for e in await events(page, "banner") if not e["data"][0]]
        assert shown and shown[0][1].startswith("Connection lost. Reconnecting"), shown
        assert await page.is_hidden("#reconnecting-banner")
        await page.wait_for_selector(".participant[data-agent='true']", timeout=30_000)


@pytest.mark.parametrize("size", ["desktop", "phone"])
async def test_join_form_errors(browser: Any, stack: Stack, static_dir: Path, size: str) -> None:
    problems: list[str] = []
    # A token service of its own, so that it can go down while the page stays loaded.
    tokens = TokenService(token_settings(stack.dev.url, static_dir))
    stack.bg.run(tokens.start())
    try:
        async with open_page(browser, size) as page:
            await page.goto(tokens.url + "/")
            room = page.get_by_label("Room", exact=True)
            name = page.get_by_label("Your name")
            join_button = page.get_by_role("button", name="Join room")
            # The client applies the server's rule: a leading "-" is refused before any request is made.
            await room.fill("-standup")
            await name.fill("Ada")
            await join_button.click()
            error = await page.inner_text("#join-error")
            assert "can’t be a room name" in error and "for example" in error, error
            assert await page.evaluate("document.activeElement.id") == "room-input"
            assert await room.get_attribute("aria-invalid") == "true"
            assert "join-error" in (await room.get_attribute("aria-describedby") or "")
            assert await page.inner_text("#connection-text") == "Not connected"  # not "Connection failed"
            problems += await axe_violations(page, f"join page with an error ({size})")
            await room.fill("standup")
            assert await room.get_attribute("aria-invalid") is None

            # The server refuses a field: that field is focused and marked; the pill does not say it failed.
            async def refuse_name(route: Any) -> None:
                await route.fulfill(
                    status=400,
                    content_type="application/json",
                    body='{"error": {"code": "invalid_name", "message": "name contains control characters",'
                    ' "field": "name"}}',
                )

            await page.route("**/api/token", refuse_name)
            await join_button.click()
            await page.wait_for_selector("#name-input[aria-invalid='true']", timeout=10_000)
            assert await page.evaluate("document.activeElement.id") == "name-input"
            assert await page.inner_text("#join-error") == "name contains control characters"
            assert await page.inner_text("#connection-text") == "Not connected"
            await page.unroute("**/api/token")

            # The token service goes down: the form says what to check and what to do.
            await asyncio.get_running_loop().run_in_executor(None, stack.bg.run, tokens.stop())
            await join_button.click()
            await page.wait_for_selector("#join-error:not([hidden])", timeout=10_000)
            await page.wait_for_function(
                "() => document.getElementById('join-error').textContent.includes('token service')",
                timeout=10_000,
            )
            error = await page.inner_text("#join-error")
            assert "Can't reach the token service" in error and "make dev" in error and "try again" in error
            assert await page.is_visible("#join-view") and await page.is_hidden("#call-view")
            assert await page.is_enabled("#join-button")
            assert await page.evaluate("document.querySelectorAll('.toast').length") == 0
            assert await layout_problems(page) == []
    finally:
        if tokens.server.started and not tokens.server.should_exit:
            stack.bg.run(tokens.stop())
    assert problems == [], problems
