"""Turn taking through a room: llmrtc's end-of-turn modes side by side with a stock LiveKit Agents session.

One dev server (``signalling.devserver``) and one fake OpenAI-compatible server
(``tests/integration/worker/openai_fake.py``: STT, LLM and TTS answer at once, ``chunk_delay_s=0``: the
fixed provider delay subtracted below is 0 ms) serve every system in the same run:

* ``vad-600``, ``vad-300``: the llmrtc worker with ``TURN_DETECTION=vad`` and ``VAD_MIN_SILENCE_MS`` 600 / 300;
* ``smart-turn``, ``livekit``: the llmrtc worker with that end-of-turn model and ``PREEMPTIVE_GENERATION=true``;
* ``lk-agents``: ``bench/lk_agents_baseline.py``, LiveKit Agents' ``AgentSession`` with Silero VAD, its
  audio turn detector (``inference.TurnDetector(version="v1-mini")``: the same local model as ``livekit``),
  its OpenAI plugins pointed at the same fake, preemptive generation on (its default).

Each system runs as its own worker process; one participant (the official ``livekit`` SDK) joins a room and
plays corpus clips (``tests/fixtures/turn_corpus.py``) into its microphone in real time, each clip in a
room of its own (so a late answer is never taken for the next clip's), and records the agent's audio. Per clip: **end of speech -> first agent audio** (the clip's true end of speech,
from when its first sample went out, to the first loud frame of agent audio at the listener; complete
clips), and for the pause clips whether the agent's audio started before the user had finished (a **false
endpoint**: it answered inside the mid-sentence pause). **CPU**: the worker process's CPU time over the
clips, per user turn (a room's cost per turn: VAD, end-of-turn model, providers' clients, media), and the
end-of-turn model's CPU per decision measured in this process (thread CPU time, median of 20).

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

SYSTEMS: dict[str, dict[str, str]] = {
    "vad-600": {"TURN_DETECTION": "vad", "VAD_MIN_SILENCE_MS": "600"},
    "vad-300": {"TURN_DETECTION": "vad", "VAD_MIN_SILENCE_MS": "300"},
    "smart-turn": {"TURN_DETECTION": "smart-turn", "PREEMPTIVE_GENERATION": "true"},
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


async def play(human: Human, clip: Clip, wav: Path) -> dict[str, Any]:
    await quiet(human)
    t0 = time.monotonic()
    await human.say(wav, wait=False)
    end_of_speech = t0 + clip.speech_end_s
    deadline = t0 + clip.duration_s + 5.0
    first: float | None = None
    while time.monotonic() < deadline:
        loud = human.loud_after(t0 + 0.05, LOUD)
        if loud:
            first = loud[0].at
            break
        await asyncio.sleep(0.02)
    row: dict[str, Any] = {"clip": clip.id, "kind": clip.kind, "voice": clip.voice}
    if first is None:
        row["answered"] = False
        return row
    row["answered"] = True
    row["latency_s"] = first - end_of_speech - FIXED_DELAY_S
    row["false_endpoint"] = first < end_of_speech
    await asyncio.sleep(max(0.0, t0 + clip.duration_s - time.monotonic()))
    return row


async def run_system(
    name: str, dev: DevServer, fake: OpenAIFake, clips: list[tuple[Clip, Path]], tmp: Path, run: int
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
                rows.append(await play(human, clip, wav))
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
    table: dict[str, Any] = {}
    for name in SYSTEMS:
        runs = [r for r in results if r["system"] == name]
        if not runs:
            continue
        p50s, p95s, fes, cpus, unanswered = [], [], [], [], 0
        for r in runs:
            lat = [x["latency_s"] for x in r["rows"] if x["kind"] == "complete" and x.get("answered")]
            lat = [x for x in lat if x >= 0]
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
            "cpu_ms_per_turn": mmm(cpus),
            "unanswered": unanswered,
        }
    return table


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    # the servers run on a loop of their own, so waiting for a worker here never stalls them
    bg = BackgroundLoop()
    dev = DevServer("127.0.0.1", 0, API_KEY, API_SECRET)
    fake = OpenAIFake(default_transcript="What is the weather like today?", default_reply="It is sunny.")
    fake.chunk_delay_s = FIXED_DELAY_S
    bg.run(dev.start())
    bg.run(fake.start())
    results: list[dict[str, Any]] = []
    load: list[tuple[float, float, float]] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-turns-"))
    try:
        for run in range(args.runs):
            chosen = pick("complete", args.clips, run) + pick("pause", args.clips, run)
            clips = [(c, write_wav(tmp / f"{c.id}.wav", load_clip(c))) for c in chosen]
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
    print(
        "system       | p50 ms (min/med/max) | p95 ms | false endpoints % | worker CPU ms/turn | unanswered"
    )
    for name, row in out["table"].items():
        print(
            f"{name:12} | {row['p50_ms']} | {row['p95_ms']} | {row['false_endpoints_pct']} | "
            f"{row['cpu_ms_per_turn']} | {row['unanswered']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
