"""``make dev``: run the whole local stack with one command.

Starts the LiveKit-compatible development server, the worker in dev mode and, when the project has it, the
token service (which serves the web client); merges their logs with a prefix per process; Ctrl-C (or
SIGTERM) stops all of them. Providers come from ``.env`` (see ``.env.example``); with none configured it
says exactly what to set and exits with status 2 before starting anything.

Environment: ``DEV_SERVER_PORT`` (default 7880; 0 picks a free port), ``TOKEN_SERVICE_PORT`` (default 8080;
0 picks a free port), ``LIVEKIT_API_KEY`` / ``LIVEKIT_API_SECRET`` (development defaults otherwise).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEV_API_KEY = "devkey"
DEV_API_SECRET = "devsecret-change-me-0123456789abcdef"
COLORS = {"devserver": "\033[36m", "worker": "\033[32m", "tokens": "\033[35m", "dev": "\033[33m"}
RESET = "\033[0m"

_print_lock = threading.Lock()


def say(prefix: str, line: str, color: bool) -> None:
    tag = f"[{prefix}]".ljust(12)
    if color:
        tag = f"{COLORS.get(prefix, '')}{tag}{RESET}"
    with _print_lock:
        sys.stdout.write(f"{tag} {line}\n")
        sys.stdout.flush()


def free_port(preferred: int, host: str = "127.0.0.1") -> int:
    """``preferred`` if it can be bound, else a free ephemeral port (0 always picks one)."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free port")


def load_env_file(path: Path) -> dict[str, str]:
    """Variables of ``.env`` (without overriding the environment)."""
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def check_providers(env: dict[str, str]) -> str | None:
    """None when LLM, STT and TTS providers can be built from ``env``; else what to set."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        from llmrtc.errors import ConfigError
        from worker.conversation import providers_from_env

        try:
            providers = providers_from_env()
        except ConfigError as exc:
            return exc.message
        except ImportError as exc:
            return f"the provider registry could not be loaded ({exc}); run `make setup`"
        import asyncio

        asyncio.run(providers.aclose())
        return None
    finally:
        os.environ.clear()
        os.environ.update(saved)


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    color: bool
    proc: subprocess.Popen[bytes] | None = None
    _reader: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._pump, name=f"log-{self.name}", daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            say(self.name, raw.decode(errors="replace").rstrip(), self.color)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        if self._reader is not None:
            self._reader.join(2)


def token_service_module() -> str | None:
    """The token service's module, once the project has one (``python -m signalling``)."""
    try:
        if importlib.util.find_spec("signalling.__main__") is not None:
            return "signalling"
    except ModuleNotFoundError:
        pass
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make dev", description=__doc__.splitlines()[0])
    parser.add_argument("--no-color", action="store_true", help="plain log prefixes")
    parser.add_argument("--no-token-service", action="store_true", help="do not start the token service")
    parser.add_argument("--env-file", type=Path, default=ROOT / ".env", help="the .env file (default: .env)")
    args = parser.parse_args(argv)
    color = not args.no_color and sys.stdout.isatty()

    env = {**load_env_file(args.env_file), **os.environ}
    env["LLMRTC_ENV_FILE"] = str(args.env_file)  # the worker reads the same file
    problem = check_providers(env)
    if problem is not None:
        say("dev", "no usable AI providers are configured:", color)
        say("dev", f"  {problem}", color)
        say(
            "dev",
            "copy .env.example to .env and set at least one LLM, one STT and one TTS provider, e.g.:",
            color,
        )
        say(
            "dev",
            "  OPENAI_API_KEY=sk-...   (OpenAI for all three; add OPENAI_BASE_URL for a compatible server)",
            color,
        )
        say(
            "dev",
            "  or LLM_PROVIDER=ollama + STT_PROVIDER=faster-whisper + TTS_PROVIDER=piper for a local stack",
            color,
        )
        return 2

    host = "127.0.0.1"
    dev_port = free_port(int(env.get("DEV_SERVER_PORT", "7880")), host)
    api_key = env.get("LIVEKIT_API_KEY") or DEV_API_KEY
    api_secret = env.get("LIVEKIT_API_SECRET") or DEV_API_SECRET
    livekit_url = f"ws://{host}:{dev_port}"
    common = {**env, "PYTHONUNBUFFERED": "1", "LIVEKIT_API_KEY": api_key, "LIVEKIT_API_SECRET": api_secret}
    common["LIVEKIT_URL"] = livekit_url
    # one agent name for the worker and the tokens the token service mints (named dispatch, as in compose);
    # AGENT_NAME set but empty in .env: automatic dispatch (the worker takes every room, tokens ask for none)
    from worker.config import DEFAULT_AGENT_NAME

    common["AGENT_NAME"] = env.get("AGENT_NAME", DEFAULT_AGENT_NAME)
    py = sys.executable
    children = [
        Child(
            "devserver",
            [
                py,
                "-m",
                "signalling.devserver",
                "--host",
                host,
                "--port",
                str(dev_port),
                "--api-key",
                api_key,
                "--api-secret",
                api_secret,
            ],
            common,
            color,
        ),
        Child("worker", [py, "-m", "worker", "dev"], common, color),
    ]
    token_module = None if args.no_token_service else token_service_module()
    token_port = 0
    if token_module:
        token_port = free_port(int(env.get("TOKEN_SERVICE_PORT", "8080")), host)
        token_env = {**common, "LIVEKIT_API_URL": f"http://{host}:{dev_port}"}
        token_argv = [py, "-m", token_module, "--host", host, "--port", str(token_port)]
        if not env.get("TOKEN_SERVICE_API_KEYS"):
            token_argv.append("--open")  # local development: the web client gets tokens without an API key
        children.append(Child("tokens", token_argv, token_env, color))

    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    say("dev", f"LIVEKIT_URL={livekit_url}", color)
    say("dev", f"LIVEKIT_API_KEY={api_key}", color)
    if token_module:
        say("dev", f"TOKEN_SERVICE_URL=http://{host}:{token_port}", color)
        say("dev", f"web client: http://{host}:{token_port}/", color)
    else:
        say(
            "dev",
            "no token service in this checkout: join with any LiveKit client and a token for the dev keys",
            color,
        )
    children[0].start()
    time.sleep(0.5)
    for child in children[1:]:
        child.start()
    say("dev", "stack is starting; Ctrl-C stops everything", color)

    status = 0
    while not stopping.is_set():
        dead = [c for c in children if not c.alive()]
        if dead:
            rc = dead[0].proc.returncode if dead[0].proc else 1
            say("dev", f"{dead[0].name} exited with status {rc}: stopping the stack", color)
            status = rc or 1
            break
        stopping.wait(0.5)
    say("dev", "stopping...", color)
    for child in reversed(children):
        child.stop()
    say("dev", "stopped", color)
    return status


if __name__ == "__main__":
    sys.exit(main())
