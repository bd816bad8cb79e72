"""Turn taking through a room: llmrtc's end-of-turn modes side by side with a stock LiveKit Agents session.

One dev server (``signalling.devserver``) and one fake OpenAI-compatible server
(``tests/integration/worker/openai_fake.py``: STT, LLM and TTS answer at once, ``chunk_delay_s=0``: the
fixed provider delay subtracted below is 0 ms) serve every system in the same run:

* ``vad-600``, ``vad-300``: the llmrtc worker with ``TURN_DETECTION=vad`` and ``VAD_MIN_SILENCE_MS`` 600 / 300;
* ``smart-turn``, ``livekit``: the llmrtc worker with that end-of-turn model and ``PREEMPTIVE_GENERATION=true``
  (and the check of the words, ``TURN_TEXT_CHECK``, on by default with a model); ``smart-turn-audio``: the
  same without the check of the words (the audio model alone);
* ``lk-agents``: ``bench/lk_agents_baseline.py``, LiveKit Agents' ``AgentSession`` with Silero VAD, its
  audio turn detector (``inference.TurnDetector(version="v1-mini")``: the same local model as ``livekit``),
  its OpenAI plugins pointed at the same fake, preemptive generation on (its default).

The fake STT answers what was said (:class:`SaidSTT`): a request with the whole utterance gets the clip's
text; a pause clip's shorter requests get its first half ("I'd like to book a flight to"), then its second
("Paris on Friday."), as a real STT would for the audio before and after the pause. So a system that ends
the turn inside the pause answers the half-sentence, and the worker's check of the words (``TURN_TEXT_CHECK``,
on with a model) sees what a person said.

Each system runs as its own worker process; one participant (the official ``livekit`` SDK) joins a room and
plays corpus clips (``tests/fixtures/turn_corpus.py``) into its microphone in real time, each clip in a
room of its own (so a late answer is never taken for the next clip's), and records the agent's audio. Per clip: **end of speech -> first agent audio** (the clip's true end of speech,
from when its first sample went out, to the first loud frame of agent audio at the listener; complete
clips), and for the pause clips whether the agent's audio started before the user had finished (a **false
endpoint**: it answered inside the mid-sentence pause). **CPU**: the worker process's CPU time over the
clips, per user turn (a room's cost per turn: VAD, end-of-turn model, providers' clients, media), and the
end-of-turn model's CPU per decision measured in this process (thread CPU time, median of 20).

**Transport**: before the systems, in the same run, one participant plays complete clips to another in an
agent-free room of the same dev server; the first loud frame heard after the clip's speech start is the
one-way path (microphone source, Opus, the relay, decode) that every agent's audio also takes twice (the
user's speech in, the answer out). The table reports the latency raw and minus twice the median one-way
figure (an estimate of what the end-of-turn logic and the providers cost, not a measurement of it).

Run::

    .venv/bin/python bench/turn_taking.py --runs 3 --clips 4      # ~25 min; --json for the raw numbers
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from signalling.devserver.server import DevServer  # noqa: E402
from tests.fixtures.turn_corpus import Clip, corpus, load_clip  # noqa: E402
from tests.integration.worker.harness import (  # noqa: E402
    API_KEY,
    API_SECRET,
    BackgroundLoop,
    Human,
    provider_env,
)
from tests.integration.worker.openai_fake import OpenAIFake  # noqa: E402


class SaidSTT(OpenAIFake):
    """The fake, transcribing what the clip said (:meth:`expect` before each clip; see the module doc)."""

    _full = ""
    _halves: tuple[str, str] | None = None
    _full_from_s = 0.0
    _short_seen = 0

    def expect(self, clip: Clip) -> None:
        self._full = clip.text.replace(" ... ", " ")
        self._short_seen = 0
        self._halves = None
        if clip.kind == "pause" and clip.pause_end_s is not None:
            head, tail = clip.text.split(" ... ")
            self._halves = (head, tail[:1].upper() + tail[1:])
            # the worker's audio starts up to 0.3 s before the onset (pre-roll); any request longer than
            # the audio up to the end of the pause (+0.25 s) holds some of the second half: the whole text
            self._full_from_s = (clip.pause_end_s - clip.speech_start_s) + 0.3 + 0.25

    def _pick_transcript(self, duration: float) -> str:
        if self._halves is None or duration >= self._full_from_s:
            return self._full
        self._short_seen += 1
        return self._halves[0] if self._short_seen == 1 else self._halves[1]


SYSTEMS: dict[str, dict[str, str]] = {
    "vad-600": {"TURN_DETECTION": "vad", "VAD_MIN_SILENCE_MS": "600"},
    "vad-300": {"TURN_DETECTION": "vad", "VAD_MIN_SILENCE_MS": "300"},
    "smart-turn": {"TURN_DETECTION": "smart-turn", "PREEMPTIVE_GENERATION": "true"},
    "smart-turn-audio": {
        "TURN_DETECTION": "smart-turn",
        "PREEMPTIVE_GENERATION": "true",
        "TURN_TEXT_CHECK": "false",
    },
    "smart-turn-no-floor": {  # every window to Silero, digital silence too (VAD_SILENCE_FLOOR_DBFS=off)
        "TURN_DETECTION": "smart-turn",
        "PREEMPTIVE_GENERATION": "true",
        "VAD_SILENCE_FLOOR_DBFS": "off",
    },
    "livekit": {"TURN_DETECTION": "livekit", "PREEMPTIVE_GENERATION": "true"},
    "lk-agents": {},
}
FIXED_DELAY_S = 0.0
"""The fakes' fixed delay before the first LLM token (``chunk_delay_s``); STT and TTS answer at once."""
LOUD = 300.0


