"""Talk to a running stack as a Python participant: ``python -m scripts.talk speech.wav``.

Gets a token from the token service (``make dev`` prints its URL), joins the room with the official
``livekit`` SDK, speaks the WAV into it in real time, prints the agent's events as they arrive, measures the
agent's audio, and exits after the agent's answer (or ``--timeout``). Exit status 0 when an answer was both
streamed and heard, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import wave
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from livekit import rtc

FRAME_MS = 20


def read_wav(path: Path) -> tuple[np.ndarray[Any, np.dtype[np.int16]], int]:
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2:
                raise SystemExit(f"{path}: expected 16-bit PCM WAV")
            data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
            if w.getnchannels() > 1:
                data = data.reshape(-1, w.getnchannels())[:, 0].copy()
            return data, w.getframerate()
    except (OSError, wave.Error, EOFError) as exc:
        raise SystemExit(
            f"{path}: cannot read it as a WAV ({exc}); make one with\n"
            f'  espeak-ng -w raw.wav "What is the capital of France?" && sox raw.wav -r 16000 -c 1 -b 16 {path}'
        ) from None


async def fetch_token(url: str, room: str, name: str, api_key: str | None) -> dict[str, Any]:
    headers = {"X-API-Key": api_key} if api_key else {}
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, json={"room": room, "name": name}, headers=headers) as res,
    ):
        body: dict[str, Any] = await res.json()
        if res.status != 200:
            raise SystemExit(f"token service refused: {res.status} {body}")
        return body


async def speak(source: rtc.AudioSource, pcm: np.ndarray[Any, np.dtype[np.int16]], rate: int) -> None:
    """Push the WAV in real time, then a second of silence so the utterance ends."""
    step = rate * FRAME_MS // 1000
    padded = np.concatenate([pcm, np.zeros(rate, dtype=np.int16)])
    for start in range(0, len(padded) - step + 1, step):
        frame = rtc.AudioFrame(padded[start : start + step].tobytes(), rate, 1, step)
        await source.capture_frame(frame)


async def measure(track: rtc.Track, heard: list[float]) -> None:
    """Append the duration of every non-silent frame of the agent's audio."""
    stream = rtc.AudioStream(track, sample_rate=24000, num_channels=1)
    async for event in stream:
        samples = np.frombuffer(event.frame.data, dtype=np.int16)
        if samples.size and float(np.sqrt(np.mean(samples.astype(np.float32) ** 2))) > 300:
            heard.append(samples.size / 24000)


async def run(args: argparse.Namespace) -> int:
    pcm, rate = read_wav(args.wav)
    grant = await fetch_token(args.token_url, args.room, args.name, args.api_key)
    room = rtc.Room()
    answered = asyncio.Event()
    heard: list[float] = []
    tasks: list[asyncio.Task[None]] = []
    streamed: list[str] = []
    t0 = time.monotonic()

    def show(kind: str, detail: str) -> None:
        print(f"{time.monotonic() - t0:6.2f}s  {kind:<13} {detail}", flush=True)

    @room.on("data_received")
    def on_data(packet: rtc.DataPacket) -> None:
        if packet.topic != "llmrtc":
            return
        event = json.loads(packet.data)
        kind = event.get("type", "?")
        if kind == "llm_chunk":
            streamed.append(event["content"])
            return
        detail = event.get("text") or event.get("message") or event.get("turn_id", "")
        show(kind, str(detail))
        if kind in ("tts_complete", "error"):
            answered.set()

    @room.on("track_subscribed")
    def on_track(track: rtc.Track, _pub: rtc.RemoteTrackPublication, who: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            show("agent-track", f"from {who.identity} ({who.name})")
            tasks.append(asyncio.create_task(measure(track, heard)))

    await room.connect(grant["url"], grant["token"])
    show("joined", f"room {grant['room']} as {grant['identity']}")
    try:
        deadline = time.monotonic() + args.timeout
        while not any(
            p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT for p in room.remote_participants.values()
        ):
            if time.monotonic() > deadline:
                show("no-agent", "no agent joined the room")
                return 1
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # let the agent subscribe to our microphone
        source = rtc.AudioSource(rate, 1)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await room.local_participant.publish_track(track, options)
        show("speaking", f"{args.wav} ({len(pcm) / rate:.1f} s)")
        await speak(source, pcm, rate)
        try:
            await asyncio.wait_for(answered.wait(), max(1.0, deadline - time.monotonic()))
        except TimeoutError:
            show("timeout", f"no answer within {args.timeout:.0f} s")
        await asyncio.sleep(0.5)
    finally:
        for task in tasks:
            task.cancel()
        await room.disconnect()
    seconds = sum(heard)
    print(f"\nanswer streamed: {''.join(streamed)!r}\nagent audio heard: {seconds:.1f} s", flush=True)
    return 0 if streamed and seconds > 0.2 else 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.talk", description=__doc__.splitlines()[0])
    parser.add_argument("wav", type=Path, help="16-bit PCM WAV of what to say")
    parser.add_argument("--token-url", default="http://127.0.0.1:8080/api/token")
    parser.add_argument("--api-key", default=None, help="X-API-Key for the token service (not in open mode)")
    parser.add_argument("--room", default="talk-demo")
    parser.add_argument("--name", default="Python")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
