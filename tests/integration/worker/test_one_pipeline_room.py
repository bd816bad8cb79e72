"""The one pipeline in a real room: what was heard, metrics and hooks, seen from outside the worker.

The worker runs a code-first agent (``recording_agent.py``: the environment's OpenAI providers pointed at
the local fake, hooks that log every hook point) with ``METRICS_PORT=0``. A participant on the official
Python SDK talks to it through the development server.

- After a barge-in, ``tts_cancelled.heard_text`` and the interrupted answer the LLM is given next equal what
  the listener received: the fake TTS makes 55 ms of audio per character, so the audio frames that arrived
  say how far into the answer the listener got; the words derived from that match to within one word.
- ``/metrics`` after two turns holds the turn-latency, STT, TTFT and TTS-first-byte histograms with two
  observations each.
- Every hook point of a turn fires, in the pipeline's order.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from livekit import rtc

from signalling.devserver.server import DevServer
from tests.fixtures import fixture_path
from tests.integration.worker.harness import (
    API_KEY,
    API_SECRET,
    BackgroundLoop,
    Human,
    WorkerProcess,
    provider_env,
)
from tests.integration.worker.openai_fake import SPEECH_RATE, OpenAIFake

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]

Servers = tuple[DevServer, OpenAIFake, BackgroundLoop]
LOUD = 300.0


@dataclass
class Recording:
    """What the worker process is, where its metrics are and where its hooks write."""

    worker: WorkerProcess
    metrics_url: str
    hook_log: Path


def _start(servers: Servers, tmp: Path, executor: str) -> Recording:
    dev, fake, _ = servers
    hook_log = tmp / "hooks.jsonl"
    env = {
        "LIVEKIT_URL": dev.url,
        "LIVEKIT_API_KEY": API_KEY,
        "LIVEKIT_API_SECRET": API_SECRET,
        "AGENT_NAME": "",
        "VAD_MIN_SILENCE_MS": "500",
        "RESUME_FALSE_INTERRUPTION": "false",  # a barge-in cancels the turn at once
        "WORKER_EXECUTOR": executor,
        "METRICS_PORT": "0",
        "METRICS_HOST": "127.0.0.1",
        "HOOK_LOG": str(hook_log),
        **provider_env(fake),
    }
    proc = WorkerProcess(env, tmp / "worker.log", module="tests.integration.worker.recording_agent").start()
    try:
        proc.wait_registered(90)
        port = re.search(r"metrics and health on port (\d+)", proc.output())
        assert port, proc.output()[-3000:]
    except BaseException:
        proc.stop()
        print(proc.output()[-6000:])
        raise
    return Recording(proc, f"http://127.0.0.1:{port.group(1)}/metrics", hook_log)


@pytest.fixture(scope="module")
def recording(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recording]:
    rec = _start(servers, tmp_path_factory.mktemp("one-pipeline"), "thread")
    try:
        yield rec
    finally:
        rec.worker.stop()
        print(rec.worker.output()[-6000:])


@dataclass
class Frame:
    at: float
    rms: float
    samples: int


@dataclass
class Listener(Human):
    """A participant that also keeps the length of every agent audio frame it received."""

    frames: list[Frame] = field(default_factory=list)

    async def _listen(self, track: rtc.Track) -> None:
        stream = rtc.AudioStream(track, sample_rate=24000, num_channels=1)
        try:
            async for ev in stream:
                samples = np.frombuffer(bytes(ev.frame.data), dtype=np.int16).astype(np.float32)
                rms = float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0
                self.frames.append(Frame(time.monotonic(), rms, int(samples.size)))
        finally:
            await stream.aclose()

    def loud_seconds(self, start: float, end: float) -> float:
        """Seconds of loud agent audio received between ``start`` and ``end`` (monotonic)."""
        return sum(f.samples for f in self.frames if start <= f.at < end and f.rms > LOUD) / 24000


async def _ready(human: Human) -> None:
    await human.wait_agent_state("listening", within=60)


def _histogram_counts(text: str, name: str) -> float:
    """The sum of ``name``'s ``_count`` samples over its label sets (Prometheus text format)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}_count"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def _hooks(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def _two_turns_then_metrics(servers: Servers, recording: Recording, room: str, identity: str) -> None:
    """Two spoken turns in ``room``; then ``/metrics`` holds two observations in each turn histogram."""
    dev, fake, _ = servers
    fake.transcripts.extend(["What is the capital of France?", "And the capital of Germany?"])
    fake.replies.extend(["The capital of France is Paris.", "The capital of Germany is Berlin."])
    alice = await Listener(dev.url, room, identity, "Alice").join()
    try:
        await _ready(alice)
        for wav in ("capital_16k", "hello_16k"):
            mark = len(alice.events)
            await alice.say(fixture_path(wav))
            _, end = await alice.wait_for(lambda e: e["type"] == "turn_end", within=60, start=mark)
            assert end["outcome"] == "completed", end
        metrics = await asyncio.to_thread(_scrape, recording.metrics_url)
        for name in (
            "llmrtc_turn_first_audio_ms",
            "llmrtc_stt_duration_ms",
            "llmrtc_llm_ttft_ms",
            "llmrtc_tts_ttfb_ms",
        ):
            assert f"# TYPE {name} histogram" in metrics, name
            assert _histogram_counts(metrics, name) == 2, f"{name}: {_histogram_counts(metrics, name)}"
    finally:
        await alice.leave()