def pick(kind: str, n: int, offset: int) -> list[Clip]:
    """``n`` clips of ``kind`` spread over the corpus' voices (``offset`` rotates the choice per run)."""
    clips = corpus(kind)  # type: ignore[arg-type]
    step = max(1, len(clips) // n)
    return [clips[(offset + i * step) % len(clips)] for i in range(n)]


def write_wav(path: Path, pcm: bytes) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm)
    return path


def start_worker(name: str, dev: DevServer, fake: OpenAIFake, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "OPENAI_", "TURN_", "VAD_"))}
    env.update(
        {
            "LIVEKIT_URL": dev.url,
            "LIVEKIT_API_KEY": API_KEY,
            "LIVEKIT_API_SECRET": API_SECRET,
            "AGENT_NAME": "",
            "WORKER_EXECUTOR": "thread",
            "PYTHONUNBUFFERED": "1",
            "LLMRTC_ENV_FILE": str(log.parent / "no.env"),
            **provider_env(fake),
            **SYSTEMS[name],
        }
    )
    if name == "lk-agents":
        cmd = [sys.executable, str(ROOT / "bench" / "lk_agents_baseline.py"), "start"]
    else:
        cmd = [sys.executable, "-m", "worker", "start"]
    out = log.open("wb")
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 90
    while "registered worker" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_worker(proc)
            raise RuntimeError(f"{name} worker did not register:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
    return proc


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the worker drains), SIGKILL after 20 s."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


async def quiet(human: Human, within: float = 10.0, gap: float = 1.0) -> None:
    """Wait until no loud agent audio was heard for ``gap`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        loud = human.loud_after(time.monotonic() - gap, LOUD)
        if not loud:
            return
        await asyncio.sleep(0.1)


async def first_loud(human: Human, after: float, until: float) -> float | None:
    """When ``human`` first heard loud audio after ``after`` (``None``: nothing by ``until``)."""
    while time.monotonic() < until:
        loud = human.loud_after(after, LOUD)
        if loud:
            return loud[0].at
        await asyncio.sleep(0.02)
    return None


async def speech_out(human: Human, clip: Clip, wav: Path) -> float:
    """Play ``clip``; when its first sample left the microphone."""
    sent = len(human.speech_out)
    await human.say(wav, wait=False)
    for _ in range(1000):
        if len(human.speech_out) > sent:
            return human.speech_out[-1]
        await asyncio.sleep(0.005)
    raise RuntimeError("the microphone did not take the clip within 5 s")


async def transport_s(url: str, clips: list[tuple[Clip, Path]], run: int) -> list[float]:
    """One-way: a participant's speech onset to the first loud frame another participant hears."""
    speaker = await Human(url, f"bench-transport-{run}", "speaker", "Speaker").join()
    listener = await Human(url, f"bench-transport-{run}", "listener", "Listener").join()
    out: list[float] = []
    try:
        await asyncio.sleep(1.5)  # subscribed, the first packets through
        for clip, wav in clips:
            t0 = await speech_out(speaker, clip, wav)
            onset = t0 + clip.speech_start_s
            heard = await first_loud(listener, onset - 0.2, t0 + clip.duration_s + 2.0)
            if heard is not None:
                out.append(heard - onset)
            await asyncio.sleep(max(0.0, t0 + clip.duration_s + 0.5 - time.monotonic()))
    finally:
        await speaker.leave()
        await listener.leave()
    return out


