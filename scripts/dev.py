"""``make dev``: run the whole local stack with one command.

Starts the LiveKit-compatible development server, the worker in dev mode and, when the project has it, the
token service (which serves the web client); merges their logs with a prefix per process, keeping other
libraries' chatter at WARNING; prints one "ready" block with the URLs once every part answers. Ctrl-C (or
SIGINT/SIGTERM to this process or to the ``make`` that started it) stops all of them. Providers come from
``.env`` (see ``.env.example``); with none configured it says, for STT, LLM and TTS, exactly what is missing
and exits with status 2 before starting anything.

Environment: ``DEV_SERVER_PORT`` (default 7880; 0 picks a free port), ``TOKEN_SERVICE_PORT`` (default 8080;
0 picks a free port), ``DEV_HOST`` (default 127.0.0.1; ``0.0.0.0`` lets a phone on the same network in),
``DEV_PUBLIC_HOST`` (the address handed out to clients; default: this machine's LAN address when listening
on 0.0.0.0), ``DEV_VERBOSE=1`` (every log line), ``LIVEKIT_API_KEY`` / ``LIVEKIT_API_SECRET`` (development
defaults otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEV_API_KEY = "devkey"
DEV_API_SECRET = "devsecret-change-me-0123456789abcdef"
COLORS = {"devserver": "\033[36m", "worker": "\033[32m", "tokens": "\033[35m", "dev": "\033[33m"}
RESET = "\033[0m"
READY_TIMEOUT_S = 120.0
OWN_LOGGERS = ("llmrtc", "worker", "signalling", "scripts", "__main__")
# Lines of other libraries kept below WARNING: the milestones people (and tests) look for.
MILESTONES = ("registered worker", "Uvicorn running on", "received job request")
DEPRECATED_DEV = re.compile(r"use `lk agent dev`|in-process auto-reload has been removed")
DEV_MODE_NOTE = (
    "worker running in development mode (python -m worker dev, run by make dev); "
    "restart make dev to load code changes"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# "2026-01-01 12:00:00,000 INFO name: msg", "2026-... - INFO name - msg", "INFO:     msg" (uvicorn)
_LEVEL = re.compile(r"^(?:\S+ \S+ (?:- )?)?(DEBUG|INFO|WARNING|ERROR|CRITICAL)(?::\s+|\s+([\w.\-]+)[\s:])")
_LOW = ("DEBUG", "INFO")

_print_lock = threading.Lock()


def say(prefix: str, line: str, color: bool) -> None:
    tag = f"[{prefix}]".ljust(12)
    if color:
        tag = f"{COLORS.get(prefix, '')}{tag}{RESET}"
    with _print_lock:
        sys.stdout.write(f"{tag} {line}\n")
        sys.stdout.flush()


class LogFilter:
    """What of a child's output to show: our own logs, warnings and errors, tracebacks, and the milestones;
    not the INFO/DEBUG chatter of other libraries. livekit-agents' advice to use ``lk agent dev`` (which does
    not apply here) becomes one line that does."""

    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose
        self._noted = False

    def __call__(self, raw: str) -> str | None:
        line = _ANSI.sub("", raw).rstrip()
        if DEPRECATED_DEV.search(line):
            if self._noted:
                return None
            self._noted = True
            return DEV_MODE_NOTE
        if self.verbose or not line.strip():
            return line if line.strip() else None
        match = _LEVEL.match(line)
        if match is None or match.group(1) not in _LOW:
            return line
        name = match.group(2) or "uvicorn"
        if name.split(".")[0] in OWN_LOGGERS or any(m in line for m in MILESTONES):
            return line
        return None


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


def lan_address() -> str:
    """This machine's address on its local network (the interface of the default route; no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed anywhere
            return str(sock.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def load_env_file(path: Path) -> dict[str, str]:
    """Variables of ``.env`` (without overriding the environment); blank values count as unset."""
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None and v.strip() != ""}


def check_providers(env: dict[str, str]) -> list[str]:
    """What is missing for each of STT, LLM and TTS (empty when all three can be built from ``env``)."""
    try:
        from llmrtc.errors import ConfigError
        from llmrtc.providers.registry import create_llm_from_env, create_stt_from_env, create_tts_from_env
    except ImportError as exc:
        return [f"the provider registry could not be loaded ({exc}); run `make setup`"]
    clean = {k: v for k, v in env.items() if v.strip() != ""}
    problems: list[str] = []
    built: list[object] = []
    makers: list[tuple[str, Callable[..., object]]] = [
        ("STT (speech to text)", create_stt_from_env),
        ("LLM (the language model)", create_llm_from_env),
        ("TTS (text to speech)", create_tts_from_env),
    ]
    for kind, make in makers:
        try:
            built.append(make(clean))
        except ConfigError as exc:
            problems.append(f"{kind}: {exc.message}")
        except ImportError as exc:
            problems.append(f"{kind}: a package is missing ({exc}); run `make setup`")

    async def close_all() -> None:
        for provider in built:
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()

    asyncio.run(close_all())
    return problems


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    color: bool
    log_filter: LogFilter = field(default_factory=LogFilter)
    proc: subprocess.Popen[bytes] | None = None
    seen: Callable[[str], None] | None = None
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
            text = raw.decode(errors="replace")
            if self.seen is not None:
                self.seen(text)
            shown = self.log_filter(text)
            if shown is not None:
                say(self.name, shown, self.color)

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


