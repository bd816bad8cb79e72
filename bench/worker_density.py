"""Worker density benchmark: what one more room costs a worker process.

Simulates N concurrent rooms in one process and one asyncio loop, with the worker's real per-room pieces and
no network SFU: per room, two humans, each with a :class:`~llmrtc.audio.listener.SpeechListener` on the
process-shared batched Silero engine (:func:`~llmrtc.audio.vad.get_shared_engine`), and one
:class:`~llmrtc.orchestrator.ConversationOrchestrator` with the :mod:`llmrtc.testing` fakes. Every human
sends real speech (the ``multi_16k`` fixture: four sentences with pauses, looped, each human at a different
offset) as 10 ms frames of 16 kHz PCM16 at real-time pace, the frame size LiveKit delivers. As in the worker,
a pump task per human delivers frames and a listener task per human drains them through VAD; an utterance's
end starts a turn (STT, LLM, sentence-streamed TTS played out at real time) when the room's agent is idle,
and barge-in during the answer interrupts it.

For each N, in a fresh subprocess (so RSS has a clean baseline), after a warm-up it measures over a
steady-state window:

* **CPU**: process CPU time (all threads: event loop and the VAD batching thread) / wall time; 100% is one
  core;
* **RSS per room**: (RSS in the window - RSS before the rooms were made) / N;
* **VAD lag**: how far behind real time the VAD results are: each time a listener's ``push`` returns with
  new 32 ms windows evaluated, the time since the frame that completed the last of them arrived (p50, p99,
  max), and whether it grows during the window (mean of the last quarter - mean of the first).

Rooms per core: the largest N that kept up, divided by its CPU share (the average cost of a room at that
load, fixed costs included; conservative, as a room's marginal cost falls with load); a least-squares line
through the CPU shares is printed for reference. Pin to one core for that figure::

    taskset -c 0 .venv/bin/python bench/worker_density.py          # N = 1, 10, 50, 100 (about 2 minutes)
    taskset -c 0 .venv/bin/python bench/worker_density.py --quick  # N = 1, 10, short windows
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import statistics
import subprocess
import sys
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llmrtc.audio import Interruption, SpeechEnd, SpeechListener, encode_wav, get_shared_engine  # noqa: E402
from llmrtc.events import TTSAudioEvent  # noqa: E402
from llmrtc.orchestrator import ConversationOrchestrator, ConversationProviders, OrchestratorConfig  # noqa: E402
from llmrtc.testing import FakeSTT, FakeTTS, ScriptedLLM  # noqa: E402
from tests.fixtures import fixture_path  # noqa: E402

RATE = 16_000
FRAME_MS = 10
FRAME_BYTES = RATE * FRAME_MS // 1000 * 2
WINDOW_BYTES = 512 * 2  # one Silero window (32 ms)
LAG_OK_P99_MS = 100.0
"""The VAD keeps up when the p99 lag stays under this and the lag does not grow during the window."""
LAG_GROWTH_OK_MS = 50.0
ANSWER = "Sure, here is what I found. The table is booked for two at seven tonight. Anything else?"

log = logging.getLogger("bench.worker_density")


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def cpu_jiffies(cpus: set[int]) -> tuple[int, int]:
    """(busy, total) jiffies of ``cpus`` since boot, from /proc/stat (busy: all but idle and iowait)."""
    busy = total = 0
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                values = [int(v) for v in fields[:8]]
                total += sum(values)
                busy += sum(values) - values[3] - values[4]
    return busy, total


def load_speech() -> bytes:
    """The multi-sentence 16 kHz fixture as PCM16 bytes."""
    with wave.open(str(fixture_path("multi_16k.wav")), "rb") as w:
        if w.getframerate() != RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise RuntimeError("multi_16k.wav is not 16 kHz mono PCM16")
        return w.readframes(w.getnframes())


class CachedTTS(FakeTTS):
    """A :class:`FakeTTS` that synthesizes each text once: a remote TTS costs the worker its decoding, not
    the synthesis, so the fake's numpy synthesis should not count as the worker's CPU."""

    def __init__(self, cache: dict[str, bytes], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cache = cache

    def render(self, text: str) -> bytes:
        pcm = self._cache.get(text)
        if pcm is None:
            pcm = self._cache[text] = super().render(text)
        return pcm


@dataclass(slots=True)
class Stats:
    """What all rooms record; ``lags`` holds ``(wall time, lag ms)`` once ``recording`` is set."""

    recording: bool = False
    lags: list[tuple[float, float]] = field(default_factory=list)
    turns: int = 0
    interruptions: int = 0
    turn_errors: int = 0
    frames: int = 0


class Human:
    """One participant: a pump task delivering real-time frames and a listener task running VAD on them."""

    def __init__(self, room: Room, name: str, speech: bytes, offset: int, start: float) -> None:
        self.room = room
        self.name = name
        self.listener = SpeechListener(sample_rate=RATE, name=name)
        self._speech = speech
        self._pos = offset - offset % FRAME_BYTES
        self._start = start
        self._delivered = 0  # bytes delivered (stream time = delivered / 2 / RATE)
        self._consumed = 0
        self._windows = 0
        self._pending = bytearray()
        self._wake = asyncio.Event()
        self.tasks = [
            asyncio.create_task(self._pump(), name=f"pump-{name}"),
            asyncio.create_task(self._listen(), name=f"listen-{name}"),
        ]

    def _frame(self) -> bytes:
        if self._pos + FRAME_BYTES > len(self._speech):
            self._pos = 0
        frame = self._speech[self._pos : self._pos + FRAME_BYTES]
        self._pos += FRAME_BYTES
        return frame

    async def _pump(self) -> None:
        """Delivers every frame when its 10 ms of audio is complete (all due frames at once when late)."""
        frame_s = FRAME_MS / 1000
        while True:
            due = int((time.perf_counter() - self._start) / frame_s) - self._delivered // FRAME_BYTES
            for _ in range(max(0, due)):
                self._pending += self._frame()
                self._delivered += FRAME_BYTES
                self._wake.set()
            next_at = self._start + (self._delivered // FRAME_BYTES + 1) * frame_s
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    async def _listen(self) -> None:
        stats = self.room.stats
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._pending:
                continue
            piece = bytes(self._pending)
            self._pending.clear()
            events = await self.listener.push(piece)
            now = time.perf_counter()
            self._consumed += len(piece)
            stats.frames += len(piece) // FRAME_BYTES
            windows = self._consumed // WINDOW_BYTES  # every complete window has been evaluated now
            if stats.recording and windows > self._windows:
                # the frame that completed the last evaluated window arrived at the end of that frame
                end = -(-windows * WINDOW_BYTES // FRAME_BYTES) * FRAME_BYTES
                stats.lags.append((now, (now - self._start - end / 2 / RATE) * 1000))
            self._windows = windows
            for event in events:
                if isinstance(event, SpeechEnd):
                    self.room.on_speech_end(self, event)
                elif isinstance(event, Interruption):
                    self.room.on_interruption(self)


class Room:
    """Two humans and one orchestrator (fakes: STT, an LLM at 300 ms TTFT and 40 tok/s, a real-time TTS)."""

    def __init__(self, index: int, speech: bytes, stats: Stats, tts_cache: dict[str, bytes], start: float):
        self.stats = stats
        self.name = f"room-{index}"
        providers = ConversationProviders(
            llm=ScriptedLLM(lambda _req: ANSWER, ttft_s=0.3, tokens_per_s=40),
            stt=FakeSTT(lambda _wav: "Please book a table for two at seven."),
            tts=CachedTTS(tts_cache, realtime_factor=1.0, latency_s=0.1),
        )
        self.orchestrator = ConversationOrchestrator(providers, OrchestratorConfig(), session_id=self.name)
        span = len(speech) // 2  # bytes; each human at a different place in the fixture
        self.humans = [
            Human(
                self, f"{self.name}-h{k}", speech, ((index * 7919 + k * span // 2) * 2) % len(speech), start
            )
            for k in range(2)
        ]
        self._turn: asyncio.Task[None] | None = None
        self._turn_id: str | None = None

    def on_speech_end(self, human: Human, event: SpeechEnd) -> None:
        if self._turn is not None and not self._turn.done():
            return  # the agent is busy: the floor policy would queue or drop this utterance
        self._turn = asyncio.create_task(self._run_turn(human.name, encode_wav(event.pcm)))

    def on_interruption(self, human: Human) -> None:
        if self._turn_id is not None and self.orchestrator.interrupt(self._turn_id):
            self.stats.interruptions += 1

    def _set_speaking(self, value: bool) -> None:
        for h in self.humans:
            h.listener.agent_speaking = value

    async def _run_turn(self, speaker: str, wav: bytes) -> None:
        self.stats.turns += 1
        try:
            async for event in self.orchestrator.run_turn_stream(wav, speaker=speaker):
                self._turn_id = event.turn_id
                if isinstance(event, TTSAudioEvent) and not self.humans[0].listener.agent_speaking:
                    self._set_speaking(True)
        except Exception as exc:  # a failed turn is counted, the room goes on
            self.stats.turn_errors += 1
            log.warning("%s: turn failed: %s", self.name, exc)
        finally:
            self._set_speaking(False)
            self._turn_id = None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


async def run_rooms(n: int, warmup_s: float, window_s: float) -> dict[str, Any]:
    """N rooms for ``warmup_s`` + ``window_s`` seconds; measurements over the window."""
    engine = get_shared_engine()
    engine.open_stream().process_sync(b"\x00" * 1024 * 4)  # load and warm the model
    speech = load_speech()
    gc.collect()
    rss_base = rss_mb()
    stats = Stats()
    tts_cache: dict[str, bytes] = {}
    start = time.perf_counter()
    rooms = [Room(i, speech, stats, tts_cache, start) for i in range(n)]
    rss_made = rss_mb()
    await asyncio.sleep(warmup_s)
    stats.recording = True
    cpus = os.sched_getaffinity(0)
    jiffies0 = cpu_jiffies(cpus)
    cpu0, wall0, turns0, frames0 = time.process_time(), time.perf_counter(), stats.turns, stats.frames
    rss_samples = []
    end = wall0 + window_s
    while time.perf_counter() < end:
        await asyncio.sleep(min(1.0, max(0.0, end - time.perf_counter())))
        rss_samples.append(rss_mb())
    cpu1, wall1 = time.process_time(), time.perf_counter()
    jiffies1 = cpu_jiffies(cpus)
    stats.recording = False
    for room in rooms:
        for h in room.humans:
            for task in h.tasks:
                task.cancel()
        if room._turn is not None:
            room._turn.cancel()
    await asyncio.gather(*(t for r in rooms for h in r.humans for t in h.tasks), return_exceptions=True)

    lags = [lag for _, lag in stats.lags]
    quarter = window_s / 4
    first = [lag for t, lag in stats.lags if t < wall0 + quarter]
    last = [lag for t, lag in stats.lags if t >= wall1 - quarter]
    growth = (statistics.fmean(last) - statistics.fmean(first)) if first and last else float("nan")
    rss_window = statistics.median(rss_samples)
    p99 = percentile(lags, 0.99)
    expected_frames = 2 * n * (wall1 - wall0) * 1000 / FRAME_MS
    return {
        "rooms": n,
        "humans": 2 * n,
        "window_s": wall1 - wall0,
        "cpu_share": (cpu1 - cpu0) / (wall1 - wall0),
        # how busy the allowed cores were in all, in cores (ours + other processes')
        "cores_busy": (jiffies1[0] - jiffies0[0]) / max(1, jiffies1[1] - jiffies0[1]) * len(cpus),
        "rss_base_mb": rss_base,
        "rss_made_mb": rss_made,
        "rss_window_mb": rss_window,
        "rss_per_room_kb": (rss_window - rss_base) * 1024 / n,
        "lag_p50_ms": percentile(lags, 0.5),
        "lag_p99_ms": p99,
        "lag_max_ms": max(lags) if lags else float("nan"),
        "lag_growth_ms": growth,
        "frames_ratio": (stats.frames - frames0) / expected_frames,
        "turns": stats.turns - turns0,
        "interruptions": stats.interruptions,
        "turn_errors": stats.turn_errors,
        "keeps_up": bool(lags) and p99 < LAG_OK_P99_MS and growth < LAG_GROWTH_OK_MS,
        "load_avg_1m": os.getloadavg()[0],
        "cpus": sorted(os.sched_getaffinity(0)),
    }


def rooms_per_core(results: list[dict[str, Any]]) -> dict[str, float] | None:
    """The estimate from the runs that kept up.

    ``rooms_per_core``: the largest N that kept up divided by its CPU share, i.e. the average cost per room
    at that load, fixed costs included. Conservative: the marginal cost of a room falls with load (late
    frames reach VAD together, in fewer and larger pushes and batches). ``per_room`` and ``fixed``: a
    least-squares line through the CPU shares, for reference.
    """
    ok = [r for r in results if r["keeps_up"]]
    if not ok:
        return None
    top = max(ok, key=lambda r: r["rooms"])
    out = {"largest_ok": float(top["rooms"]), "rooms_per_core": top["rooms"] / top["cpu_share"]}
    pts = [(float(r["rooms"]), float(r["cpu_share"])) for r in ok]
    if len(pts) >= 2:
        mx = statistics.fmean(x for x, _ in pts)
        my = statistics.fmean(y for _, y in pts)
        out["per_room"] = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
        out["fixed"] = my - out["per_room"] * mx
    return out


def child(n: int, warmup_s: float, window_s: float) -> None:
    logging.basicConfig(level=logging.ERROR)
    print(json.dumps(asyncio.run(run_rooms(n, warmup_s, window_s))))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: N = 1, 10 with short windows")
    parser.add_argument(
        "--rooms", type=int, nargs="+", default=None, help="room counts (default 1 10 50 100)"
    )
    parser.add_argument("--warmup", type=float, default=None, help="seconds before measuring (default 4)")
    parser.add_argument("--window", type=float, default=None, help="seconds measured (default 20)")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    warmup = args.warmup if args.warmup is not None else (1.5 if args.quick else 4.0)
    window = args.window if args.window is not None else (4.0 if args.quick else 20.0)
    if args.child is not None:
        child(args.child, warmup, window)
        return
    counts = args.rooms or ([1, 10] if args.quick else [1, 10, 50, 100])
    results = []
    wall0 = time.perf_counter()
    for n in counts:
        cmd = [sys.executable, __file__, "--child", str(n), "--warmup", str(warmup), "--window", str(window)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"run with {n} rooms failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"{n} rooms done", file=sys.stderr)
    cpus = results[0]["cpus"]
    print(f"\nWorker density (CPUs allowed: {cpus}; {window:.0f} s window after {warmup:.0f} s warm-up)\n")
    print(
        "| rooms | humans | CPU (100% = 1 core) | CPU per room | RSS per room | VAD lag p50 / p99 / max "
        "| lag growth | audio processed | turns | others' load on the cores | keeps up |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        print(
            f"| {r['rooms']} | {r['humans']} | {r['cpu_share'] * 100:.1f}% | {r['cpu_share'] * 100 / r['rooms']:.2f}% "
            f"| {r['rss_per_room_kb']:.0f} KB | {r['lag_p50_ms']:.1f} / {r['lag_p99_ms']:.1f} / "
            f"{r['lag_max_ms']:.1f} ms | {r['lag_growth_ms']:+.1f} ms | {r['frames_ratio'] * 100:.0f}% "
            f"| {r['turns']} | {max(0.0, r['cores_busy'] - r['cpu_share']) * 100:.0f}% "
            f"| {'yes' if r['keeps_up'] else 'NO'} |"
        )
    fit = rooms_per_core(results)
    if fit is None:
        print("\nrooms per core: no run kept up, no estimate")
    else:
        print(
            f"\nlargest load that kept up: {fit['largest_ok']:.0f} rooms => about {fit['rooms_per_core']:.0f} rooms "
            "(2 humans each) per fully used core at that load's average cost per room"
        )
        if "per_room" in fit:
            print(
                f"linear fit of the runs that kept up: {fit['fixed'] * 100:.1f}% + {fit['per_room'] * 100:.2f}% per room"
            )
    loads = ", ".join(f"{r['load_avg_1m']:.1f}" for r in results)
    print(f"(load average at the end of each run: {loads}; ")
    print(f"wall time of the benchmark: {time.perf_counter() - wall0:.0f} s)")
    if args.json:
        print(json.dumps({"runs": results, "fit": fit}, indent=2))


if __name__ == "__main__":
    main()
