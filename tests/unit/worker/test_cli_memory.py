"""The worker keeps livekit-agents from preloading local models it does not use (~250 MB per process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from worker.agent import Agent
from worker.cli import PRELOAD_LOCAL_INFERENCE_ENV, run_agent, skip_unused_preload
from worker.config import WorkerSettings

ROOT = Path(__file__).resolve().parents[3]


def test_preload_is_off_unless_the_livekit_turn_detector_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PRELOAD_LOCAL_INFERENCE_ENV, raising=False)
    skip_unused_preload("livekit")  # its weights are used: livekit-agents may share them across jobs
    assert PRELOAD_LOCAL_INFERENCE_ENV not in os.environ
    for kind in ("vad", "smart-turn"):
        monkeypatch.delenv(PRELOAD_LOCAL_INFERENCE_ENV, raising=False)
        skip_unused_preload(kind)
        assert os.environ[PRELOAD_LOCAL_INFERENCE_ENV] == "0"
    monkeypatch.setenv(PRELOAD_LOCAL_INFERENCE_ENV, "1")
    skip_unused_preload("vad")
    assert os.environ[PRELOAD_LOCAL_INFERENCE_ENV] == "1", "the user's choice stays"


def test_the_server_starts_with_the_preload_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``run_agent`` sets it before livekit-agents' server runs (its job processes inherit it)."""
    import livekit.agents.cli

    import worker.entrypoint

    for var in (PRELOAD_LOCAL_INFERENCE_ENV, "METRICS_PORT", "WORKER_PROCESSES", "TURN_DETECTION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LLMRTC_ENV_FILE", str(tmp_path / "no.env"))
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    seen: dict[str, Any] = {}
    monkeypatch.setattr(worker.entrypoint, "check_startup", lambda agent: None)
    monkeypatch.setattr(worker.entrypoint, "server_for", lambda agent, settings: "server")
    monkeypatch.setattr(
        livekit.agents.cli,
        "run_app",
        lambda server: seen.update(env=os.environ.get(PRELOAD_LOCAL_INFERENCE_ENV)),
    )
    settings = WorkerSettings(_env_file=None)
    assert run_agent(Agent(settings=settings), ["dev"]) == 0
    assert seen == {"env": "0"}


def test_livekit_agents_warm_up_then_leaves_the_local_models_unloaded() -> None:
    """The variable is the one livekit-agents reads: after its warm-up (which a thread-executor worker runs
    at its first job), LiveKit's end-of-turn weights are not in memory yet: loading them (``init_eot``,
    idempotent) still adds over 100 MB."""
    code = (
        "from worker.cli import skip_unused_preload\n"
        "skip_unused_preload('vad')\n"
        "import livekit.agents.ipc._preload\n"
        "import livekit.local_inference as li\n"
        "def rss(): return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS'))\n"
        "before = rss()\n"
        "li.init_eot()\n"
        "print((rss() - before) // 1024)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != PRELOAD_LOCAL_INFERENCE_ENV}
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert int(run.stdout.strip()) > 100, f"the end-of-turn weights were loaded already: {run.stdout}"
