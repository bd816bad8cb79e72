"""End-of-turn benchmark: CPU per decision, and how each ``TURN_DETECTION`` mode ends turns on the corpus.

Part 1, **CPU per end-of-turn decision** (``smart-turn``, ``livekit``): thread CPU time of one model call
on turn audio from the corpus (the full 8 s window for Smart Turn, 1.2 s for LiveKit), feature extraction
included; for Smart Turn also per decision inside batches of 4 and 8 (what :class:`EndOfTurnRunner` does
when several rooms ask at once). Each run averages ``--decisions`` calls; min/median/max over ``--runs``
runs, with the load average.

Part 2, **decision latency under a burst**: ``--burst`` rooms ask at the same moment through one
:class:`EndOfTurnRunner` thread; wall time until each answer, p50 and max over ``--runs`` bursts.

Part 3, **turns on the corpus** (``tests/fixtures/turn_corpus.py``: complete requests and requests with a
400-1200 ms mid-sentence pause, espeak-ng and Piper voices): every clip goes through the real listener
(Silero VAD, 20 ms frames) with the :class:`TurnSegmenter` of each mode, the model evaluated inline, and the
audio-time outcome is reported:

* **end of speech -> end of turn**: from the clip's true end of speech (last 10 ms frame above -40 dBFS)
  to the stream time at which the utterance ended, p50/p95 (model latency not included: see part 1);
* **false endpoints**: pause clips whose turn ended inside the pause, as a rate;
* **decisions / turn**: model calls per clip; **model CPU / turn**: that times the median CPU per decision.

Run::

    .venv/bin/python bench/turn_detection.py             # both parts (about a minute)
    .venv/bin/python bench/turn_detection.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llmrtc.audio.listener import SpeechListener  # noqa: E402
from llmrtc.audio.segmenter import SegmenterConfig, SpeechEnd  # noqa: E402
from llmrtc.audio.turn_detection import (  # noqa: E402
    DEFAULTS,
    EndOfTurnDetector,
    EndOfTurnPolicy,
    TurnDecision,
    TurnEvent,
    TurnSegmenter,
    create_detector,
)
from llmrtc.audio.vad import VADEngine  # noqa: E402
from tests.fixtures.turn_corpus import Clip, corpus, load_clip  # noqa: E402
from worker.eot_livekit import register as register_livekit_eot  # noqa: E402

register_livekit_eot()  # LiveKit's model is the worker's (llmrtc never imports livekit)
CONFIG = SegmenterConfig(min_speech_ms=250, pre_roll_ms=200, post_roll_ms=200, max_silence_ms=600)
FRAME = 640


def cpu_per_decision(det: EndOfTurnDetector, items: list[bytes], batch: int) -> float:
    """Mean thread CPU seconds per decision over ``items`` (in batches of ``batch``)."""
    started = time.thread_time()
    for i in range(0, len(items), batch):
        part = items[i : i + batch]
        if batch == 1:
            det.predict(part[0])
        else:
            det.predict_batch(part)
    return (time.thread_time() - started) / len(items)


def part1(decisions: int, runs: int) -> list[dict[str, Any]]:
    clips = [c for c in corpus() if c.kind != "backchannel"]
    audio = [load_clip(c)[: round(c.speech_end_s * 16000 + 0.1 * 16000) * 2] for c in clips]
    items = [audio[i % len(audio)] for i in range(decisions)]
    rows = []
    for kind, batches in (("smart-turn", (1, 4, 8)), ("livekit", (1,))):
        try:
            det = create_detector(kind)  # type: ignore[arg-type]
        except Exception as exc:
            print(f"{kind}: not available ({exc})", file=sys.stderr)
            continue
        assert det is not None
        det.predict_batch(items[:2])  # warm up
        for b in batches:
            per_run = [1000 * cpu_per_decision(det, items, b) for _ in range(runs)]
            rows.append(
                {
                    "detector": kind,
                    "batch": b,
                    "cpu_ms_min": min(per_run),
                    "cpu_ms_median": statistics.median(per_run),
                    "cpu_ms_max": max(per_run),
                    "runs": runs,
                    "decisions_per_run": decisions,
                }
            )
    return rows


def part3(burst: int, runs: int) -> list[dict[str, Any]]:
    """Wall latency of decisions asked at the same moment by ``burst`` rooms, through one runner."""
    from llmrtc.audio.turn_detection import EndOfTurnRunner

    clips = [c for c in corpus() if c.kind == "complete"]
    items = [load_clip(c)[: round(c.speech_end_s * 16000 + 0.1 * 16000) * 2] for c in clips]
    rows = []
    for kind in ("smart-turn", "livekit"):
        try:
            det = create_detector(kind)  # type: ignore[arg-type]
        except Exception:
            continue
        assert det is not None
        runner = EndOfTurnRunner(det)
        try:
            for n in (1, burst):
                lat: list[float] = []
                for _ in range(runs):
                    t0 = time.perf_counter()
                    futs = [runner.submit(items[i % len(items)]) for i in range(n)]
                    for f in futs:
                        f.result()
                        lat.append(time.perf_counter() - t0)
                    # latency of each request = when its result was collected (in submission order)
                rows.append(
                    {
                        "detector": kind,
                        "rooms": n,
                        "wall_ms_p50": 1000 * float(np.percentile(lat, 50)),
                        "wall_ms_max": 1000 * max(lat),
                    }
                )
        finally:
            runner.close()
    return rows


def run_clip(
    c: Clip, engine: VADEngine, policy: EndOfTurnPolicy, det: EndOfTurnDetector | None
) -> tuple[list[tuple[float, SpeechEnd]], int]:
    listener = SpeechListener(config=CONFIG, engine=engine, batched=False)
    events: list[TurnEvent] = []
    seg = TurnSegmenter(CONFIG, policy=policy, detector=det, on_event=events.append)
    listener.segmenter = seg
    ends: list[tuple[float, SpeechEnd]] = []
    pcm = load_clip(c)
    for i in range(0, len(pcm), FRAME):
        for ev in listener.push_sync(pcm[i : i + FRAME]):
            if isinstance(ev, SpeechEnd):
                ends.append((seg.time_s, ev))
    listener.close()
    return ends, sum(isinstance(e, TurnDecision) for e in events)


def part2() -> list[dict[str, Any]]:
    engine = VADEngine.load("onnx")
    clips = [c for c in corpus() if c.kind != "backchannel"]
    modes: list[tuple[str, EndOfTurnPolicy, str | None]] = [
        ("vad 600 ms", EndOfTurnPolicy.fixed(600), None),
        ("vad 300 ms", EndOfTurnPolicy.fixed(300), None),
        ("smart-turn", DEFAULTS["smart-turn"], "smart-turn"),
        ("livekit", DEFAULTS["livekit"], "livekit"),
    ]
    rows = []
    for label, policy, kind in modes:
        det = create_detector(kind) if kind else None  # type: ignore[arg-type]
        for voices in ("all", "piper", "espeak-ng"):
            sel = [
                c for c in clips if voices == "all" or (c.voice.startswith("piper") == (voices == "piper"))
            ]
            lat: list[float] = []
            false_ends = pauses = calls = 0
            for c in sel:
                ends, n = run_clip(c, engine, policy, det)
                calls += n
                if c.kind == "pause":
                    pauses += 1
                    assert c.pause_end_s is not None
                    false_ends += any(e.end_s < c.pause_end_s - 0.05 for _, e in ends)
                final = [t for t, e in ends if e.end_s >= c.speech_end_s - 0.1]
                lat.append(final[0] - c.speech_end_s if final else float("nan"))
            ok = [x for x in lat if x == x]
            rows.append(
                {
                    "mode": label,
                    "voices": voices,
                    "clips": len(sel),
                    "end_p50_ms": 1000 * float(np.percentile(ok, 50)),
                    "end_p95_ms": 1000 * float(np.percentile(ok, 95)),
                    "false_endpoints": false_ends,
                    "pause_clips": pauses,
                    "false_endpoint_rate": false_ends / pauses if pauses else 0.0,
                    "decisions_per_turn": calls / len(sel),
                    "policy": policy.model_dump(),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--decisions", type=int, default=40)
    parser.add_argument("--burst", type=int, default=8, help="rooms asking at the same moment (part 2)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()
    cpu = part1(args.decisions, args.runs)
    burst = part3(args.burst, args.runs)
    turns = part2()
    load_after = os.getloadavg()
    cpu_single = {r["detector"]: r["cpu_ms_median"] for r in cpu if r["batch"] == 1}
    for r in turns:
        r["model_cpu_ms_per_turn"] = r["decisions_per_turn"] * cpu_single.get(r["mode"], 0.0)
    out = {
        "cpu_per_decision": cpu,
        "burst": burst,
        "turns": turns,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
    }
    if args.json:
        print(json.dumps(out, indent=1))
        return
    print(
        f"load average before {load_before[0]:.2f} {load_before[1]:.2f}, after {load_after[0]:.2f} {load_after[1]:.2f}"
    )
    print("\nCPU per end-of-turn decision (thread CPU, ms; min / median / max over runs)\n")
    print("| detector | batch | min | median | max |\n|---|---|---|---|---|")
    for r in cpu:
        print(
            f"| {r['detector']} | {r['batch']} | {r['cpu_ms_min']:.1f} | {r['cpu_ms_median']:.1f} | {r['cpu_ms_max']:.1f} |"
        )
    print("\nDecision wall latency when rooms ask at the same moment (one runner thread)\n")
    print("| detector | rooms | p50 (ms) | max (ms) |\n|---|---|---|---|")
    for r in burst:
        print(f"| {r['detector']} | {r['rooms']} | {r['wall_ms_p50']:.0f} | {r['wall_ms_max']:.0f} |")
    print("\nTurns on the corpus (audio time; model latency excluded)\n")
    print(
        "| mode | voices | clips | end of speech -> end of turn p50 / p95 (ms) | false endpoints | decisions/turn | model CPU/turn (ms) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in turns:
        print(
            f"| {r['mode']} | {r['voices']} | {r['clips']} | {r['end_p50_ms']:.0f} / {r['end_p95_ms']:.0f} | "
            f"{r['false_endpoints']}/{r['pause_clips']} ({100 * r['false_endpoint_rate']:.0f}%) | "
            f"{r['decisions_per_turn']:.1f} | {r['model_cpu_ms_per_turn']:.0f} |"
        )


if __name__ == "__main__":
    main()
