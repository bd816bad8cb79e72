"""Capacity, side by side: N rooms on one llmrtc worker and on one minimal LiveKit Agents worker.

Everything real but the vendors: the development server (``signalling.devserver``) and the OpenAI-compatible
fake of the worker tests (``tests/integration/worker/openai_fake.py``, for STT, LLM and TTS of both systems)
run on a thread of this process; the worker under test is its own process; the humans are official-SDK
participants in one more process (``capacity.py humans``), one per room, each looping real speech
(2 s of ``tests/fixtures/generated/capital_16k.wav``: 1.7 s of speech, "What is the capital of France?") every :data:`PERIOD_S` seconds
and listening to the agent's track.

Systems: ``llmrtc`` (``python -m worker dev``, thread executor, ``VAD_MIN_SILENCE_MS=550``) and ``livekit``
(``bench/lk_agent.py``: ``AgentSession`` with the silero and openai plugins, thread executor, VAD end of turn
at silero's 550 ms, no extra endpointing delay). ``llmrtc`` takes every room (``WORKER_LOAD_THRESHOLD=1.0``,
``WORKER_ROOM_CPU=0.001``, ``WORKER_LOAD_MACHINE=false``: to measure past its capacity); ``llmrtc-default`` is the worker as shipped (threshold 0.7): past its capacity
it refuses rooms, which then wait for a worker (their people see "Waiting for the assistant to join"; their
speech is counted as *unserved*, not as missed turns). ``llmrtc@PATH`` runs the llmrtc worker of another checkout
(before/after comparisons). Runs are interleaved: for each repetition, for each N, each system in turn
(order alternating), each on a fresh worker process.

Per run, over a measuring window after a warm-up:

- **CPU per room**: the worker's CPU time (process tree) / wall time / N (1.0 = one core);
- **memory**: the worker tree's RSS (and PSS) at the end; idle RSS before the first room;
- **latency**: at the listener, from the end of an utterance's playout into the room to the first loud frame
  of the agent's audio after it (p50, p95);
- **rooms refused** (no agent joined before the window ended) and their unserved utterances;
- **missed turns**: utterances with no agent audio before the next one; *announced* when an llmrtc error
  event (``turn_dropped``, ``turn_late``, ``worker_busy``, ``audio_dropped``, ...) reached the speaker in that
  time, else *silent*;
- the machine's load average at the start and the end.

Usage::

    .venv/bin/python bench/capacity.py --n 1 4 8 --reps 3                     # about 20 minutes
    .venv/bin/python bench/capacity.py --n 8 --reps 3 --systems llmrtc llmrtc@/tmp/before
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

API_KEY = "devkey"
API_SECRET = "devsecret-for-capacity-bench-0123456789"
SPEECH = ROOT / "tests" / "fixtures" / "generated" / "capital_16k.wav"
SPEECH_FROM_S = 0.8
"""The part sent: 0.8 s to 2.8 s of the file (speech from 1.0 s to 2.68 s, found by RMS > 300 per 10 ms)."""
SPEECH_TO_S = 2.8
SPEECH_END_S = 2.68
PERIOD_S = 7.0
HEARD_FOR_S = 4.0
"""An utterance is scored only when its speaker listened this long after it (the humans leave at the end of
the window): an answer later than ``TURN_LATE_S`` (4 s) is late anyway. (With 1 s, an answer due 2 s after
the window's last utterance counted as a silent miss.)"""
SEND_FRAME_MS = 100
"""The humans send their microphone audio in frames this long: 16 humans in 20 ms frames (800 sends a
second) kept the humans' process from real time on 2 cores (a 2 s utterance took 3-7 s to send)."""
LOUD_RMS = 300.0
TRANSCRIPT = "What is the capital of France?"
REPLY = "Sure, happy to help."


# ------------------------------------------------------------------------------------------------ humans


async def _human(
    url: str,
    room: str,
    identity: str,
    times: asyncio.Future[tuple[float, float]],
    ready: asyncio.Event,
    offset: float,
) -> dict[str, Any]:
    import numpy as np
    from livekit import api, rtc

    with wave.open(str(SPEECH)) as w:
        speech = w.readframes(w.getnframes())[int(SPEECH_FROM_S * 16000) * 2 : int(SPEECH_TO_S * 16000) * 2]
    speech_end_byte = int((SPEECH_END_S - SPEECH_FROM_S) * 16000) * 2
    jwt = (
        api.AccessToken(API_KEY, API_SECRET)
        .with_identity(identity)
        .with_name(identity)
        .with_grants(api.VideoGrants(room_join=True, room=room))
        .to_jwt()
    )
    lk = rtc.Room()
    loud: list[float] = []
    errors: list[tuple[float, str]] = []
    agent_joined: list[float] = []
    tasks: list[asyncio.Task[None]] = []

    async def listen(track: rtc.Track) -> None:
        stream = rtc.AudioStream(track, sample_rate=24000, num_channels=1, frame_size_ms=20)
        async for ev in stream:
            s = np.frombuffer(bytes(ev.frame.data), dtype=np.int16).astype(np.float32)
            if s.size and float(np.sqrt(np.mean(s * s))) > LOUD_RMS:
                loud.append(time.monotonic())

    def on_track(track: rtc.Track, pub: Any, participant: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            tasks.append(asyncio.create_task(listen(track)))

    def on_participant(p: rtc.RemoteParticipant) -> None:
        state = p.attributes.get("lk.agent.state")
        if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT and state in (
            "listening",
            "thinking",
            "speaking",
        ):
            if not agent_joined:
                agent_joined.append(time.monotonic())
            ready.set()

    def on_data(packet: rtc.DataPacket) -> None:
        if packet.topic == "llmrtc":
            with contextlib.suppress(Exception):
                event = json.loads(packet.data)
                if event.get("type") == "error":
                    errors.append((time.monotonic(), str(event.get("code"))))

    lk.on("track_subscribed", on_track)
    lk.on("participant_connected", on_participant)
    lk.on("participant_attributes_changed", lambda changed, p: on_participant(p))
    lk.on("data_received", on_data)
    await lk.connect(url, jwt)
    for p in lk.remote_participants.values():
        on_participant(p)
    source = rtc.AudioSource(16000, 1, queue_size_ms=2 * SEND_FRAME_MS)
    track = rtc.LocalAudioTrack.create_audio_track("mic", source)
    await lk.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    )
    samples = 16 * SEND_FRAME_MS
    frame_bytes = samples * 2
    silence = b"\x00" * frame_bytes
    utterances: list[tuple[float, float]] = []
    try:
        while not times.done():
            await source.capture_frame(rtc.AudioFrame(silence, 16000, 1, samples))
        start_at, end_at = times.result()
        next_start = start_at + offset
        while time.monotonic() < end_at:
            if time.monotonic() >= next_start:
                began = time.monotonic()
                ended = 0.0
                for i in range(0, len(speech), frame_bytes):
                    chunk = speech[i : i + frame_bytes].ljust(frame_bytes, b"\x00")
                    await source.capture_frame(rtc.AudioFrame(chunk, 16000, 1, samples))
                    if i <= speech_end_byte < i + frame_bytes:  # the last voiced frame: when it is heard
                        after_end_s = (i + frame_bytes - speech_end_byte) / 32000  # its part after the end
                        ended = time.monotonic() + source.queued_duration - after_end_s
                utterances.append((began, ended))
                next_start += PERIOD_S
            else:
                await source.capture_frame(rtc.AudioFrame(silence, 16000, 1, samples))
    finally:
        for t in tasks:
            t.cancel()
        await lk.disconnect()
    return {
        "room": room,
        "utterances": utterances,
        "loud": loud,
        "errors": errors,
        "agent_joined": agent_joined[:1],
    }


async def _humans(url: str, rooms: list[str], warmup: float, window: float, out: Path) -> None:
    """Every human joins; once every room's agent listens (or no more join), speech starts everywhere; the
    measuring window (after ``warmup``) is written to ``out.start`` for the parent to measure the worker."""
    offsets = [PERIOD_S * i / max(1, len(rooms)) for i in range(len(rooms))]
    random.Random(1).shuffle(offsets)
    times: asyncio.Future[tuple[float, float]] = asyncio.get_running_loop().create_future()
    readies = [asyncio.Event() for _ in rooms]
    humans = asyncio.gather(
        *(_human(url, r, f"human-{r}", times, e, o) for r, o, e in zip(rooms, offsets, readies, strict=True)),
        return_exceptions=True,
    )
    # every agent listening, or no new one for 20 s (a full worker refuses rooms), or 90 s
    loop = asyncio.get_running_loop()
    began = last_change = loop.time()
    ready_count = 0
    while ready_count < len(readies) and loop.time() - began < 90:
        now_ready = sum(e.is_set() for e in readies)
        if now_ready != ready_count:
            ready_count, last_change = now_ready, loop.time()
        elif ready_count and loop.time() - last_change > 20:
            break
        await asyncio.sleep(0.2)
    start_at = time.monotonic() + 1.0
    times.set_result((start_at, start_at + warmup + window))
    marker = out.with_suffix(".start")
    await asyncio.to_thread(marker.write_text, json.dumps([start_at + warmup, start_at + warmup + window]))
    results = await humans
    data = json.dumps([r if isinstance(r, dict) else {"error": repr(r)} for r in results])
    await asyncio.to_thread(out.write_text, data)


# ------------------------------------------------------------------------------------------------ servers


class Servers:
    """The dev server and the OpenAI fake on a background loop of this process."""

    def __init__(self) -> None:
        from signalling.devserver.server import DevServer
        from tests.integration.worker.openai_fake import OpenAIFake

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="servers")
        self.thread.start()
        self.dev = DevServer("127.0.0.1", 0, API_KEY, API_SECRET)
        self.fake = OpenAIFake(default_transcript=TRANSCRIPT, default_reply=REPLY)
        self._run(self.dev.start())
        self._run(self.fake.start())

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def close(self) -> None:
        self._run(self.fake.stop())
        self._run(self.dev.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_tree(pid: int) -> list[Any]:
    """The process ``pid`` and its descendants (psutil)."""
    import psutil

    proc = psutil.Process(pid)
    return [proc, *proc.children(recursive=True)]


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its descendants."""
    total = 0.0
    for p in process_tree(pid):
        with contextlib.suppress(Exception):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def _memory_mb(pid: int) -> tuple[float, float]:
    rss = pss = 0.0
    for p in process_tree(pid):
        with contextlib.suppress(Exception):
            info = p.memory_full_info()
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
    return rss / 2**20, pss / 2**20


def _worker_metrics(port: int | None, prefix: str) -> list[str]:
    """The lines of the worker's ``/metrics`` starting with ``prefix`` (none when it does not answer)."""
    if port is None:
        return []
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            return [line for line in resp.read().decode().splitlines() if line.startswith(prefix)]
    except OSError:
        return []


def _worker_load(port: int | None) -> float | None:
    lines = _worker_metrics(port, "llmrtc_worker_load ")
    return float(lines[0].split()[1]) if lines else None


def _vad_windows(port: int | None) -> dict[str, float]:
    """``llmrtc_vad_windows_total`` by its ``result`` label."""
    out: dict[str, float] = {}
    for line in _worker_metrics(port, "llmrtc_vad_windows_total{"):
        labels, value = line.rsplit(" ", 1)
        out[labels.split('result="', 1)[1].split('"', 1)[0]] = float(value)
    return out


# ------------------------------------------------------------------------------------------------ one run


@dataclass
class Run:
    system: str
    n: int
    rep: int
    cpu_per_room: float = 0.0
    cpu_total: float = 0.0
    rss_idle_mb: float = 0.0
    rss_mb: float = 0.0
    pss_mb: float = 0.0
    latency_ms: list[float] = field(default_factory=list)
    utterances: int = 0
    answered: int = 0
    missed_announced: int = 0
    missed_silent: int = 0
    rooms_without_agent: int = 0
    unserved: int = 0
    """Utterances in a room before its agent joined (refused rooms: all of theirs)."""
    load_avg: tuple[float, float] = (0.0, 0.0)
    worker_load: list[float] = field(default_factory=list)
    error: str = ""
    crashed: bool = False
    """The worker process ended during the run (the livekit FFI panic, every room lost)."""
    stalled: bool = False
    """The worker's ``/metrics`` stopped answering for 5 s during the window (its stacks are in the logs)."""
    vad_windows: dict[str, float] = field(default_factory=dict)
    """llmrtc: ``llmrtc_vad_windows_total`` by result (``evaluated``, ``skipped``) at the end of the run."""

    @property
    def p50(self) -> float:
        return statistics.median(self.latency_ms) if self.latency_ms else float("nan")

    @property
    def p95(self) -> float:
        if not self.latency_ms:
            return float("nan")
        xs = sorted(self.latency_ms)
        return xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]


