"""Video benchmark: what a subscribed camera costs the worker, and whether its audio pipeline keeps up.

A development server runs in this process; for each configuration and run, a *publisher* subprocess (the
official Python SDK) publishes one VP8 camera track of a moving picture at 30 fps, and a *subscriber*
subprocess (the agent side) joins the room, handles the video as configured, and meanwhile runs the worker's
audio path: ``--audio-streams`` humans of real speech (the ``multi_16k`` fixture) fed at real-time pace, one
32 ms window each at a time, through the process-shared batched Silero engine (``VADStream.process`` on
the event loop, as the listeners do). Configurations:

* ``audio``: no video published (the baseline);
* ``subscribed``: the track is subscribed (the SDK receives and decodes it) but nothing reads it;
* ``frames``: :class:`worker.video.VideoFrames` reads it (keeps the freshest frame at ``--fps``), nothing
  is encoded (frames are encoded only when a turn or a ``look`` asks);
* ``eager``: as ``frames``, and every kept frame is also encoded (JPEG, long side 768): the cost of
  encoding at the sampling rate instead of on demand.

Per run, after a warm-up, over ``--seconds``: the subscriber's process CPU time (all threads: event loop,
SDK/WebRTC decoding threads, the VAD batching thread and the encoding thread) over wall time (100% = one
core); frames delivered and kept per second; and VAD lag: for each 32 ms window, the time from when it was
due (its real-time arrival) to when its VAD probability came back (p50, p99, max). Each line is
min / median / max over ``--runs`` runs; the 1-minute load average is printed with each run (the machine is
shared). Also printed: the CPU time of one on-demand encoding (convert + downscale + JPEG) per size.

    .venv/bin/python bench/video.py                      # 640x480 and 1280x720, 3 runs each (~5 minutes)
    .venv/bin/python bench/video.py --runs 1 --seconds 5 # quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

API_KEY = "devkey"
API_SECRET = "bench-video-secret-of-32-bytes!!!!"
ROOM = "bench-video"
SELF = str(Path(__file__).resolve())
WINDOW = 512  # one Silero window at 16 kHz (32 ms)
WINDOW_S = WINDOW / 16000


def token(identity: str) -> str:
    import datetime

    from livekit import api

    return (
        api.AccessToken(API_KEY, API_SECRET)
        .with_identity(identity)
        .with_ttl(datetime.timedelta(minutes=30))
        .with_grants(api.VideoGrants(room_join=True, room=ROOM))
        .to_jwt()
    )


def camera_frames(width: int, height: int, count: int = 30) -> list[Any]:
    """``count`` I420 frames of a camera-like moving picture: a gradient, a word, a moving block and sensor
    noise (so that VP8 has real work, as with a camera)."""
    from livekit import rtc
    from PIL import Image, ImageDraw, ImageFont

    x = np.linspace(0, 255, width, dtype=np.float32)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    base = np.stack(
        [np.broadcast_to(x, (height, width)), np.broadcast_to(y, (height, width)), (x + y) / 2], -1
    )
    font = ImageFont.load_default(size=height // 6)
    frames = []
    rng = np.random.default_rng(7)
    for k in range(count):
        image = Image.fromarray(base.astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(image)
        draw.text((width // 8, height // 3), "CAMERA", fill=(255, 255, 255), font=font)
        side = height // 5
        left = (k * width // count) % (width - side)
        draw.rectangle((left, height - side - 10, left + side, height - 10), fill=(220, 30, 30))
        noisy = np.asarray(image, dtype=np.int16) + rng.integers(-6, 7, (height, width, 3), dtype=np.int16)
        rgba = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB").convert("RGBA")
        frame = rtc.VideoFrame(width, height, rtc.VideoBufferType.RGBA, bytearray(rgba.tobytes()))
        frames.append(frame.convert(rtc.VideoBufferType.I420))
    return frames


# --------------------------------------------------------------------------------------------- roles


async def publish(url: str, width: int, height: int) -> None:
    from livekit import rtc

    room = rtc.Room()
    await room.connect(url, token("publisher"))
    source = rtc.VideoSource(width, height)
    track = rtc.LocalVideoTrack.create_video_track("camera", source)
    options = rtc.TrackPublishOptions(
        source=rtc.TrackSource.SOURCE_CAMERA,
        video_codec=rtc.VideoCodec.VP8,
        simulcast=False,  # the development server does not negotiate simulcast
        video_encoding=rtc.VideoEncoding(max_bitrate=2_500_000, max_framerate=30),
        degradation_preference=rtc.DegradationPreference.MAINTAIN_RESOLUTION,
    )
    await room.local_participant.publish_track(track, options)
    frames = camera_frames(width, height)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    start = loop.time()
    k = 0
    while True:
        source.capture_frame(frames[k % len(frames)])
        k += 1
        await asyncio.sleep(max(0.0, start + k / 30 - loop.time()))


def speech() -> np.ndarray:
    from tests.fixtures import fixture_path

    with wave.open(str(fixture_path("multi_16k.wav")), "rb") as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    n = len(pcm) // WINDOW
    return pcm[: n * WINDOW].reshape(n, WINDOW)


async def subscribe(
    url: str, mode: str, seconds: float, warmup: float, audio_streams: int, fps: float
) -> None:
    from livekit import rtc

    from llmrtc.audio.vad import get_shared_engine
    from llmrtc.vision import VisionConfig
    from worker.video import VideoFrames

    room = rtc.Room()
    await room.connect(url, token("agent"), rtc.RoomOptions(auto_subscribe=True))
    frames = VideoFrames(VisionConfig(mode="turn", fps=fps)) if mode in ("frames", "eager") else None
    if frames is not None:
        frames.follow(room)
    subscribed = asyncio.Event()
    room.on("track_subscribed", lambda *a: subscribed.set())
    if mode != "audio":
        await asyncio.wait_for(subscribed.wait(), 30)
        for _ in range(600):  # at most 30 s for the first frame
            if frames is None or any(frames.has_frame(i, s) for i, s in frames.tracks()):
                break
            await asyncio.sleep(0.05)

    engine = get_shared_engine()
    windows = speech()
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    measuring = {"on": False}

    async def human(i: int) -> None:
        stream = engine.open_stream(f"h{i}")
        start = loop.time()
        k = 0
        while True:
            due = start + (k + 1) * WINDOW_S
            await asyncio.sleep(max(0.0, due - loop.time()))
            await stream.process(windows[(k + i * 97) % len(windows)].tobytes())
            if measuring["on"]:
                lags.append((loop.time() - due) * 1000)
            k += 1

    async def eager() -> None:
        assert frames is not None
        while True:
            for identity, source in frames.tracks():
                await frames.freshest(identity, source)
            await asyncio.sleep(1 / fps / 4)

    tasks = [asyncio.create_task(human(i)) for i in range(audio_streams)]
    if mode == "eager":
        tasks.append(asyncio.create_task(eager()))
    await asyncio.sleep(warmup)
    stats0 = dict(frames.stats) if frames is not None else {}
    measuring["on"] = True
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    measuring["on"] = False
    stats = {k: (v - stats0.get(k, 0)) / wall for k, v in frames.stats.items()} if frames is not None else {}
    size = ""
    if frames is not None:
        latest = next(iter(frames._tracks.values())).latest
        size = f"{latest.frame.width}x{latest.frame.height}" if latest is not None else ""
    for t in tasks:
        t.cancel()
    lags.sort()
    print(
        json.dumps(
            {
                "cpu_pct": 100 * cpu / wall,
                "lag_p50_ms": lags[len(lags) // 2],
                "lag_p99_ms": lags[int(len(lags) * 0.99)],
                "lag_max_ms": lags[-1],
                "windows": len(lags),
                "received_fps": stats.get("received", 0.0),
                "kept_fps": stats.get("sampled", 0.0),
                "encoded_per_s": stats.get("encoded", 0.0),
                "received_size": size,
            }
        ),
        flush=True,
    )
    if frames is not None:
        await frames.aclose()
    await room.disconnect()


# --------------------------------------------------------------------------------------------- driver


def encode_cost(width: int, height: int, repeat: int = 30) -> float:
    """Median CPU ms of one on-demand encoding (I420 -> RGB -> long side 768 -> JPEG q80)."""
    from worker.video import encode_frame

    frames = camera_frames(width, height, 8)
    spent = []
    for i in range(repeat):
        c = time.thread_time()
        encode_frame(frames[i % len(frames)], max_side=768)
        spent.append((time.thread_time() - c) * 1000)
    return statistics.median(spent)


async def run_once(url: str, mode: str, size: tuple[int, int], args: argparse.Namespace) -> dict[str, Any]:
    me = [sys.executable, SELF]
    publisher = None
    try:
        if mode != "audio":
            publisher = await asyncio.create_subprocess_exec(
                *me,
                "--role",
                "publish",
                "--url",
                url,
                "--width",
                str(size[0]),
                "--height",
                str(size[1]),
                stdout=asyncio.subprocess.PIPE,
            )
            assert publisher.stdout is not None
            line = await asyncio.wait_for(publisher.stdout.readline(), 60)
            assert line.strip() == b"ready", line
        load = os.getloadavg()[0]
        subscriber = await asyncio.create_subprocess_exec(
            *me,
            "--role",
            "subscribe",
            "--url",
            url,
            "--mode",
            mode,
            "--seconds",
            str(args.seconds),
            "--warmup",
            str(args.warmup),
            "--audio-streams",
            str(args.audio_streams),
            "--fps",
            str(args.fps),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(subscriber.communicate(), args.seconds + args.warmup + 90)
        result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        result["load"] = load
        return result
    finally:
        if publisher is not None:
            publisher.kill()
            await publisher.wait()


def spread(values: list[float], digits: int = 1) -> str:
    return " / ".join(f"{v:.{digits}f}" for v in (min(values), statistics.median(values), max(values)))


async def drive(args: argparse.Namespace) -> None:
    from signalling.devserver.server import DevServer

    server = DevServer(api_key=API_KEY, api_secret=API_SECRET)
    await server.start()
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    configs = [("audio", (0, 0))]
    for size in [(640, 480), (1280, 720)]:
        configs += [(mode, size) for mode in ("subscribed", "frames", "eager")]
    try:
        for mode, size in configs:
            label = "-" if mode == "audio" else f"{size[0]}x{size[1]}"
            for r in range(args.runs):
                res = await run_once(server.url, mode, size, args)
                results.setdefault((mode, label), []).append(res)
                print(f"# {mode:10} {label:9} run {r + 1}: {json.dumps(res)}", flush=True)
    finally:
        await server.stop()
    base = statistics.median(r["cpu_pct"] for r in results[("audio", "-")])
    print(
        f"\nsubscriber: {args.audio_streams} real-time VAD streams; video at 30 fps in, kept at {args.fps} fps"
    )
    print("min / median / max over", args.runs, "runs\n")
    print(
        "| video | handling | subscriber CPU (% of a core) | CPU over audio-only (median) | frames in / kept per s "
        "| VAD lag p50 / p99 / max (ms, medians) | worst VAD lag (ms) | load avg |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for (mode, label), rs in results.items():
        cpu = [r["cpu_pct"] for r in rs]
        lag = (
            f"{statistics.median(r['lag_p50_ms'] for r in rs):.1f} / "
            f"{statistics.median(r['lag_p99_ms'] for r in rs):.1f} / {statistics.median(r['lag_max_ms'] for r in rs):.1f}"
        )
        fps = f"{statistics.median(r['received_fps'] for r in rs):.1f} / {statistics.median(r['kept_fps'] for r in rs):.2f}"
        print(
            f"| {label} | {mode} | {spread(cpu)} | {statistics.median(cpu) - base:+.1f} | {fps} | {lag} "
            f"| {max(r['lag_max_ms'] for r in rs):.1f} | {spread([r['load'] for r in rs], 2)} |"
        )
    print()
    for size in [(640, 480), (1280, 720)]:
        print(
            f"on-demand encoding of one {size[0]}x{size[1]} frame: {encode_cost(*size):.1f} ms CPU (median of 30)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--role", choices=["drive", "publish", "subscribe"], default="drive")
    parser.add_argument("--url", default="")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--mode", choices=["audio", "subscribed", "frames", "eager"], default="frames")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=8.0, help="lets bandwidth estimation ramp up")
    parser.add_argument("--audio-streams", type=int, default=4)
    parser.add_argument("--fps", type=float, default=1.0, help="VISION_FPS: frames kept per second")
    args = parser.parse_args()
    if args.role == "publish":
        asyncio.run(publish(args.url, args.width, args.height))
    elif args.role == "subscribe":
        asyncio.run(subscribe(args.url, args.mode, args.seconds, args.warmup, args.audio_streams, args.fps))
    else:
        asyncio.run(drive(args))


if __name__ == "__main__":
    main()
