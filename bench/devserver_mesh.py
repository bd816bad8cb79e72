"""A room where everyone hears everyone: N official-SDK participants each publish a sine (Opus) and subscribe
to all the others, so the development server forwards N x (N - 1) streams.

The server runs in its own process (this script with ``--serve``). For each run the script reports how long
until every participant was subscribed to every other (the ``track_subscribed`` events), the server's CPU
(user + system seconds per second, psutil; 1.0 = one core) over a steady-state window, and how much of the
window the first ``--listeners`` participants really heard from each other participant (non-silent audio at
the right pitch, per stream; 100% = every stream played throughout).

    .venv/bin/python bench/devserver_mesh.py                       # N = 10, 3 runs, 10 s windows
    .venv/bin/python bench/devserver_mesh.py --participants 4 10 --runs 3 --json mesh.json
    .venv/bin/python bench/devserver_mesh.py --profile mesh.svg    # py-spy flame graph of the server (.txt: stacks)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
from livekit import api, rtc

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "devkey"
API_SECRET = "bench-secret-bench-secret-bench-secret"
ROOM = "bench"
RATE = 48000


def _token(identity: str) -> str:
    grants = api.VideoGrants(room_join=True, room=ROOM)
    return api.AccessToken(API_KEY, API_SECRET).with_identity(identity).with_grants(grants).to_jwt()


def _frequency(index: int) -> float:
    return 300.0 + 100.0 * index


async def _feed(source: rtc.AudioSource, frequency: float) -> None:
    n = 0
    while True:
        x = np.arange(n, n + 480)
        n += 480
        pcm = (np.sin(2 * np.pi * frequency * x / RATE) * 12000).astype(np.int16)
        await source.capture_frame(rtc.AudioFrame(pcm.tobytes(), RATE, 1, 480))


def _pitch(pcm: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(pcm.size)))
    return float(np.argmax(spectrum) * RATE / pcm.size)


async def measure(url: str, server_pid: int, n: int, duration: float, listeners: int) -> dict[str, float]:
    proc = psutil.Process(server_pid)
    rooms: list[rtc.Room] = []
    feeders: list[asyncio.Task[None]] = []
    tasks: list[asyncio.Task[None]] = []
    subscribed = 0
    everyone = asyncio.Event()
    counting = [False]
    heard: dict[tuple[int, int], float] = {}  # (listener, publisher) -> seconds heard at the right pitch

    async def listen(me: int, other: int, track: rtc.Track) -> None:
        stream = rtc.AudioStream(track, sample_rate=RATE, num_channels=1, frame_size_ms=20)
        want = _frequency(other)
        async for event in stream:
            pcm = np.frombuffer(event.frame.data, dtype=np.int16).astype(np.float64)
            if not counting[0] or not pcm.size:
                continue
            if np.sqrt(np.mean(pcm**2)) > 1000 and abs(_pitch(pcm) - want) < 60:
                heard[(me, other)] = heard.get((me, other), 0.0) + pcm.size / RATE

    def on_subscribed(me: int) -> object:
        def handler(track: rtc.Track, pub: rtc.RemoteTrackPublication, who: rtc.RemoteParticipant) -> None:
            nonlocal subscribed
            subscribed += 1
            if subscribed >= n * (n - 1):
                everyone.set()
            if me < listeners:
                tasks.append(asyncio.create_task(listen(me, int(who.identity.split("-")[1]), track)))

        return handler

    try:
        start = time.monotonic()
        for i in range(n):
            room = rtc.Room()
            room.on("track_subscribed", on_subscribed(i))
            rooms.append(room)
            await room.connect(url, _token(f"p-{i}"))
            source = rtc.AudioSource(RATE, 1)
            track = rtc.LocalAudioTrack.create_audio_track("sine", source)
            await room.local_participant.publish_track(
                track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
            )
            feeders.append(asyncio.create_task(_feed(source, _frequency(i))))
        try:
            await asyncio.wait_for(everyone.wait(), 120)
        except TimeoutError:
            raise RuntimeError(f"only {subscribed} of {n * (n - 1)} subscriptions arrived") from None
        setup = time.monotonic() - start
        await asyncio.sleep(3.0)  # steady state
        counting[0] = True
        me = psutil.Process()
        before, mine0 = proc.cpu_times(), me.cpu_times()
        wall0 = time.monotonic()
        await asyncio.sleep(duration)
        after, mine1 = proc.cpu_times(), me.cpu_times()
        wall = time.monotonic() - wall0
        counting[0] = False
        cpu = (after.user - before.user) + (after.system - before.system)
        per_stream = [
            heard.get((me, other), 0.0) / wall for me in range(listeners) for other in range(n) if other != me
        ]
        return {
            "participants": n,
            "streams": n * (n - 1),
            "setup_s": setup,
            "cpu_per_s": cpu / wall,
            # the participants (official SDK: Opus encode and decode, WebRTC) run in this process
            "client_cpu_per_s": ((mine1.user - mine0.user) + (mine1.system - mine0.system)) / wall,
            "heard_min": min(per_stream),
            "heard_median": statistics.median(per_stream),
            "load_avg_1m": os.getloadavg()[0],
        }
    finally:
        for task in feeders + tasks:
            task.cancel()
        for room in rooms:
            with contextlib.suppress(Exception):
                await room.disconnect()


async def serve() -> None:
    """Child process: a DevServer; prints its port, then (on SIGTERM) its event-loop lag and relay counts."""
    import signal

    sys.path.insert(0, str(ROOT))
    from signalling.devserver import media
    from signalling.devserver.server import DevServer

    backlog = [0]  # the longest queue of packets waiting for a subscriber's sender
    push = media.RelayedTrack.push

    def counting_push(track: media.RelayedTrack, packet: object) -> None:
        push(track, packet)
        backlog[0] = max(backlog[0], track._queue.qsize())

    media.RelayedTrack.push = counting_push  # type: ignore[method-assign]

    logging.basicConfig(level=logging.WARNING)
    server = DevServer(api_key=API_KEY, api_secret=API_SECRET)
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    lags: list[float] = []

    async def watch_loop() -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - before - 0.01)

    def schedstat() -> tuple[int, int]:
        """(ns on a CPU, ns runnable but waiting for one) of the event-loop thread (Linux)."""
        try:
            on_cpu, waiting, _ = Path("/proc/thread-self/schedstat").read_text().split()
            return int(on_cpu), int(waiting)
        except (OSError, ValueError):
            return 0, 0

    watcher = asyncio.create_task(watch_loop())
    print(server.port, flush=True)
    sched0 = schedstat()
    await stop.wait()
    sched1 = schedstat()
    watcher.cancel()
    recent = sorted(lags[len(lags) // 2 :]) or [0.0]  # the second half: steady state
    relays = [
        t.relay for room in server.rooms.list() for p in room.participants.values() for t in p.tracks.values()
    ]
    print(
        json.dumps(
            {
                "loop_lag_p50_ms": recent[len(recent) // 2] * 1000,
                "loop_lag_p99_ms": recent[int(len(recent) * 0.99)] * 1000,
                "loop_lag_max_ms": recent[-1] * 1000,
                "packets_in": sum(r.packets for r in relays if r is not None),
                "max_backlog_packets": backlog[0],
                # the loop thread's time spent runnable but not running: the machine, not the server, is busy
                "loop_waiting_for_cpu": (sched1[1] - sched0[1]) / max(1, sched1[0] - sched0[0]),
            }
        ),
        flush=True,
    )
    await server.stop()


async def _server() -> tuple[asyncio.subprocess.Process, str]:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    line = await asyncio.wait_for(child.stdout.readline(), 30)
    if not line.strip():
        raise RuntimeError("the development server did not start")
    return child, f"ws://127.0.0.1:{int(line)}"


async def run(args: argparse.Namespace) -> list[dict[str, float]]:
    results = []
    for n in args.participants:
        for r in range(args.runs):
            child, url = await _server()
            spy: subprocess.Popen[bytes] | None = None
            if args.profile:
                spy = subprocess.Popen(  # noqa: ASYNC220 (a profiler beside the run, not awaited)
                    [
                        str(Path(sys.executable).parent / "py-spy"),
                        "record",
                        "--pid",
                        str(child.pid),
                        "--output",
                        str(args.profile),
                        "--format",
                        "raw" if args.profile.suffix == ".txt" else "flamegraph",
                        "--rate",
                        "50",
                        "--duration",
                        str(int(args.duration + 25)),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            try:
                result = await measure(url, child.pid, n, args.duration, min(args.listeners, n))
            finally:
                child.terminate()
                assert child.stdout is not None
                stats = await asyncio.wait_for(child.stdout.readline(), 15)
                await asyncio.wait_for(child.wait(), 15)
                if spy is not None:
                    spy.wait(60)
            with contextlib.suppress(ValueError):
                result.update(json.loads(stats))
            results.append(result)
            print(
                f"N={n:2d} ({result['streams']:3.0f} streams) run {r + 1}: all subscribed in "
                f"{result['setup_s']:5.1f} s; server {result['cpu_per_s'] * 100:5.1f}% of a core "
                f"(participants {result['client_cpu_per_s'] * 100:4.0f}%); "
                f"heard per stream min {result['heard_min'] * 100:5.1f}% median "
                f"{result['heard_median'] * 100:5.1f}%; server loop lag p50/p99/max "
                f"{result.get('loop_lag_p50_ms', -1):.1f}/{result.get('loop_lag_p99_ms', -1):.1f}/"
                f"{result.get('loop_lag_max_ms', -1):.0f} ms, waiting for a CPU "
                f"{result.get('loop_waiting_for_cpu', -1):.1f} s per s on it, longest backlog "
                f"{result.get('max_backlog_packets', -1):.0f} packets "
                f"(load avg {result['load_avg_1m']:.1f})",
                flush=True,
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--participants", type=int, nargs="+", default=[10])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="measurement window per run (s)")
    parser.add_argument("--listeners", type=int, default=2, help="participants whose audio is analysed")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy profile of the server: a flame graph (.svg) or collapsed stacks (.txt)",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve())
        return
    logging.basicConfig(level=logging.WARNING)
    print(f"python {platform.python_version()}, {psutil.cpu_count()} CPUs", flush=True)
    results = asyncio.run(run(args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