def _settle(busy_below: float, limit_s: float) -> float:
    """Wait until the machine's CPUs are less than ``busy_below`` busy over 2 s (what the previous run left
    behind has finished), at most ``limit_s``; the busy share it last read."""
    import psutil

    deadline = time.monotonic() + limit_s
    while True:
        busy = psutil.cpu_percent(interval=2.0) / 100
        if busy < busy_below or time.monotonic() > deadline:
            return busy


def _py_spy() -> str:
    """py-spy of this interpreter's environment (the ``bench`` extra), else whichever is on ``PATH``."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else "py-spy"


def _dump_stacks(pid: int, out: Path) -> None:
    """Every Python thread's stack of ``pid`` (py-spy, from the ``bench`` extra) into ``out``."""
    try:
        dump = subprocess.run(
            [_py_spy(), "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30, check=False
        )
        out.write_text(dump.stdout + dump.stderr)
    except (OSError, subprocess.TimeoutExpired) as exc:
        out.write_text(f"py-spy dump failed: {exc}")


def _worker_cmd(system: str) -> tuple[list[str], Path]:
    if system.startswith("livekit"):
        return [sys.executable, str(ROOT / "bench" / "lk_agent.py"), "dev"], ROOT
    if system.startswith("llmrtc@"):
        return [sys.executable, "-m", "worker", "dev"], Path(system.split("@", 1)[1])
    return [sys.executable, "-m", "worker", "dev"], ROOT


def run_once(
    servers: Servers,
    system: str,
    n: int,
    rep: int,
    warmup: float,
    window: float,
    logs: Path,
    profile: bool = False,
) -> Run:
    run = Run(system, n, rep)
    metrics_port = _free_port() if system.startswith("llmrtc") else None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "OPENAI_"))}
    env.update(
        LIVEKIT_URL=servers.dev.url,
        LIVEKIT_API_KEY=API_KEY,
        LIVEKIT_API_SECRET=API_SECRET,
        OPENAI_API_KEY="sk-bench-not-a-real-key",
        OPENAI_BASE_URL=servers.fake.base_url,
        OPENAI_MODEL="gpt-test",
        LLM_PROVIDER="openai",
        STT_PROVIDER="openai",
        TTS_PROVIDER="openai",
        AGENT_NAME="",
        VAD_MIN_SILENCE_MS="550",
        WORKER_EXECUTOR="thread",
        # measure past the point where it would stop taking rooms (``llmrtc-default``: as shipped)
        WORKER_LOAD_THRESHOLD="1.0",
        WORKER_ROOM_CPU="0.001",
        WORKER_LOAD_MACHINE="false",
        LLMRTC_ENV_FILE=str(logs / "no.env"),
        PYTHONUNBUFFERED="1",
    )
    if metrics_port is not None:
        env["METRICS_PORT"] = str(metrics_port)
        env["METRICS_HOST"] = "127.0.0.1"
    if system == "livekit-process":
        env["LK_EXECUTOR"] = "process"
    if system == "llmrtc-default":
        del env["WORKER_LOAD_THRESHOLD"], env["WORKER_ROOM_CPU"], env["WORKER_LOAD_MACHINE"]
    cmd, cwd = _worker_cmd(system)
    log_path = logs / f"{system.replace('/', '_')}-n{n}-r{rep}.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 120
            while "registered worker" not in log_path.read_text(errors="replace"):
                if worker.poll() is not None or time.monotonic() > deadline:
                    run.error = "worker did not register"
                    return run
                time.sleep(0.2)
            time.sleep(2.0)
            run.rss_idle_mb = _memory_mb(worker.pid)[0]
            run.load_avg = (os.getloadavg()[0], 0.0)
            rooms = [f"cap-{system.split('@')[0]}-{n}-{rep}-{i}" for i in range(n)]
            out = logs / f"humans-{system.replace('/', '_')}-n{n}-r{rep}.json"
            marker = out.with_suffix(".start")
            marker.unlink(missing_ok=True)
            # the humans process reports the window on this clock (monotonic is system-wide on Linux)
            humans = subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "humans",
                    "--url",
                    servers.dev.url,
                    "--rooms",
                    ",".join(rooms),
                    "--warmup",
                    str(warmup),
                    "--window",
                    str(window),
                    "--out",
                    str(out),
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=(logs / f"humans-{n}-{rep}.err").open("wb"),
            )
            deadline = time.monotonic() + 150
            while not marker.exists() or not marker.read_text():
                if time.monotonic() > deadline or humans.poll() is not None:
                    run.error = "humans never started"
                    return run
                time.sleep(0.1)
            measure_from, end_at = json.loads(marker.read_text())
            while time.monotonic() < measure_from:
                time.sleep(0.1)
            cpu0, t0 = tree_cpu_s(worker.pid), time.monotonic()
            spy = None
            if profile:  # py-spy (pip install py-spy): collapsed stacks of every thread, idle ones left out
                prof = logs / f"profile-{system.replace('/', '_')}-n{n}-r{rep}.txt"
                spy = subprocess.Popen(
                    [
                        _py_spy(),
                        "record",
                        "--pid",
                        str(worker.pid),
                        "--duration",
                        str(int(window - 2)),
                        "--rate",
                        "50",
                        "--nonblocking",
                        "--format",
                        "raw",
                        "--output",
                        str(prof),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            unanswered = 0
            while time.monotonic() < end_at:
                load = _worker_load(metrics_port)
                if load is not None:
                    run.worker_load.append(load)
                    unanswered = 0
                elif metrics_port is not None:
                    unanswered += 1
                    if unanswered == 5:  # a worker whose /metrics stopped answering: where it is stuck
                        run.stalled = True
                        _dump_stacks(worker.pid, logs / f"stall-{system.replace('/', '_')}-n{n}-r{rep}.txt")
                time.sleep(1.0)
            cpu1, t1 = tree_cpu_s(worker.pid), time.monotonic()
            run.vad_windows = _vad_windows(metrics_port)
            if spy is not None:
                try:
                    spy.wait(90)
                except subprocess.TimeoutExpired:
                    spy.kill()
            run.rss_mb, run.pss_mb = _memory_mb(worker.pid)
            run.cpu_total = (cpu1 - cpu0) / (t1 - t0)
            run.cpu_per_room = run.cpu_total / n
            run.load_avg = (run.load_avg[0], os.getloadavg()[0])
            humans.wait(60)
            _score(run, json.loads(out.read_text()), measure_from, end_at)
            run.cpu_per_room = run.cpu_total / max(1, n - run.rooms_without_agent)
            if worker.poll() is not None or "FFI Panic" in log_path.read_text(errors="replace"):
                run.crashed = True
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, 15)
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, 9)
                worker.wait(5)
    return run


