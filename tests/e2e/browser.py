"""Browser helpers of the e2e tests: Debian's Chromium through Playwright (never a downloaded browser), the
desktop and phone viewports, axe-core for accessibility, layout checks and screenshots."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.e2e.stack import CHROMIUM
from tests.integration.worker.harness import ROOT

AXE = ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = ROOT / "docs" / "screenshots"

DESKTOP: dict[str, Any] = {"viewport": {"width": 1280, "height": 800}}
# An iPhone 12-14 sized screen with touch, as Playwright's device descriptors give it.
PHONE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
    "user_agent": (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/130.0.0.0 Mobile Safari/537.36"
    ),
}
SIZES = {"desktop": DESKTOP, "phone": PHONE}

CHROMIUM_ARGS = [
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@asynccontextmanager
async def chromium(playwright_api: Any, wav: Path | None = None) -> AsyncIterator[Any]:
    """Headless Debian Chromium; ``wav`` is what its fake microphone plays (once)."""
    args = list(CHROMIUM_ARGS)
    if wav is not None:
        args.append(f"--use-file-for-fake-audio-capture={wav}%noloop")
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def open_page(browser: Any, size: str) -> AsyncIterator[Any]:
    """A page in a fresh context of ``size`` (desktop or phone); the console is printed when the test ends."""
    context = await browser.new_context(**SIZES[size])
    page = await context.new_page()
    logs: list[str] = []
    page.on("console", lambda msg: logs.append(f"{msg.type}: {msg.text}"))
    page.on("pageerror", lambda err: logs.append(f"pageerror: {err}"))
    try:
        yield page
    finally:
        if logs:
            print(f"browser console ({size}):\n" + "\n".join(logs[-60:]))
        await context.close()


async def join(page: Any, url: str, room: str, name: str, *, microphone: bool = False) -> None:
    """Open the app, fill the form and join; returns once connected."""
    await page.goto(f"{url}/?room={room}")
    await page.get_by_label("Your name").fill(name)
    mic = page.get_by_label("Turn my microphone on when I join")
    if microphone:
        await mic.check()
    else:
        await mic.uncheck()
    await page.get_by_role("button", name="Join room").click()
    await page.wait_for_selector("#connection[data-state='connected']", timeout=30_000)


async def axe_violations(page: Any, where: str) -> list[str]:
    """Serious and critical axe-core violations of the page as it is now (WCAG 2.x A and AA rules)."""
    if not await page.evaluate("() => typeof window.axe !== 'undefined'"):
        await page.add_script_tag(path=str(AXE))
    result = await page.evaluate(
        """async () => {
          const r = await axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a',
            'wcag21aa', 'wcag22aa', 'best-practice']}, resultTypes: ['violations']});
          return r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
            .map((v) => ({id: v.id, impact: v.impact, help: v.help,
                          nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' '))}));
        }"""
    )
    return [f"{where}: {json.dumps(v)}" for v in result]


async def overlaps(page: Any, a: str, b: str) -> bool:
    """Whether the boxes of the visible elements ``a`` and ``b`` intersect."""
    found: bool = await page.evaluate(
        """([a, b]) => {
          const boxes = (sel) => [...document.querySelectorAll(sel)].filter((e) => e.offsetParent !== null)
            .map((e) => e.getBoundingClientRect());
          for (const r of boxes(a)) for (const s of boxes(b)) {
            if (r.left < s.right && s.left < r.right && r.top < s.bottom && s.top < r.bottom) return true;
          }
          return false;
        }""",
        [a, b],
    )
    return found


async def layout_problems(page: Any) -> list[str]:
    """Horizontal overflow of the page, text clipped without an ellipsis, and a clipped orb glow."""
    found: list[str] = await page.evaluate(
        """() => {
          const out = [];
          if (document.documentElement.scrollWidth > window.innerWidth + 1) {
            out.push(`page scrolls sideways: ${document.documentElement.scrollWidth} > ${window.innerWidth}`);
          }
          for (const el of document.querySelectorAll('.participant, .brand-room, .participant-name, .entry-text')) {
            if (el.offsetParent === null) continue;
            const r = el.getBoundingClientRect();
            const box = el.parentElement.getBoundingClientRect();
            if (r.right > Math.max(box.right, window.innerWidth) + 1) out.push(`${el.className} sticks out`);
            const style = getComputedStyle(el);
            if (el.scrollWidth > el.clientWidth + 1 && style.textOverflow !== 'ellipsis'
                && style.overflowX !== 'auto' && style.overflowWrap !== 'anywhere') {
              out.push(`${el.className} is clipped without an ellipsis`);
            }
          }
          // The orb's glow (box-shadow) must not be cut by an ancestor that clips.
          const core = document.getElementById('agent-level');
          if (core && core.offsetParent !== null) {
            const glow = parseFloat(getComputedStyle(core).boxShadow.match(/(\\d+(?:\\.\\d+)?)px\\s+rgb/)?.[1] ?? '0');
            const c = core.getBoundingClientRect();
            const reach = 20;  // the largest glow at full level, in px (styles.css)
            for (let el = core.parentElement; el && el !== document.body; el = el.parentElement) {
              const s = getComputedStyle(el);
              if (s.overflow === 'visible' && s.overflowX === 'visible' && s.overflowY === 'visible') continue;
              const r = el.getBoundingClientRect();
              if (c.left - reach < r.left || c.right + reach > r.right || c.top - reach < r.top
                  || c.bottom + reach > r.bottom) out.push(`orb glow (${glow}px) clipped by .${el.className}`);
            }
          }
          return out;
        }"""
    )
    return found


async def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000, path
    return path


# Collects the client's events in the page with timestamps (call right after joining).
RECORD_EVENTS = """() => {
  window.__events = [];
  const names = ['transcript', 'llmChunk', 'llm', 'ttsStart', 'ttsComplete', 'ttsCancelled', 'bargeIn',
                 'speechStart', 'speechEnd', 'stateChange', 'reconnecting', 'agentState', 'ttsTrack', 'error',
                 'turnStart', 'turnEnd', 'networkQuality', 'chat', 'message'];
  for (const name of names) {
    window.llmrtc.on(name, (...args) => {
      const data = args.map((a) => (a instanceof MediaStream ? 'MediaStream'
        : a instanceof Error ? {code: a.code, message: a.message, detail: {component: a.detail?.component,
            retryable: a.detail?.retryable, reason: a.detail?.reason}}
        : (a && typeof a === 'object' && 'kind' in a && 'sid' in a) ? 'track' : a));
      window.__events.push({name, at: performance.now(), data});
    });
  }
  const banner = document.getElementById('reconnecting-banner');
  new MutationObserver(() => window.__events.push({name: 'banner', at: performance.now(),
    data: [banner.hidden, banner.textContent.trim()]})).observe(banner, {attributes: true, subtree: true,
    childList: true, characterData: true});
}"""


async def events(page: Any, name: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await page.evaluate(
        "(name) => (window.__events || []).filter((e) => e.name === name)", name
    )
    return found