def parent_interrupted(ppid: int, make_pid: int) -> bool:
    """True when the ``make`` that started us is handling SIGINT or SIGTERM, or is gone.

    Ctrl-C reaches every process of the terminal's group, but a SIGINT sent to ``make`` alone does not: GNU
    make then waits for its children without passing the signal on. While its handler runs, the signal is in
    make's blocked mask (``/proc/PID/status``), which is how we notice.
    """
    if os.getppid() != ppid or not Path(f"/proc/{make_pid}").exists():
        return True  # make (or the shell between us) died; we were adopted
    try:
        status = Path(f"/proc/{make_pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    except OSError:
        return False
    wanted = (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGTERM - 1))
    for name in ("SigBlk", "SigPnd", "ShdPnd"):
        try:
            if int(fields.get(name, "0").strip(), 16) & wanted:
                return True
        except ValueError:
            continue
    return False


def http_ok(url: str, timeout: float = 2.0) -> str | None:
    """The body of a 200 answer from ``url``, else None."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body: bytes = resp.read(65536)
            return body.decode(errors="replace") if resp.status == 200 else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def ready_block(lines: list[str], color: bool) -> None:
    rule = "─" * 72
    say("dev", rule, color)
    for line in lines:
        say("dev", line, color)
    say("dev", rule, color)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make dev", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--no-color", action="store_true", help="plain log prefixes")
    parser.add_argument("--no-token-service", action="store_true", help="do not start the token service")
    parser.add_argument("--env-file", type=Path, default=ROOT / ".env", help="the .env file (default: .env)")
    parser.add_argument(
        "--host",
        default=None,
        help="address to listen on (default 127.0.0.1, or DEV_HOST); 0.0.0.0 lets phones on your network in",
    )
    parser.add_argument(
        "--public-host",
        default=None,
        help="address handed out to clients in tokens (default: the LAN address with --host 0.0.0.0)",
    )
    parser.add_argument("--verbose", action="store_true", help="show every log line (or DEV_VERBOSE=1)")
    args = parser.parse_args(argv)
    color = not args.no_color and sys.stdout.isatty()

    env = {**load_env_file(args.env_file), **{k: v for k, v in os.environ.items() if v.strip() != ""}}
    env["LLMRTC_ENV_FILE"] = str(args.env_file)  # the worker reads the same file
    problems = check_providers(env)
    if problems:
        say("dev", "no usable AI providers are configured; what is missing:", color)
        for problem in problems:
            say("dev", f"  {problem}", color)
        say("dev", "copy .env.example to .env and set, for example, ONE of:", color)
        say("dev", "  OPENAI_API_KEY=sk-...          OpenAI for STT, LLM and TTS", color)
        say("dev", "  OPENAI_BASE_URL=http://host/v1 any OpenAI-compatible server for all three", color)
        say(
            "dev",
            "  LOCAL_ONLY=true                Ollama + Faster-Whisper + Piper (OLLAMA_BASE_URL, ...)",
            color,
        )
        say(
            "dev",
            "or choose each with STT_PROVIDER, LLM_PROVIDER and TTS_PROVIDER (see docs/providers.md)",
            color,
        )
        return 2

    host = args.host or env.get("DEV_HOST") or "127.0.0.1"
    wildcard = host in ("0.0.0.0", "::")
    local_host = "127.0.0.1" if wildcard else host
    public_host = args.public_host or env.get("DEV_PUBLIC_HOST") or (lan_address() if wildcard else host)
    verbose = args.verbose or env.get("DEV_VERBOSE", "") not in ("", "0", "false")

    dev_port = free_port(int(env.get("DEV_SERVER_PORT", "7880")), host)
    api_key = env.get("LIVEKIT_API_KEY") or DEV_API_KEY
    api_secret = env.get("LIVEKIT_API_SECRET") or DEV_API_SECRET
    livekit_url = f"ws://{local_host}:{dev_port}"
    public_livekit_url = f"ws://{public_host}:{dev_port}"
    common = {**env, "PYTHONUNBUFFERED": "1", "LIVEKIT_API_KEY": api_key, "LIVEKIT_API_SECRET": api_secret}
    common["LIVEKIT_URL"] = livekit_url
    # one agent name for the worker and the tokens the token service mints (named dispatch, as in compose);
    # AGENT_NAME set but empty in .env: automatic dispatch (the worker takes every room, tokens ask for none)
    from worker.config import DEFAULT_AGENT_NAME

    agent_name = os.environ.get("AGENT_NAME")
    if agent_name is None:
        agent_name = _raw_env(args.env_file).get("AGENT_NAME", DEFAULT_AGENT_NAME)
    common["AGENT_NAME"] = agent_name.strip()
    py = sys.executable
    worker_registered = threading.Event()

    def watch_worker(line: str) -> None:
        if "registered worker" in line:
            worker_registered.set()

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
            LogFilter(verbose),
        ),
        Child(
            "worker",
            [py, "-m", "worker", "dev", "--no-reload", "--log-level", "DEBUG" if verbose else "INFO"],
            common,
            color,
            LogFilter(verbose),
            seen=watch_worker,
        ),
    ]
    token_module = None if args.no_token_service else token_service_module()
    token_port = 0
    if token_module:
        token_port = free_port(int(env.get("TOKEN_SERVICE_PORT", "8080")), host)
        # the URL clients get with their token: the address a phone on the network can reach
        token_env = {
            **common,
            "LIVEKIT_URL": public_livekit_url,
            "LIVEKIT_API_URL": f"http://{local_host}:{dev_port}",
        }
        token_argv = [py, "-m", token_module, "--host", host, "--port", str(token_port)]
        if not env.get("TOKEN_SERVICE_API_KEYS"):
            token_argv.append("--open")  # local development: the web client gets tokens without an API key
        children.append(Child("tokens", token_argv, token_env, color, LogFilter(verbose)))

    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    parent = os.getppid()
    make_pid = _make_ancestor(parent)

    say(
        "dev",
        f"starting the stack on {host} (dev server, worker{', token service' if token_module else ''})...",
        color,
    )
    children[0].start()
    time.sleep(0.5)
    for child in children[1:]:
        child.start()

    def announce() -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        web_ok: bool | None = None
        while time.monotonic() < deadline and not stopping.is_set():
            parts = [port_open(local_host, dev_port), worker_registered.is_set()]
            if token_module:
                health = http_ok(f"http://{local_host}:{token_port}/healthz")
                page = http_ok(f"http://{local_host}:{token_port}/") if health is not None else None
                parts.append(health is not None)
                web_ok = page is not None and "<html" in page.lower()
            if all(parts):
                break
            stopping.wait(0.3)
        else:
            if not stopping.is_set():
                missing = [
                    name
                    for name, ok in (
                        ("dev server", port_open(local_host, dev_port)),
                        ("worker", worker_registered.is_set()),
                    )
                    if not ok
                ]
                say(
                    "dev",
                    f"not ready after {READY_TIMEOUT_S:.0f} s; waiting on: {', '.join(missing) or 'token service'}",
                    color,
                )
            return
        lines = ["llmrtc is ready"]
        if token_module:
            web = f"http://{local_host}:{token_port}/"
            if web_ok:
                lines.append(f"  open the web client:  {web}")
            else:
                lines.append(f"  web client NOT built: run `make -C web build`, then reload {web}")
            if wildcard:
                lines.append(
                    f"  on your network:      http://{public_host}:{token_port}/  (phones: see docs/clients.md)"
                )
            lines.append(f"  TOKEN_SERVICE_URL=http://{local_host}:{token_port}")
        else:
            lines.append(
                "  no token service in this checkout: join with any LiveKit client and a token for the dev keys"
            )
        lines.append(f"  LIVEKIT_URL={public_livekit_url if wildcard else livekit_url}")
        lines.append(f"  LIVEKIT_API_KEY={api_key}")
        lines.append("  Ctrl-C stops everything")
        ready_block(lines, color)

    threading.Thread(target=announce, name="ready", daemon=True).start()

    status = 0
    while not stopping.is_set():
        dead = [c for c in children if not c.alive()]
        if dead:
            rc = dead[0].proc.returncode if dead[0].proc else 1
            say("dev", f"{dead[0].name} exited with status {rc}: stopping the stack", color)
            status = rc or 1
            break
        if make_pid is not None and parent_interrupted(parent, make_pid):
            say("dev", "make was interrupted", color)
            break
        stopping.wait(0.5)
    say("dev", "stopping...", color)
    for child in reversed(children):
        child.stop()
    say("dev", "stopped", color)
    return status


def _make_ancestor(pid: int) -> int | None:
    """The ``make`` this process runs under (directly or through a shell), if any."""
    for _ in range(3):
        comm = _comm(pid)
        if comm in ("make", "gmake"):
            return pid
        if comm not in ("sh", "bash", "dash"):
            return None
        pid = _ppid(pid)
    return None


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _raw_env(path: Path) -> dict[str, str]:
    """The ``.env`` file with blank values kept (``AGENT_NAME=`` means automatic dispatch)."""
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v or "" for k, v in dotenv_values(path).items()}


if __name__ == "__main__":
    sys.exit(main())
