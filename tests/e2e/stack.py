"""The whole local stack for browser tests: dev server, fake OpenAI server, token service (serving the built web
client) on a background loop, and the worker as a subprocess pointed at the fake."""

from __future__ import annotations

import asyncio
import shutil
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

    def __init__(self, settings: TokenServiceSettings) -> None:
        self.server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", lifespan="on"))
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
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


@dataclass
class Stack:
    bg: BackgroundLoop
    dev: DevServer
    fake: OpenAIFake
    tokens: TokenService
    worker: WorkerProcess

    @classmethod
    def start(cls, workdir: Path, static_dir: Path) -> Stack:
        bg = BackgroundLoop()
        dev = DevServer("127.0.0.1", 0, API_KEY, API_SECRET)
        fake = OpenAIFake(chunk_delay_s=0.03)
        bg.run(dev.start())
        bg.run(fake.start())
        settings = TokenServiceSettings(
            LIVEKIT_URL=dev.url,
            LIVEKIT_API_KEY=API_KEY,
            LIVEKIT_API_SECRET=API_SECRET,
            TOKEN_SERVICE_OPEN_MODE=True,
            AGENT_NAME=AGENT_NAME,
            WEB_STATIC_DIR=static_dir,
            _env_file=None,
        )
        tokens = TokenService(settings)
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
        stack = cls(bg, dev, fake, tokens, worker)
        try:
            worker.wait_registered()
        except BaseException:
            stack.stop()
            raise
        return stack

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
