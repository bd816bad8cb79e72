"""CPU cost of the development server relaying one audio track to 1, 4 and 16 subscribers.

The server runs in its own process; one official-SDK participant publishes a 48 kHz sine (Opus) and N others
subscribe to it. For each N the script measures the server process's CPU seconds (user + system, psutil) over
a steady-state window and reports them per second of relay (1.0 = one full core).

    .venv/bin/python bench/devserver.py                      # N = 1, 4, 16; 10 s windows
    .venv/bin/python bench/devserver.py --subscribers 1 4 --duration 5 --json out.json
    .venv/bin/python bench/devserver.py --transcode           # comparison: aiortc decodes and re-encodes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
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


async def serve(transcode: bool) -> None:
    """Child process: run a DevServer until killed; print its port on stdout."""
    sys.path.insert(0, str(ROOT))
    from signalling.devserver.media import uninstall_pass_through
    from signalling.devserver.server import DevServer

    logging.basicConfig(level=logging.WARNING)
    server = DevServer(api_key=API_KEY, api_secret=API_SECRET)
    await server.start()
    if transcode:  # for comparison only: aiortc's default decode + re-encode path
        uninstall_pass_through()
    print(server.port, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def _token(identity: str) -> str:
    grants = api.VideoGrants(room_join=True, room=ROOM)
    return api.AccessToken(API_KEY, API_SECRET).with_identity(identity).with_grants(grants).to_jwt()


async def _feed(source: rtc.AudioSource) -> None:
    n = 0
    while True:
        x = np.arange(n, n + 480)
        n += 480
        pcm = (np.sin(2 * np.pi * 440 * x / 48000) * 12000).astype(np.int16)
        await source.capture_frame(rtc.AudioFrame(pcm.tobytes(), 48000, 1, 480))


async def measure(url: str, server_pid: int, subscribers: int, duration: float) -> dict[str, float]:
    """Publisher + ``subscribers`` listeners; server CPU seconds per second over ``duration``."""
    proc = psutil.Process(server_pid)
    rooms: list[rtc.Room] = []
    subscribed = 0
    all_subscribed = asyncio.Event()
    heard = [0.0]  # seconds of non-silent audio at the first listener (proves the relay really flows)
    tasks: list[asyncio.Task[None]] = []

    async def listen(track: rtc.Track) -> None:
        async for event in rtc.AudioStream(track, sample_rate=48000, num_channels=1):
            pcm = np.frombuffer(event.frame.data, dtype=np.int16).astype(np.float64)
            if pcm.size and np.sqrt(np.mean(pcm**2)) > 1000:
                heard[0] += pcm.size / 48000

    def on_subscribed(track: rtc.Track, *_: object) -> None:
        nonlocal subscribed
        subscribed += 1
        if subscribed >= subscribers:
            all_subscribed.set()
        if subscribed == 1:
            tasks.append(asyncio.create_task(listen(track)))

    try:
        publisher = rtc.Room()
        rooms.append(publisher)
        await publisher.connect(url, _token("publisher"))
        for i in range(subscribers):
            room = rtc.Room()
            room.on("track_subscribed", on_subscribed)
            rooms.append(room)
            await room.connect(url, _token(f"listener-{i}"))
        source = rtc.AudioSource(48000, 1)
        track = rtc.LocalAudioTrack.create_audio_track("sine", source)
        await publisher.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
        feeder = asyncio.create_task(_feed(source))
        try:
            await asyncio.wait_for(all_subscribed.wait(), 60)
        except TimeoutError:
            raise RuntimeError(f"only {subscribed} of {subscribers} subscribers got the track") from None
        await asyncio.sleep(2.0)  # steady state
        before = proc.cpu_times()
        heard0 = heard[0]
        wall0 = time.monotonic()
        await asyncio.sleep(duration)
        after = proc.cpu_times()
        wall = time.monotonic() - wall0
        audio = heard[0] - heard0
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
        cpu = (after.user - before.user) + (after.system - before.system)
        return {
            "subscribers": subscribers,
            "cpu_s": cpu,
            "wall_s": wall,
            "cpu_per_s": cpu / wall,
            "heard_s": audio,
        }
    finally:
        for task in tasks:
            task.cancel()
        for room in rooms:
            with contextlib.suppress(Exception):
                await room.disconnect()


async def run(counts: list[int], duration: float, transcode: bool) -> list[dict[str, float]]:
    results = []
    for count in counts:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--serve",
            *(["--transcode"] if transcode else []),
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert child.stdout is not None
            line = await asyncio.wait_for(child.stdout.readline(), 30)
            if not line.strip():
                raise RuntimeError("the development server did not start")
            url = f"ws://127.0.0.1:{int(line)}"
            result = await measure(url, child.pid, count, duration)
            results.append(result)
            print(
                f"1 -> {count:2d} subscribers: {result['cpu_per_s'] * 100:5.1f}% of a core "
                f"({result['cpu_s']:.2f} CPU s in {result['wall_s']:.1f} s; "
                f"first listener heard {result['heard_s']:.1f} s of the sine)",
                flush=True,
            )
        finally:
            child.terminate()
            await asyncio.wait_for(child.wait(), 15)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--duration", type=float, default=10.0, help="measurement window per case (s)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--transcode", action="store_true", help="compare: let aiortc decode and re-encode")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.transcode))
        return
    logging.basicConfig(level=logging.WARNING)
    print(
        f"python {platform.python_version()}, {psutil.cpu_count()} CPUs, {args.duration:.0f} s per case",
        flush=True,
    )
    mode = "decode + re-encode (aiortc default)" if args.transcode else "Opus pass-through"
    print(f"relay mode: {mode}", flush=True)
    results = asyncio.run(run(args.subscribers, args.duration, args.transcode))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