def _score(run: Run, humans: list[dict[str, Any]], start: float, end: float) -> None:
    for h in humans:
        if "error" in h:
            run.error = h["error"]
            continue
        joined = h["agent_joined"][0] if h["agent_joined"] else None
        if joined is None or joined >= end:
            # refused (the worker was full): the room waits for a worker, which its people see ("Waiting
            # for the assistant to join"); what they said was said to nobody, not a missed turn
            run.rooms_without_agent += 1
        told_busy = any(code == "worker_busy" for _, code in h["errors"])
        utts = h["utterances"]
        for i, (began, ended) in enumerate(utts):
            if began < start or ended > end - HEARD_FOR_S:
                continue  # before the window, or too close to its end to be heard out (the humans leave)
            until = utts[i + 1][0] if i + 1 < len(utts) else ended + PERIOD_S - 1.0
            if joined is None or began < joined:
                run.unserved += 1
                continue
            run.utterances += 1
            first = next((t for t in h["loud"] if ended < t < until), None)
            if first is not None:
                run.answered += 1
                run.latency_ms.append((first - ended) * 1000)
            elif told_busy or any(began <= t < until + 1.0 for t, _ in h["errors"]):
                run.missed_announced += 1
            else:
                run.missed_silent += 1


def rescore(out: Path) -> list[Run]:
    """The runs saved in ``out``, scored again from their humans' raw data (kept in ``capacity-logs``)."""
    logs = out.parent / "capacity-logs"
    score_fields = {"latency_ms", "utterances", "answered", "missed_announced", "missed_silent"}
    score_fields |= {"rooms_without_agent", "unserved", "p50", "p95"}
    runs = []
    for saved in json.loads(out.read_text()):
        run = Run(**{k: v for k, v in saved.items() if k not in score_fields})
        run.load_avg = tuple(saved["load_avg"])
        name = f"humans-{run.system.replace('/', '_')}-n{run.n}-r{run.rep}"
        raw, marker = logs / f"{name}.json", logs / f"{name}.start"
        if not run.error and raw.exists() and marker.exists():
            start, end = json.loads(marker.read_text())
            _score(run, json.loads(raw.read_text()), start, end)
            run.cpu_per_room = run.cpu_total / max(1, run.n - run.rooms_without_agent)
        runs.append(run)
    return runs


