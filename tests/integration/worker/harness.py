"""Test harness: the dev server and the fake OpenAI server on a background loop, the worker as a subprocess
(``python -m worker dev``), and human participants driven by the official ``livekit`` Python SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from livekit import api, rtc

from signalling.devserver.server import DevServer
from tests.integration.worker.openai_fake import OpenAIFake

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[3]
API_KEY = "devkey"
API_SECRET = "devsecret-for-worker-tests-0123456789"


class BackgroundLoop:
    """An event loop on its own thread, for servers shared by tests that each run their own loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="servers", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


def provider_env(fake: OpenAIFake) -> dict[str, str]:
    """The environment that points every provider at the fake OpenAI server."""
    return {
        "LLM_PROVIDER": "openai",
        "STT_PROVIDER": "openai",
        "TTS_PROVIDER": "openai",
        "OPENAI_API_KEY": "sk-test-not-a-real-key",
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_MODEL": "gpt-test",
    }


def worker_env(dev: DevServer, fake: OpenAIFake, **settings: str) -> dict[str, str]:
    """A worker on ``dev`` with every provider on ``fake``, automatic dispatch (``AGENT_NAME`` set but empty:
    the tests' tokens name no agent) and jobs on threads; ``settings`` add to it or override it."""
    return {
        "LIVEKIT_URL": dev.url,
        "LIVEKIT_API_KEY": API_KEY,
        "LIVEKIT_API_SECRET": API_SECRET,
        "AGENT_NAME": "",
        "WORKER_EXECUTOR": "thread",
        **provider_env(fake),
        **settings,
    }