async def play(human: Human, clip: Clip, wav: Path, fake: SaidSTT) -> dict[str, Any]:
    await quiet(human)
    fake.expect(clip)
    t0 = await speech_out(human, clip, wav)
    end_of_speech = t0 + clip.speech_end_s
    first = await first_loud(human, t0 + 0.05, t0 + clip.duration_s + 5.0)
    row: dict[str, Any] = {"clip": clip.id, "kind": clip.kind, "voice": clip.voice}
    if first is None:
        row["answered"] = False
        return row
    row["answered"] = True
    row["latency_s"] = first - end_of_speech - FIXED_DELAY_S
    row["false_endpoint"] = first < end_of_speech
    # where the time went (llmrtc's events, as the participant received them; none from LiveKit Agents)
    for kind in ("speech_end", "turn_start", "tts_start"):
        at = next((t for t, e in human.events if e["type"] == kind and t >= t0), None)
        if at is not None:
            row[f"{kind}_s"] = at - end_of_speech
    await asyncio.sleep(max(0.0, t0 + clip.duration_s - time.monotonic()))
    return row


async def run_system(
    name: str, dev: DevServer, fake: SaidSTT, clips: list[tuple[Clip, Path]], tmp: Path, run: int
) -> dict[str, Any]:
    """Each clip in a room of its own (a late answer to one clip can never be taken for the next one's)."""
    proc = start_worker(name, dev, fake, tmp / f"{name}-{run}.log")
    ps = psutil.Process(proc.pid)
    rows: list[dict[str, Any]] = []
    cpu = 0.0
    load = os.getloadavg()[0]
    try:
        for i, (clip, wav) in enumerate(clips):
            human = await Human(dev.url, f"bench-{name}-{run}-{i}", "user", "User").join()
            try:
                await human.wait_agent_state("listening", within=60)
                await asyncio.sleep(0.5)
                cpu0 = sum(ps.cpu_times()[:2])
                rows.append(await play(human, clip, wav, fake))
                cpu += sum(ps.cpu_times()[:2]) - cpu0
            finally:
                await human.leave()
            await asyncio.sleep(0.5)
    finally:
        stop_worker(proc)
    return {"system": name, "run": run, "rows": rows, "cpu_s": cpu, "turns": len(rows), "load": load}


