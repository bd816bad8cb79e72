"""The dev server's command line: key options, printed settings, clean shutdown on SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from livekit import api

from llmrtc.errors import ConfigError
from signalling.devserver.__main__ import DEFAULT_PORT, build_parser, parse_keys, resolve
from tests.integration.devserver_agents.conftest import ROOT

pytestmark = pytest.mark.integration


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_resolve_keys_and_defaults() -> None:
    dev = resolve(_args("--dev"), env={})
    assert (dev.host, dev.port, dev.api_key, dev.api_secret) == (
        "127.0.0.1",
        DEFAULT_PORT,
        "devkey",
        "secret",
    )
    assert resolve(_args("--keys", "k1: s1"), env={}).api_key == "k1"
    explicit = resolve(
        _args("--api-key", "k2", "--api-secret", "s2", "--port", "0", "--bind", "0.0.0.0"), env={}
    )
    assert (explicit.api_key, explicit.api_secret, explicit.port, explicit.host) == ("k2", "s2", 0, "0.0.0.0")
    assert resolve(_args(), env={"LIVEKIT_KEYS": "k3: s3"}).api_secret == "s3"
    assert parse_keys("  key :  secret with spaces ") == ("key", "secret with spaces")


@pytest.mark.parametrize(
    "argv",
    [
        (),
        ("--keys", "no-separator"),
        ("--keys", "a: b, c: d"),
        ("--api-key", "only-key"),
        ("--keys", "a: b", "--api-key", "k", "--api-secret", "s"),
        ("--dev", "--port", "70000"),
    ],
)
def test_bad_command_lines_are_config_errors(argv: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError):
        resolve(_args(*argv), env={})


def _run(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "signalling.devserver", *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "LIVEKIT_KEYS"},
    )


def test_refuses_to_start_without_keys() -> None:
    proc = _run("--port", "0")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "--dev" in err and "--api-key" in err


def test_port_in_use_is_reported() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = _run("--dev", "--port", str(busy.getsockname()[1]))
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "cannot listen" in err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_prints_settings_serves_the_api_and_stops_cleanly(sig: signal.Signals) -> None:
    proc = _run("--keys", "cli-key: cli-secret-0123456789abcdef0123456789", "--port", "0")
    try:
        assert proc.stdout is not None
        lines = dict(proc.stdout.readline().strip().partition("=")[::2] for _ in range(3))
        assert lines["LIVEKIT_API_KEY"] == "cli-key"
        assert lines["LIVEKIT_API_SECRET"] == "cli-secret-0123456789abcdef0123456789"
        assert lines["LIVEKIT_URL"].startswith("ws://127.0.0.1:")
        http_url = lines["LIVEKIT_URL"].replace("ws://", "http://")
        async with api.LiveKitAPI(http_url, lines["LIVEKIT_API_KEY"], lines["LIVEKIT_API_SECRET"]) as lk:
            room = await lk.room.create_room(api.CreateRoomRequest(name="cli-room"))
            assert room.name == "cli-room"
        started = time.monotonic()
        proc.send_signal(sig)
        assert proc.wait(timeout=20) == 0
        assert time.monotonic() - started < 20
        assert proc.stderr is not None
        assert "devserver stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