async def test_two_turns_metrics_and_every_hook_point_in_order(
    servers: Servers, recording: Recording
) -> None:
    await _two_turns_then_metrics(servers, recording, "one-pipeline-metrics", "alice-m")
    deadline = time.monotonic() + 20
    while not any(h["hook"] == "on_disconnect" for h in _hooks(recording.hook_log)):
        assert time.monotonic() < deadline, [h["hook"] for h in _hooks(recording.hook_log)]
        await asyncio.sleep(0.2)
    hooks = [h for h in _hooks(recording.hook_log) if h["participant"] in ("alice-m", "Alice", None)]
    names = [h["hook"] for h in hooks]
    print("hook order:", names)
    assert names[0] == "on_connection" and names[-1] == "on_disconnect"
    assert not [n for n in names if n.endswith("_error") or n == "on_error"], names
    turns = [h["turn"] for h in hooks if h["hook"] == "on_turn_start"]
    assert len(turns) == 2
    utterances = [h["turn"] for h in hooks if h["hook"] == "on_stt_start"]
    assert len(utterances) == 2
    for turn, utterance in zip(turns, utterances, strict=True):
        of_turn = [i for i, h in enumerate(hooks) if h["turn"] == turn]
        at: dict[str, list[int]] = {}
        for i in of_turn:
            at.setdefault(hooks[i]["hook"], []).append(i)
        stt = {h["hook"]: i for i, h in enumerate(hooks) if h["turn"] == utterance}
        for point in (
            "on_turn_start",
            "on_llm_start",
            "on_llm_chunk",
            "on_llm_end",
            "on_tts_start",
            "on_tts_chunk",
            "on_tts_end",
            "on_turn_end",
        ):
            assert point in at, f"{point} did not fire for {turn}: {names}"
        speech_end = max(
            i for i, h in enumerate(hooks) if h["hook"] == "on_speech_end" and i < stt["on_stt_start"]
        )
        speech_start = max(
            i for i, h in enumerate(hooks) if h["hook"] == "on_speech_start" and i < speech_end
        )
        assert speech_start < speech_end < stt["on_stt_start"] < stt["on_stt_end"] < at["on_turn_start"][0]
        assert at["on_turn_start"][0] < at["on_llm_start"][0] < min(at["on_llm_chunk"])
        assert max(at["on_llm_chunk"]) < at["on_llm_end"][0]
        assert at["on_llm_end"][0] < at["on_tts_start"][0], "a guardrail hook holds the speech until llm_end"
        assert (
            at["on_tts_start"][0] < min(at["on_tts_chunk"]) <= max(at["on_tts_chunk"]) < at["on_tts_end"][0]
        )
        assert at["on_tts_end"][0] < at["on_turn_end"][0] == max(of_turn)