def decision_cpu_ms() -> dict[str, float]:
    """Thread CPU per end-of-turn decision on 2 s of corpus audio, median of 20 (after 3 warm-ups)."""
    from llmrtc.audio.turn_detection import create_detector
    from worker.eot_livekit import register

    register()
    pcm = load_clip(corpus("complete")[0])[: 16000 * 2 * 2]
    out: dict[str, float] = {}
    for kind in ("smart-turn", "livekit"):
        det = create_detector(kind)  # type: ignore[arg-type]
        assert det is not None
        times = []
        for k in range(23):
            t = time.thread_time()
            det.predict(pcm)
            if k >= 3:
                times.append((time.thread_time() - t) * 1000)
        out[kind] = statistics.median(times)
    return out


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per system: p50 / p95 of end of speech -> first audio (complete clips), false endpoints (pause
    clips; and complete clips answered before they were over), worker CPU per turn; each as min / median /
    max over the runs."""
    table: dict[str, Any] = {}
    for name in SYSTEMS:
        runs = [r for r in results if r["system"] == name]
        if not runs:
            continue
        p50s, p95s, fes, cpus, unanswered, early = [], [], [], [], 0, 0
        for r in runs:
            answered = [x["latency_s"] for x in r["rows"] if x["kind"] == "complete" and x.get("answered")]
            # an answer that starts before a complete request is over (inside its comma) is a false endpoint
            # too: counted there, not as a latency
            lat = [x for x in answered if x >= 0]
            early += len(answered) - len(lat)
            pauses = [x for x in r["rows"] if x["kind"] == "pause"]
            unanswered += sum(1 for x in r["rows"] if not x.get("answered"))
            if lat:
                p50s.append(statistics.median(lat) * 1000)
                p95s.append(pct(lat, 0.95) * 1000)
            if pauses:
                fes.append(100 * sum(1 for x in pauses if x.get("false_endpoint")) / len(pauses))
            cpus.append(1000 * r["cpu_s"] / max(1, r["turns"]))

        def mmm(v: list[float]) -> list[float]:
            return [round(min(v), 1), round(statistics.median(v), 1), round(max(v), 1)] if v else []

        table[name] = {
            "p50_ms": mmm(p50s),
            "p95_ms": mmm(p95s),
            "false_endpoints_pct": mmm(fes),
            "false_endpoints": sum(
                1 for r in runs for x in r["rows"] if x["kind"] == "pause" and x.get("false_endpoint")
            ),
            "pause_clips": sum(1 for r in runs for x in r["rows"] if x["kind"] == "pause"),
            "complete_answered_early": early,
            "cpu_ms_per_turn": mmm(cpus),
            "unanswered": unanswered,
        }
    return table


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    # the servers run on a loop of their own, so waiting for a worker here never stalls them
    bg = BackgroundLoop()
    dev = DevServer("127.0.0.1", 0, API_KEY, API_SECRET)
    fake = SaidSTT(default_transcript="What is the weather like today?", default_reply="It is sunny.")
    fake.chunk_delay_s = FIXED_DELAY_S
    bg.run(dev.start())
    bg.run(fake.start())
    results: list[dict[str, Any]] = []
    transport: list[float] = []
    load: list[tuple[float, float, float]] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-turns-"))
    try:
        for run in range(args.runs):
            chosen = pick("complete", args.clips, run) + pick("pause", args.clips, run)
            clips = [(c, write_wav(tmp / f"{c.id}.wav", load_clip(c))) for c in chosen]
            transport.extend(await transport_s(dev.url, clips[: args.clips], run))
            for name in args.systems:
                load.append(os.getloadavg())
                res = await run_system(name, dev, fake, clips, tmp, run)
                results.append(res)
                print(f"run {run} {name}: {json.dumps(summarize([res])[name])}", file=sys.stderr, flush=True)
    finally:
        bg.run(fake.stop())
        bg.run(dev.stop())
        bg.close()
    return {
        "results": results,
        "table": summarize(results),
        "transport_one_way_ms": [round(1000 * x) for x in sorted(transport)],
        "decision_cpu_ms": decision_cpu_ms(),
        "loadavg_min_max": [min(x[0] for x in load), max(x[0] for x in load)] if load else [],
        "fixed_delay_ms": FIXED_DELAY_S * 1000,
        "logs": str(tmp),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clips", type=int, default=6, help="complete and pause clips per run (each)")
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"load average (1 min) {out['loadavg_min_max']}; fixed provider delay {out['fixed_delay_ms']} ms")
    print(f"CPU per end-of-turn decision (ms): {out['decision_cpu_ms']}")
    one_way = out["transport_one_way_ms"]
    two_way = 2 * statistics.median(one_way) if one_way else 0.0
    if one_way:
        print(
            f"transport, one way (ms, {len(one_way)} clips): min {one_way[0]} median "
            f"{statistics.median(one_way):.0f} max {one_way[-1]}; subtracted twice ({two_way:.0f} ms) below"
        )
    print(
        "system           | p50 ms (min/med/max) | p50 - transport | p95 ms | false endpoints % (n)"
        " | worker CPU ms/turn | unanswered"
    )
    for name, row in out["table"].items():
        less = [round(x - two_way) for x in row["p50_ms"]]
        print(
            f"{name:16} | {row['p50_ms']} | {less} | {row['p95_ms']} | {row['false_endpoints_pct']} "
            f"({row['false_endpoints']}/{row['pause_clips']}; complete answered early "
            f"{row['complete_answered_early']}) | {row['cpu_ms_per_turn']} | {row['unanswered']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
