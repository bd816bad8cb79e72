"""The whole local stack for browser tests: dev server, fake OpenAI server, token service (serving the built web
client) on a background loop, and the worker as a subprocess pointed at the fake."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import uvicorn

from signalling.devserver.server import DevServer
from signalling.service import TokenServiceSettings, create_app
from tests.integration.worker.harness import (
    API_KEY,
    API_SECRET,
    ROOT,
    BackgroundLoop,
    WorkerProcess,
    provider_env,
)
from tests.integration.worker.openai_fake import OpenAIFake

AGENT_NAME = "llmrtc-agent"
STATIC_DIR = ROOT / "signalling" / "static"
CHROMIUM = Path("/usr/bin/chromium")


def ensure_web_build() -> Path | str:
    """The built web client's directory, building it when missing; a reason string when it cannot be built."""
    if (STATIC_DIR / "index.html").is_file() and (STATIC_DIR / "app.js").is_file():
        return STATIC_DIR
    if shutil.which("npm") is None or shutil.which("node") is None:
        return "the web client is not built and Node.js/npm are not installed (run `make -C web build`)"
    done = subprocess.run(
        ["make", "-C", str(ROOT / "web"), "build"], capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        raise RuntimeError(f"`make -C web build` failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return STATIC_DIR


class TokenService:
    """The real token service app under uvicorn, on an ephemeral port of the background loop."""

    def __init__(self, settings: TokenServiceSettings, port: int = 0) -> None:
        self.server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", lifespan="on"))
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self.port = int(self._sock.getsockname()[1])
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve(sockets=[self._sock]))
        for _ in range(200):
            if self.server.started:
                return
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.05)
        raise TimeoutError("the token service did not start")

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await asyncio.wait_for(self._task, 10)
        self._sock.close()


def token_settings(livekit_url: str, static_dir: Path) -> TokenServiceSettings:
    return TokenServiceSettings(
        LIVEKIT_URL=livekit_url,
        LIVEKIT_API_KEY=API_KEY,
        LIVEKIT_API_SECRET=API_SECRET,
        TOKEN_SERVICE_OPEN_MODE=True,
        AGENT_NAME=AGENT_NAME,
        WEB_STATIC_DIR=static_dir,
        TOKEN_RATE_LIMIT_BURST=50,
        _env_file=None,
    )


@dataclass
class Stack:
    bg: BackgroundLoop
    dev: DevServer
    fake: OpenAIFake
    tokens: TokenService
    worker: WorkerProcess
    workdir: Path

    @classmethod
    def start(cls, workdir: Path, static_dir: Path) -> Stack:
        bg = BackgroundLoop()
        dev = DevServer("127.0.0.1", 0, API_KEY, API_SECRET)
        fake = OpenAIFake(chunk_delay_s=0.03)
        bg.run(dev.start())
        bg.run(fake.start())
        tokens = TokenService(token_settings(dev.url, static_dir))
        bg.run(tokens.start())
        env = {
            "LIVEKIT_URL": dev.url,
            "LIVEKIT_API_KEY": API_KEY,
            "LIVEKIT_API_SECRET": API_SECRET,
            "AGENT_NAME": AGENT_NAME,
            "VAD_MIN_SILENCE_MS": "500",
            "FALSE_INTERRUPTION_TIMEOUT": "1.0",
            "WORKER_EXECUTOR": "thread",
            **provider_env(fake),
        }
        worker = WorkerProcess(env, workdir / "worker.log").start()
        stack = cls(bg, dev, fake, tokens, worker, workdir)
        try:
            worker.wait_registered()
        except BaseException:
            stack.stop()
            raise
        return stack

    def crash_worker(self) -> None:
        """Kill the worker like a crash (SIGKILL, no goodbye): the dev server re-dispatches its rooms."""
        proc = self.worker.proc
        assert proc is not None
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        self.worker.stop()

    def start_worker(self) -> None:
        """A new worker process (a restart): new agent identities, turn ids from the start again."""
        n = len(list(self.workdir.glob("worker*.log")))
        self.worker = WorkerProcess(self.worker.env, self.workdir / f"worker{n}.log").start()
        self.worker.wait_registered()

    def stop_devserver(self) -> None:
        self.bg.run(self.dev.stop())

    def start_devserver(self) -> None:
        """The dev server again on the same port (a server restart: no rooms, no workers until they return)."""
        self.dev = DevServer("127.0.0.1", self.dev.port, API_KEY, API_SECRET)
        self.bg.run(self.dev.start())

    def stop_provider(self) -> None:
        """The OpenAI-compatible server goes away: connections are refused."""
        self.bg.run(self.fake.stop())

    def start_provider(self) -> None:
        old = self.fake
        self.fake = OpenAIFake(chunk_delay_s=old.chunk_delay_s, port=old.port)
        self.bg.run(self.fake.start())

    def stop(self) -> None:
        self.worker.stop()
        for stop in (self.tokens.stop(), self.fake.stop(), self.dev.stop()):
            try:
                self.bg.run(stop)
            except Exception as exc:  # keep stopping the others; the test result stands
                print(f"stopping the stack: {type(exc).__name__}: {exc}")
        self.bg.close()


def conversation_wav(path: Path, parts: list[tuple[Path | None, float]], rate: int = 48_000) -> Path:
    """Concatenate WAV fixtures (``None`` is silence of the given seconds) into one mono PCM16 file."""
    chunks: list[np.ndarray] = []
    for source, seconds in parts:
        if source is None:
            chunks.append(np.zeros(int(seconds * rate), dtype=np.int16))
            continue
        with wave.open(str(source)) as wav:
            if wav.getframerate() != rate or wav.getnchannels() != 1 or wav.getsampwidth() != 2:
                raise ValueError(f"{source} is not mono PCM16 at {rate} Hz")
            chunks.append(np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.concatenate(chunks).tobytes())
    return path
