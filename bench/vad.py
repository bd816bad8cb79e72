"""Silero VAD benchmark: latency, real-time streams per core (unbatched, batched, asyncio), memory.

Each runtime is measured in its own subprocess (so the ONNX numbers carry no torch import). Run pinned to one
core for per-core numbers::

    taskset -c 0 .venv/bin/python bench/vad.py            # both runtimes, markdown table
    taskset -c 0 .venv/bin/python bench/vad.py --runtime onnx --json

Definitions:

* latency: one stream, one 512-sample (32 ms) window per call, p50/p99 over ``--windows`` calls, as CPU
  time of the calling thread (the compute cost) and as wall time (what a shared machine adds);
* real-time streams per core: the largest N for which one 32 ms tick of N streams costs under 32 ms of
  process CPU time (mean over ``--ticks`` ticks; CPU time, not wall time, so that other load on a shared
  machine does not count), found by doubling N then bisecting. *unbatched*: one model call per
  stream; *batched*: all N windows in one ``VADEngine.evaluate`` call (Python gathering included);
  *asyncio*: N streams each awaiting ``VADStream.process`` on one event loop, through the engine's batching
  thread (the path the worker uses), CPU time of the whole process per tick;
* memory: RSS of the process after loading the engine, and RSS added per opened stream (1000 streams).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TICK_S = 0.032


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def speech_windows() -> np.ndarray:
    """Real speech (the multi-sentence fixture) as float32 windows."""
    from tests.fixtures import fixture_path

    with wave.open(str(fixture_path("multi_16k.wav")), "rb") as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    n = len(pcm) // 512
    return (pcm[: n * 512].astype(np.float32) / 32768).reshape(n, 512)


def find_max(fits: Callable[[int], bool], start: int = 8, limit: int = 20000) -> int:
    """Largest n with fits(n), assuming monotonicity: doubling, then bisection."""
    if not fits(1):
        return 0
    lo, hi = 1, start
    while hi <= limit and fits(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, limit + 1)
    while hi - lo > max(1, lo // 50):  # 2% resolution
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def measure(runtime: str, ticks: int, latency_windows: int, tick_ms: float) -> dict[str, Any]:
    rss0 = rss_mb()
    t0 = time.perf_counter()
    from llmrtc.audio.vad import VADEngine

    engine = VADEngine.load(runtime, tick_ms=tick_ms)  # type: ignore[arg-type]
    load_s = time.perf_counter() - t0
    rss_loaded = rss_mb()
    speech = speech_windows()

    # memory per added stream: RSS over 10000 streams (each evaluated once), and the Python-level bytes
    tracemalloc.start()
    before, traced0 = rss_mb(), tracemalloc.get_traced_memory()[0]
    many = [engine.open_stream() for _ in range(10000)]
    engine.process_many([(st, b"\x00" * 1024) for st in many])
    per_stream_kb = (rss_mb() - before) * 1024 / len(many)
    traced_kb = (tracemalloc.get_traced_memory()[0] - traced0) / 1024 / len(many)
    tracemalloc.stop()
    del many

    # latency, one stream
    s = engine.open_stream()
    for i in range(50):
        engine.evaluate([s], speech[i % len(speech)][None])
    lat, wall = [], []
    for i in range(latency_windows):
        w = speech[i % len(speech)][None]
        t, c = time.perf_counter(), time.thread_time()
        engine.evaluate([s], w)
        lat.append(time.thread_time() - c)
        wall.append(time.perf_counter() - t)
    lat.sort()
    wall.sort()
    p50 = lat[len(lat) // 2] * 1000
    p99 = lat[int(len(lat) * 0.99)] * 1000
    wall_p50 = wall[len(wall) // 2] * 1000
    wall_p99 = wall[int(len(wall) * 0.99)] * 1000

    def tick_windows(n: int, k: int) -> np.ndarray:
        idx = (np.arange(n) * 37 + k) % len(speech)  # every stream at a different place in the speech
        return speech[idx]

    def fits_unbatched(n: int) -> bool:
        streams = [engine.open_stream() for _ in range(n)]
        spent = 0.0
        for k in range(ticks):
            ws = tick_windows(n, k)
            t = time.process_time()
            for i, st in enumerate(streams):
                engine.evaluate([st], ws[i : i + 1])
            spent += time.process_time() - t
        return spent / ticks < TICK_S

    def fits_batched(n: int) -> bool:
        streams = [engine.open_stream() for _ in range(n)]
        engine.evaluate(streams, tick_windows(n, 0))
        spent = 0.0
        for k in range(ticks):
            ws = tick_windows(n, k)
            t = time.process_time()
            engine.evaluate(streams, ws)
            spent += time.process_time() - t
        return spent / ticks < TICK_S

    def fits_asyncio(n: int) -> bool:
        streams = [engine.open_stream() for _ in range(n)]
        frames = [
            [(tick_windows(n, k)[i] * 32768).astype("<i2").tobytes() for k in range(ticks + 1)]
            for i in range(n)
        ]

        async def run() -> float:
            await asyncio.gather(*(st.process(frames[i][0]) for i, st in enumerate(streams)))  # warm
            c = time.process_time()
            for k in range(1, ticks + 1):
                await asyncio.gather(*(st.process(frames[i][k]) for i, st in enumerate(streams)))
            return (time.process_time() - c) / ticks

        per_tick = asyncio.run(run())
        for st in streams:
            st.close()
        return per_tick < TICK_S

    unbatched = find_max(fits_unbatched)
    batched = find_max(fits_batched)
    via_asyncio = find_max(fits_asyncio)
    mean_batch = engine.scheduler.mean_batch

    engine.close()
    return {
        "runtime": runtime,
        "load_s": round(load_s, 2),
        "p50_ms": round(p50, 3),
        "p99_ms": round(p99, 3),
        "wall_p50_ms": round(wall_p50, 3),
        "wall_p99_ms": round(wall_p99, 3),
        "streams_unbatched": unbatched,
        "streams_batched": batched,
        "streams_asyncio": via_asyncio,
        "asyncio_mean_batch": round(mean_batch, 1),
        "rss_base_mb": round(rss0, 1),
        "rss_loaded_mb": round(rss_loaded, 1),
        "per_stream_kb": round(per_stream_kb, 2),
        "traced_per_stream_kb": round(traced_kb, 2),
        "tick_ms": tick_ms,
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| runtime | load | CPU p50 / p99 per 32 ms chunk | wall p50 / p99 | real-time streams per core: unbatched | batched "
        "| asyncio (batching thread, tick) | RSS after load | RSS per added stream |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    lines = [
        f"| {r['runtime']} | {r['load_s']} s | {r['p50_ms']} / {r['p99_ms']} ms "
        f"| {r['wall_p50_ms']} / {r['wall_p99_ms']} ms | {r['streams_unbatched']} "
        f"| {r['streams_batched']} | {r['streams_asyncio']} (tick {r['tick_ms']} ms, mean batch {r['asyncio_mean_batch']}) "
        f"| {r['rss_loaded_mb']} MB | {r['per_stream_kb']} KB ({r['traced_per_stream_kb']} KB traced) |"
        for r in rows
    ]
    return head + "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runtime", choices=["onnx", "torch"], help="measure one runtime in this process")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--ticks", type=int, default=30, help="ticks per stream-count trial")
    ap.add_argument("--windows", type=int, default=3000, help="calls for the latency percentiles")
    ap.add_argument("--tick-ms", type=float, default=None, help="batching tick of the asyncio path")
    args = ap.parse_args()
    if args.runtime:
        from llmrtc.audio.vad import DEFAULT_TICK_MS

        tick = DEFAULT_TICK_MS if args.tick_ms is None else args.tick_ms
        rows = [measure(args.runtime, args.ticks, args.windows, tick)]
    else:
        rows = []
        for rt in ("onnx", "torch"):
            cmd = [sys.executable, __file__, "--runtime", rt, "--json", "--ticks", str(args.ticks)]
            cmd += ["--windows", str(args.windows)]
            if args.tick_ms is not None:
                cmd += ["--tick-ms", str(args.tick_ms)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ).stdout
            rows.append(json.loads(out.strip().splitlines()[-1])[0])
    if args.json:
        print(json.dumps(rows))
    else:
        cpu = os.sched_getaffinity(0)
        print(f"# VAD benchmark ({len(cpu)} CPU(s) allowed: {sorted(cpu)})")
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