@dataclass
class WorkerProcess:
    """``python -m worker dev`` with its output captured to a log file."""

    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    mode: str = "dev"
    """``dev`` or ``start`` (production mode: drains on SIGTERM)."""
    module: str = "worker"
    """The module run with ``python -m`` (an agent script of the tests, e.g. with injected faults)."""
    script: Path | None = None
    """An agent script run as ``python SCRIPT MODE`` (as a user runs ``my_agent.py``), instead of the module."""

    def start(self) -> WorkerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "OPENAI_"))}
        # a loaded test machine is slow, not overloaded: only tests about lateness set a short TURN_LATE_S
        env.setdefault("TURN_LATE_S", "60")
        env.update(self.env)
        env["PYTHONUNBUFFERED"] = "1"
        env["LLMRTC_ENV_FILE"] = str(self.log_path.parent / "no.env")  # hermetic: never a developer's .env
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(self.script), self.mode]
            if self.script is not None
            else [sys.executable, "-m", self.module, self.mode],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_registered(self, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.output()[-4000:]}")
            if "registered worker" in self.output():
                return
            time.sleep(0.2)
        raise TimeoutError(f"worker did not register:\n{self.output()[-4000:]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def token(identity: str, name: str, room: str, attributes: dict[str, str] | None = None) -> str:
    at = (
        api.AccessToken(API_KEY, API_SECRET)
        .with_identity(identity)
        .with_name(name)
        .with_grants(api.VideoGrants(room_join=True, room=room))
    )
    if attributes:
        at = at.with_attributes(attributes)
    return at.to_jwt()


def read_wav(path: Path) -> tuple[bytes, int]:
    with wave.open(str(path)) as wav:
        return wav.readframes(wav.getnframes()), wav.getframerate()


@dataclass
class Heard:
    at: float
    rms: float


@dataclass
class Human:
    """A person in the room: publishes a microphone (speech from WAVs, silence otherwise), records the agent's
    audio loudness over time, the ``llmrtc`` events, ``lk.transcription`` streams and ``lk.agent.state``."""

    url: str
    room_name: str
    identity: str
    name: str
    attributes: dict[str, str] = field(default_factory=dict)
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    transcriptions: list[dict[str, Any]] = field(default_factory=list)
    agent_states: list[str] = field(default_factory=list)
    heard: list[Heard] = field(default_factory=list)
    subscriptions: list[str] = field(default_factory=list)
    """What happened to each remote track: ``subscribed <sid> of <identity>`` or ``failed <sid>: <error>``."""
    speech_out: list[float] = field(default_factory=list)
    """When each utterance's first sample left the microphone (``time.monotonic()``): the moment it was
    captured plus the audio queued ahead of it in the source."""
    jwt: str | None = None
    """A token from elsewhere (the token service); otherwise one is minted with the test keys."""
    microphone: bool = True
    """Publish a microphone (silence between utterances); ``False``: typed messages only, no audio out."""

    async def join(self) -> Human:
        self.room = rtc.Room()
        self._tasks: list[asyncio.Task[None]] = []
        self._speech: asyncio.Queue[bytes] = asyncio.Queue()
        self._speaking_done = asyncio.Event()
        self._event_added = asyncio.Event()
        self.room.on("data_received", self._on_data)
        self.room.on("track_subscribed", self._on_track)
        self.room.on("track_subscription_failed", self._on_track_failed)
        self.room.on("participant_attributes_changed", self._on_attrs)
        self.room.register_text_stream_handler("lk.transcription", self._on_text_stream)
        jwt = self.jwt or token(self.identity, self.name, self.room_name, self.attributes)
        await self.room.connect(self.url, jwt)
        self.source = rtc.AudioSource(16000, 1, queue_size_ms=100)
        if not self.microphone:
            return self
        track = rtc.LocalAudioTrack.create_audio_track("mic", self.source)
        opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await self.room.local_participant.publish_track(track, opts)
        self._tasks.append(asyncio.create_task(self._mic()))
        return self

    async def _mic(self) -> None:
        frame_bytes = 160 * 2
        silence = b"\x00" * frame_bytes
        pending = b""
        while True:
            if not pending and not self._speech.empty():
                pending = self._speech.get_nowait()
                self.speech_out.append(time.monotonic() + self.source.queued_duration)
            if pending:
                chunk, pending = pending[:frame_bytes], pending[frame_bytes:]
                chunk = chunk.ljust(frame_bytes, b"\x00")
                if not pending and self._speech.empty():
                    self._speaking_done.set()
            else:
                chunk = silence
            await self.source.capture_frame(rtc.AudioFrame(chunk, 16000, 1, 160))

    async def say(self, wav: Path, *, wait: bool = True) -> None:
        pcm, rate = read_wav(wav)
        assert rate == 16000, "use the 16 kHz fixtures"
        self._speaking_done.clear()
        self._speech.put_nowait(pcm)
        if wait:
            await self._speaking_done.wait()

    async def send(self, payload: bytes | str) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        await self.room.local_participant.publish_data(data, reliable=True, topic="llmrtc")

    def _on_data(self, packet: rtc.DataPacket) -> None:
        if packet.topic != "llmrtc" or (
            packet.participant is not None
            and packet.participant.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        ):
            return  # only the agent's events (other humans' raw messages are not ours to parse)
        self.events.append((time.monotonic(), json.loads(packet.data)))
        self._event_added.set()

    def _on_attrs(self, changed: dict[str, str], participant: rtc.Participant) -> None:
        state = changed.get("lk.agent.state")
        if state:
            self.agent_states.append(state)

    def _on_text_stream(self, reader: rtc.TextStreamReader, sender: str) -> None:
        async def read() -> None:
            text = await reader.read_all()
            self.transcriptions.append(
                {"sender": sender, "text": text, "attributes": dict(reader.info.attributes)}
            )

        self._tasks.append(asyncio.create_task(read()))

    def _on_track(
        self, track: rtc.Track, pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        self.subscriptions.append(f"subscribed {pub.sid} of {participant.identity}")
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            self._tasks.append(asyncio.create_task(self._listen(track)))

    def _on_track_failed(self, participant: rtc.RemoteParticipant, track_sid: str, error: str) -> None:
        self.subscriptions.append(f"failed {track_sid} of {participant.identity}: {error}")

    async def _listen(self, track: rtc.Track) -> None:
        stream = rtc.AudioStream(track, sample_rate=24000, num_channels=1)
        try:
            async for ev in stream:
                samples = np.frombuffer(bytes(ev.frame.data), dtype=np.int16).astype(np.float32)
                rms = float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0
                self.heard.append(Heard(time.monotonic(), rms))
        finally:
            await stream.aclose()

    def types(self) -> list[str]:
        return [e["type"] for _, e in self.events]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for _, e in self.events if e["type"] == kind]

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], within: float = 30.0, start: int = 0
    ) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + within
        seen = start
        while True:
            for at, event in self.events[seen:]:
                if predicate(event):
                    return at, event
            seen = max(seen, len(self.events))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.identity}: no matching event; got {self.types()}")
            self._event_added.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._event_added.wait(), min(remaining, 0.5))

    async def wait_agent_state(self, state: str, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while state not in self.agent_states:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.identity}: agent never {state!r}; states {self.agent_states}")
            await asyncio.sleep(0.1)

    async def wait_loud(self, since: float, frames: int = 20, within: float = 5.0) -> list[Heard]:
        """Wait until ``frames`` loud frames of agent audio were heard after ``since`` (audio lags events)."""
        deadline = time.monotonic() + within
        while len(loud := self.loud_after(since)) < frames:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.identity}: heard {len(loud)} loud frames of agent audio, wanted {frames}"
                    f" ({len(self.heard)} frames in all; tracks: {self.subscriptions or 'none subscribed'})"
                )
            await asyncio.sleep(0.1)
        return loud

    def loud_after(self, start: float, threshold: float = 300.0) -> list[Heard]:
        return [h for h in self.heard if h.at >= start and h.rms > threshold]

    async def leave(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.room.disconnect()
        with contextlib.suppress(Exception):
            await self.source.aclose()


__all__ = ["API_KEY", "API_SECRET", "BackgroundLoop", "Human", "WorkerProcess", "provider_env", "token"]


# ------------------------------------------------------------------------------------------ several workers


def dispatch_token(identity: str, name: str, room: str, agent: str = "llmrtc-agent") -> str:
    """A participant token that dispatches the agent by name, as the token service's do."""
    config = api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=agent)])
    return (
        api.AccessToken(API_KEY, API_SECRET)
        .with_identity(identity)
        .with_name(name)
        .with_grants(api.VideoGrants(room_join=True, room=room))
        .with_room_config(config)
        .to_jwt()
    )