# ------------------------------------------------------------------------------------------------ report


def _mmm(xs: list[float], fmt: str = "{:.3f}") -> str:
    xs = [x for x in xs if x == x]
    if not xs:
        return "-"
    return "/".join(fmt.format(v) for v in (min(xs), statistics.median(xs), max(xs)))


def report(runs: list[Run]) -> str:
    lines = [
        "| system | N | CPU/room (cores) | RSS MB | PSS MB | idle RSS MB | p50 ms | p95 ms | answered/utterances | "
        "missed (announced/silent) | rooms refused (utterances unserved) | worker crashed | llmrtc load | load avg |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    keys = sorted({(r.system, r.n) for r in runs}, key=lambda k: (k[1], k[0]))
    for system, n in keys:
        rs = [r for r in runs if r.system == system and r.n == n and not r.error]
        if not rs:
            lines.append(
                f"| {system} | {n} | failed: {[r.error for r in runs if r.system == system and r.n == n]} |"
            )
            continue
        whole = [
            r for r in rs if not r.crashed
        ] or rs  # a crashed worker's CPU and memory cover part of the run
        lines.append(
            f"| {system} | {n} | {_mmm([r.cpu_per_room for r in whole])} | "
            f"{_mmm([r.rss_mb for r in whole], '{:.0f}')} | "
            f"{_mmm([r.pss_mb for r in whole], '{:.0f}')} | {_mmm([r.rss_idle_mb for r in whole], '{:.0f}')} | "
            f"{_mmm([r.p50 for r in rs], '{:.0f}')} | {_mmm([r.p95 for r in rs], '{:.0f}')} | "
            f"{sum(r.answered for r in rs)}/{sum(r.utterances for r in rs)} | "
            f"{sum(r.missed_announced for r in rs)}/{sum(r.missed_silent for r in rs)} | "
            f"{sum(r.rooms_without_agent for r in rs)} ({sum(r.unserved for r in rs)}) | "
            f"{sum(r.crashed for r in rs)}/{len(rs)} | "
            f"{_mmm([max(r.worker_load) for r in rs if r.worker_load], '{:.2f}')} | "
            f"{_mmm([r.load_avg[0] for r in rs], '{:.1f}')}->{_mmm([r.load_avg[1] for r in rs], '{:.1f}')} |"
        )
    lines.append("")
    lines.append(
        "min/median/max over the repetitions (CPU and memory: of the runs whose worker did not crash); CPU: cores "
        "used by the worker's process tree / rooms it served."
    )
    skipped = [
        r.vad_windows.get("skipped", 0.0) / total for r in runs if (total := sum(r.vad_windows.values())) > 0
    ]
    if skipped:
        lines.append(
            f"llmrtc VAD windows scored as silence without a model call (VAD_SILENCE_FLOOR_DBFS): "
            f"{_mmm([100 * x for x in skipped], '{:.0f}')} % of the windows judged (min/median/max over runs)."
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd")
    h = sub.add_parser("humans")
    h.add_argument("--url", required=True)
    h.add_argument("--rooms", required=True)
    h.add_argument("--warmup", type=float, required=True)
    h.add_argument("--window", type=float, required=True)
    h.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--systems", nargs="+", default=["llmrtc", "livekit"])
    parser.add_argument("--warmup", type=float, default=6.0)
    parser.add_argument("--window", type=float, default=21.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "capacity.json")
    parser.add_argument(
        "--settle",
        type=float,
        default=0.2,
        help="before each run, wait (at most 90 s) until the machine is less than this share busy; 0: don't",
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the worker (collapsed stacks in the logs)"
    )
    parser.add_argument(
        "--rescore", action="store_true", help="score the runs saved in --out again (no new run)"
    )
    args = parser.parse_args()
    if args.cmd == "humans":
        asyncio.run(_humans(args.url, args.rooms.split(","), args.warmup, args.window, args.out))
        return 0
    if args.rescore:
        print(report(rescore(args.out)))
        return 0
    logs = args.out.parent / "capacity-logs"
    logs.mkdir(parents=True, exist_ok=True)
    servers = Servers()
    runs: list[Run] = []
    try:
        for rep in range(args.reps):
            for n in args.n:
                order = args.systems if (rep + n) % 2 == 0 else list(reversed(args.systems))
                for system in order:
                    if args.settle:
                        _settle(args.settle, 90.0)
                    run = run_once(servers, system, n, rep, args.warmup, args.window, logs, args.profile)
                    runs.append(run)
                    print(
                        f"{system:>10} N={n:<3} rep={rep} cpu/room={run.cpu_per_room:.3f} rss={run.rss_mb:.0f} "
                        f"p50={run.p50:.0f} p95={run.p95:.0f} answered={run.answered}/{run.utterances} "
                        f"missed={run.missed_announced}+{run.missed_silent} refused={run.rooms_without_agent} load={run.load_avg} "
                        f"wload={max(run.worker_load) if run.worker_load else '-'} crashed={run.crashed} "
                        f"stalled={run.stalled} vad={run.vad_windows or '-'} {run.error}",
                        flush=True,
                    )
                    args.out.write_text(
                        json.dumps([asdict(r) | {"p50": r.p50, "p95": r.p95} for r in runs], indent=1)
                    )
    finally:
        servers.close()
    print(report(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