def _words_received(sentences: list[str], seconds: float, ms_per_char: float) -> int:
    """How many words of ``sentences`` (spoken one after another) ``seconds`` of their audio hold: whole
    sentences count whole, the one being played in proportion to its audio played (the worker's rule
    without word timestamps)."""
    words = 0
    left = seconds
    for sentence in sentences:
        duration = int(max(0.2, len(sentence) * ms_per_char / 1000.0) * SPEECH_RATE) / SPEECH_RATE
        if left >= duration:
            words += len(sentence.split())
            left -= duration
            continue
        return words + int(len(sentence.split()) * max(0.0, left) / duration)
    return words


async def test_barge_in_heard_text_is_what_the_listener_received(
    servers: Servers, recording: Recording
) -> None:
    dev, fake, _ = servers
    long_answer = " ".join(f"This is sentence number {n} of a long answer." for n in range(1, 9))
    fake.transcripts.extend(["Tell me a long story.", "Stop, that is enough."])
    fake.replies.extend([long_answer, "Okay, stopping."])
    alice = Listener(dev.url, "one-pipeline-barge", "alice-b", "Alice")
    await alice.join()
    try:
        await _ready(alice)
        n_speech = len(fake.speech_requests)
        await alice.say(fixture_path("story_16k"))
        first_at, start = await alice.wait_for(lambda e: e["type"] == "tts_start", within=60)
        await asyncio.sleep(1.2)
        mark = len(alice.events)
        await alice.say(fixture_path("hello_16k"), wait=False)
        _, cancelled = await alice.wait_for(lambda e: e["type"] == "tts_cancelled", start=mark, within=30)
        assert cancelled["turn_id"] == start["turn_id"] and cancelled["reason"] == "barge_in"
        heard = cancelled["heard_text"]
        _, ended = await alice.wait_for(
            lambda e: e["type"] == "turn_end" and e["turn_id"] == start["turn_id"], within=30
        )
        assert ended["outcome"] == "cancelled" and ended["heard_text"] == heard
        next_at, nxt = await alice.wait_for(
            lambda e: e["type"] == "tts_start" and e["turn_id"] != start["turn_id"], start=mark, within=60
        )
        await alice.wait_for(lambda e: e["type"] == "turn_end" and e["turn_id"] == nxt["turn_id"], within=60)
        received_s = alice.loud_seconds(first_at - 1.0, next_at)
    finally:
        await alice.leave()
    sentences = [r["input"] for r in fake.speech_requests[n_speech:] if r["input"] in long_answer]
    assert sentences and long_answer.startswith(" ".join(sentences)), "sentence by sentence, in order"
    received_words = _words_received(sentences, received_s, fake.speech_ms_per_char)
    heard_words = heard.split()
    print(
        f"received {received_s:.2f} s = {received_words} words; heard_text has {len(heard_words)}: {heard!r}"
    )
    assert 0 < len(heard_words) < len(long_answer.split()), "the answer was cut part-way"
    assert long_answer.split()[: len(heard_words)] == heard_words, "heard_text is the start of the answer"
    assert abs(len(heard_words) - received_words) <= 1
    # the history the LLM is given next holds exactly the heard part, as the assistant's answer
    request = next(
        r for r in reversed(fake.chat_requests) if r["messages"][-1]["content"] == "Stop, that is enough."
    )
    assistant = [m for m in request["messages"] if m["role"] == "assistant"]
    assert assistant and assistant[-1]["content"] == heard


async def test_metrics_of_job_processes_reach_the_workers_endpoint(servers: Servers, tmp_path: Path) -> None:
    """``WORKER_EXECUTOR=process``: each job has its own process, and ``/metrics`` still counts its turns."""
    recording = await asyncio.to_thread(_start, servers, tmp_path, "process")
    try:
        await _two_turns_then_metrics(servers, recording, "one-pipeline-process", "alice-p")
        pids = {h["pid"] for h in _hooks(recording.hook_log) if h["hook"] == "on_turn_start"}
        assert recording.worker.proc is not None and pids and recording.worker.proc.pid not in pids
    finally:
        recording.worker.stop()
        print(recording.worker.output()[-4000:])