async def wait_until(probe: Callable[[], T | None], within: float, what: str) -> T:
    """Poll ``probe`` until it gives something truthy (its value), or time out naming ``what``."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {within:.0f} s for {what}")
        await asyncio.sleep(0.1)


def ready_agent(human: Human, exclude: str = "") -> rtc.RemoteParticipant | None:
    """The room's agent participant once it listens (not ``exclude``), or ``None``."""
    for p in human.room.remote_participants.values():
        if (
            p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
            and p.identity != exclude
            and p.attributes.get("lk.agent.state") == "listening"
        ):
            return p
    return None


def serving_worker(workers: dict[str, WorkerProcess], agent_identity: str) -> str | None:
    """The worker whose log shows it joined as ``agent_identity`` (``agent-<job id>``), when exactly one does."""
    job = agent_identity.removeprefix("agent-")
    found = [name for name, proc in workers.items() if job in proc.output()]
    return found[0] if len(found) == 1 else None


def said(request: dict[str, Any]) -> list[tuple[str, str]]:
    """The user and assistant messages of a recorded chat request, as (role, content)."""
    return [(m["role"], m["content"]) for m in request["messages"] if m["role"] in ("user", "assistant")]


@contextlib.contextmanager
def running_worker(env: dict[str, str], log: Path, module: str = "worker") -> Iterator[WorkerProcess]:
    """``python -m MODULE dev`` (the worker, or an agent script of the tests) with ``env``, registered;
    stopped afterwards (its log's tail printed, for a failing test's report)."""
    proc = WorkerProcess(env, log, module=module).start()
    try:
        proc.wait_registered()
        yield proc
    finally:
        proc.stop()
        print(proc.output()[-6000:])


F = TypeVar("F", bound=OpenAIFake)


@contextlib.contextmanager
def running_servers(fake: F) -> Iterator[tuple[DevServer, F, BackgroundLoop]]:
    """The dev server and ``fake`` started on a background loop, stopped afterwards."""
    bg = BackgroundLoop()
    dev = DevServer("127.0.0.1", 0, API_KEY, API_SECRET)
    bg.run(dev.start())
    bg.run(fake.start())
    try:
        yield dev, fake, bg
    finally:
        bg.run(fake.stop())
        bg.run(dev.stop())
        bg.close()
