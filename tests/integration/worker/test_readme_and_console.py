"""The README's examples run as written, and a console session is driven through a pseudo-terminal.

The code blocks are taken from README.md ("Use the framework directly" and "A code-first agent in a LiveKit
room"), written to files and run in subprocesses with every provider pointed at the local OpenAI-compatible
server (the real ``openai`` SDK talks to it). The console test types into ``python -m worker console``
through a pty, as a person at a terminal would: a typed question, then ``/wav`` with a spoken one.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import fixture_path
from tests.integration.worker.harness import ROOT, BackgroundLoop, provider_env
from tests.integration.worker.openai_fake import OpenAIFake

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

CAPITAL = "What is the capital of France?"
PARIS = "The capital of France is Paris."


@pytest.fixture(scope="module")
def fake() -> Iterator[OpenAIFake]:
    bg = BackgroundLoop()
    server = OpenAIFake(default_transcript=CAPITAL, default_reply=PARIS)
    bg.run(server.start())
    try:
        yield server
    finally:
        bg.run(server.stop())
        bg.close()


def _env(fake: OpenAIFake, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "OPENAI_"))}
    env.update(provider_env(fake))
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    env["LLMRTC_ENV_FILE"] = str(tmp / "no.env")  # hermetic: never a developer's .env
    return env


def readme_block(heading: str) -> str:
    """The first ```python block under the README heading ``heading``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    at = text.index(heading + "\n")
    match = re.search(r"```python\n(.*?)```", text[at:], re.S)
    assert match, f"no python block under {heading!r}"
    return match.group(1)


def _wav_seconds(path: Path) -> float:
    with wave.open(str(path)) as wav:
        return float(wav.getnframes() / wav.getframerate())


def test_the_framework_example_answers_a_spoken_question(fake: OpenAIFake, tmp_path: Path) -> None:
    script = tmp_path / "ask.py"
    script.write_text(readme_block("## Use the framework directly"))
    n_speech = len(fake.speech_requests)
    out = subprocess.run(
        [sys.executable, str(script), str(fixture_path("capital_16k"))],
        cwd=tmp_path,
        env=_env(fake, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"Alice: {CAPITAL}" in out.stdout
    assert PARIS in out.stdout
    spoken = int(re.search(r"\((\d+) bytes of speech\)", out.stdout).group(1))  # type: ignore[union-attr]
    assert spoken / 2 / 24000 > len(PARIS) * 0.055 * 0.9, "the whole answer was synthesized"
    assert [r["input"] for r in fake.speech_requests[n_speech:]] == [PARIS]
    request = fake.chat_requests[-1]
    assert [t["function"]["name"] for t in request.get("tools", [])] == ["get_weather"]


def test_the_code_first_agent_example_runs_in_the_console(fake: OpenAIFake, tmp_path: Path) -> None:
    script = tmp_path / "my_agent.py"
    script.write_text(readme_block("### A code-first agent in a LiveKit room"))
    wav_out = tmp_path / "agent.wav"
    out = subprocess.run(
        [sys.executable, str(script), "console", "--say", "Will it rain in Paris?", "--out", str(wav_out)],
        cwd=tmp_path,
        env=_env(fake, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert f"[agent] {PARIS}" in out.stdout
    assert re.search(r"turn turn_\S+ \(completed\) took \d+ ms", out.stdout), out.stdout  # the agent's hooks
    assert "[turn completed]" in out.stdout
    assert _wav_seconds(wav_out) == pytest.approx(len(PARIS) * 0.055, abs=0.15)
    system = fake.chat_requests[-1]["messages"][0]
    assert system["role"] == "system" and system["content"] == "You are a helpful voice assistant."


class Terminal:
    """A process on a pseudo-terminal: what it printed, and typing into it."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True
        )
        os.close(slave)
        self.text = ""

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # the process ended and closed the terminal
                return
            self.text += data.decode(errors="replace").replace("\r\n", "\n")

    def expect(self, pattern: str, within: float = 60.0, start: int = 0) -> re.Match[str]:
        deadline = time.monotonic() + within
        while True:
            match = re.search(pattern, self.text[start:])
            if match:
                return match
            if time.monotonic() > deadline or (self.proc.poll() is not None and not self._pending()):
                raise AssertionError(f"no {pattern!r} in the terminal:\n{self.text[-3000:]}")
            self._read(0.2)

    def _pending(self) -> bool:
        ready, _, _ = select.select([self.master], [], [], 0)
        if ready:
            self._read(0)
        return bool(ready)

    def type(self, line: str) -> int:
        """Type ``line`` and Enter; where the terminal's output stood before it."""
        at = len(self.text)
        os.write(self.master, (line + "\n").encode())
        return at

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        os.close(self.master)


def test_a_console_session_in_a_terminal_answers_typed_text_and_a_wav(
    fake: OpenAIFake, tmp_path: Path
) -> None:
    wav_out = tmp_path / "console.wav"
    fake.replies.extend(["Hello! How can I help?", PARIS])
    term = Terminal(
        [sys.executable, "-m", "worker", "console", "--out", str(wav_out)], _env(fake, tmp_path), ROOT
    )
    try:
        term.expect(r"type a message and press Enter", within=90)
        term.expect(r"> ")
        at = term.type("Hello there")
        term.expect(r"\[You\] Hello there", start=at)
        term.expect(r"\[agent\] Hello! How can I help\?", start=at)
        term.expect(r"\[turn completed\] \((\d+\.\d) s of agent audio", start=at)
        n_stt = len(fake.transcriptions)
        at = term.type(f"/wav {fixture_path('capital_16k')}")
        term.expect(rf"\[You\] {re.escape(CAPITAL)}", start=at, within=60)
        term.expect(rf"\[agent\] {re.escape(PARIS)}", start=at)
        done = term.expect(r"\[turn completed\] \((\d+\.\d) s of agent audio", start=at)
        assert len(fake.transcriptions) == n_stt + 1
        assert 1.5 < fake.transcriptions[-1].duration_s < 4.5, "the VAD cut one utterance out of the WAV"
        term.expect(r"> ", start=at + done.end())
        term.type("/quit")
        assert term.proc.wait(30) == 0
    finally:
        term.close()
    expected = (len("Hello! How can I help?") + len(PARIS)) * 0.055
    assert float(done.group(1)) == pytest.approx(expected, abs=0.2)
    assert _wav_seconds(wav_out) == pytest.approx(expected, abs=0.2)
