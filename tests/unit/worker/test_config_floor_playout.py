"""Worker settings, floor policies and the playout buffer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from llmrtc.errors import ConfigError
from llmrtc.playout import Playout
from worker.config import WorkerSettings, load_settings
from worker.floor import Floor
from worker.room import ParticipantInfo


def test_settings_from_env_and_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("AGENT_NAME=helper\nFLOOR_POLICY=name\nVAD_THRESHOLD=0.4\n")
    monkeypatch.setenv("FLOOR_POLICY", "designated")  # the environment wins over .env
    settings = load_settings(env_file)
    assert settings.agent_name == "helper"
    assert settings.floor_policy == "designated"
    assert settings.vad_threshold == 0.4
    assert settings.executor == "thread"


def test_invalid_settings_name_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOOR_POLICY", "loudest")
    monkeypatch.setenv("VAD_THRESHOLD", "3")
    with pytest.raises(ConfigError) as info:
        load_settings(None)
    assert "FLOOR_POLICY" in info.value.message and "VAD_THRESHOLD" in info.value.message
    monkeypatch.delenv("FLOOR_POLICY")
    monkeypatch.delenv("VAD_THRESHOLD")
    monkeypatch.setenv("PLAYBOOK", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="PLAYBOOK"):
        load_settings(None)


def test_missing_livekit_settings_say_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LIVEKIT_URL", "ws://x")
    with pytest.raises(ConfigError) as info:
        WorkerSettings(_env_file=None).require_livekit()
    assert "LIVEKIT_API_KEY" in info.value.message and "LIVEKIT_URL" not in info.value.message


def test_floor_policies() -> None:
    alice = ParticipantInfo("alice", "Alice", {"llmrtc.floor": "true"})
    bob = ParticipantInfo("bob", "Bob")
    everyone = Floor("everyone")
    assert everyone.takes_floor(bob, "anything") and everyone.listens_to(bob)
    name = Floor("name", names=("robo", "computer"))
    assert name.takes_floor(bob, "Hey Robo, what time is it?")
    assert name.takes_floor(bob, "computer: lights")
    assert not name.takes_floor(bob, "the robot is broken")
    assert name.may_interrupt(bob)
    designated = Floor("designated")
    assert designated.takes_floor(alice, "x") and designated.listens_to(alice)
    assert not designated.takes_floor(bob, "x") and not designated.listens_to(bob)
    assert not designated.may_interrupt(bob)


class _Out:
    def __init__(self) -> None:
        self.played = bytearray()
        self.queued = 0.0
        self.clears = 0

    async def capture(self, pcm: bytes, sample_rate: int) -> None:
        self.played.extend(pcm)
        await asyncio.sleep(0.001)

    async def flush(self) -> None:
        return None

    def clear(self) -> float:
        self.clears += 1
        return self.queued

    @property
    def queued_s(self) -> float:
        return self.queued

    async def wait_for_playout(self) -> None:
        return None


async def test_playout_pause_rewinds_what_was_not_heard_and_resume_plays_it() -> None:
    out = _Out()
    started: list[bool] = []
    playout = Playout(out, on_first_audio=lambda: started.append(True))
    one_second = b"\x01\x00" * 16000
    playout.feed(one_second, 16000, "First sentence here.", end_of_segment=True)
    playout.feed(one_second, 16000, "Second one.", end_of_segment=True)
    task = asyncio.create_task(playout.run())
    while len(out.played) < 16000:  # noqa: ASYNC110 - half a second handed to the track
        await asyncio.sleep(0.001)
    out.queued = 0.1  # 100 ms of that still queued in the track
    playout.pause()
    assert playout.paused and not playout.playing
    heard = playout.heard_bytes()
    assert heard == len(out.played) - 3200
    assert playout.spoken_text() in ("", "First", "First sentence")
    out.queued = 0.0
    playout.resume()
    playout.finish()
    await asyncio.wait_for(task, 5)
    assert started == [True]
    assert len(out.played) == 2 * len(one_second) + 3200, "the dropped 100 ms is played again"
    assert playout.spoken_text() == "First sentence here. Second one."


async def test_a_playout_held_before_it_started_leaves_the_output_alone() -> None:
    """A held (preemptive) turn is paused before any of its audio exists: what the output has queued then is
    another turn's tail, and a clear would cut it and queue silence ahead of this turn's first words."""
    out = _Out()
    out.queued = 0.1
    playout = Playout(out)
    playout.pause()
    assert playout.paused and out.clears == 0
    playout.feed(b"\x01\x00" * 1600, 16000, "Hello.", end_of_segment=True)
    playout.resume()
    playout.finish()
    await asyncio.wait_for(playout.run(), 5)
    assert len(out.played) == 3200 and playout.completed


async def test_playout_resamples_a_second_rate() -> None:
    out = _Out()
    playout = Playout(out)
    playout.feed(b"\x00\x00" * 2400, 24000)
    playout.feed(b"\x00\x00" * 1600, 16000)  # 100 ms at 16 kHz becomes 100 ms at 24 kHz
    playout.finish()
    await asyncio.wait_for(playout.run(), 5)
    assert len(out.played) == 2 * 4800


def test_env_example_lists_every_variable_and_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    from dotenv import dotenv_values

    from llmrtc.providers.registry import env_vars

    root = Path(__file__).resolve().parents[3]
    example = dotenv_values(root / ".env.example")
    worker_vars = set()
    for field in WorkerSettings.model_fields.values():
        alias = field.validation_alias
        names = getattr(alias, "choices", [alias])
        worker_vars.add(str(names[0]))
    missing = (set(env_vars()) | worker_vars) - set(example)
    assert not missing, f".env.example lacks {sorted(missing)}"
    for var in example:
        monkeypatch.delenv(var, raising=False)
    settings = load_settings(root / ".env.example")
    assert settings.playbook is None and settings.system_prompt and settings.floor_policy == "everyone"


def test_worker_cli_refuses_to_start_without_settings(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(root)}
    run = subprocess.run(
        [sys.executable, "-m", "worker", "dev"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "set LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET" in run.stderr
    env.update(LIVEKIT_URL="ws://127.0.0.1:9", LIVEKIT_API_KEY="k", LIVEKIT_API_SECRET="s")
    run = subprocess.run(
        [sys.executable, "-m", "worker", "start"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "No LLM provider is configured" in run.stderr
