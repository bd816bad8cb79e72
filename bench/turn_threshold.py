"""Is ``TURN_COMPLETE_THRESHOLD`` the problem, or the corpus? The end-of-turn models' P(complete) on the turn
corpus, and a threshold chosen on one half of it and checked on the other.

Every clip goes through the real listener (Silero VAD, 20 ms frames) with a :class:`TurnSegmenter` whose
policy never calls a turn complete (so a mid-sentence pause never ends it and every probe is seen); the model
runs inline. Per clip: P(complete) when the mid-sentence pause starts (pause clips) and when the speech
ends. With threshold ``t``, a pause clip is a **false endpoint** if its pause probability is at least ``t``
(the pauses are 400-1200 ms, longer than the 250 ms short silence), and a complete clip ends **fast** (after
the short silence, not the long one) if its end probability is at least ``t``.

The clips are split by index: even ones choose ``t`` (the lowest threshold with at most 5 % false
endpoints there, i.e. the most fast turns), odd ones are held out and report what that ``t`` gives. Per
voice family too (Piper: a neural voice; espeak-ng: formant synthesis, flat prosody).

Run::

    .venv/bin/python bench/turn_threshold.py [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmrtc.audio.listener import SpeechListener  # noqa: E402
from llmrtc.audio.segmenter import SegmenterConfig  # noqa: E402
from llmrtc.audio.turn_detection import (  # noqa: E402
    EndOfTurnPolicy,
    TurnDecision,
    TurnEvent,
    TurnSegmenter,
    create_detector,
)
from llmrtc.audio.vad import VADEngine  # noqa: E402
from tests.fixtures.turn_corpus import Clip, corpus, load_clip  # noqa: E402

CONFIG = SegmenterConfig(min_speech_ms=250, pre_roll_ms=200, post_roll_ms=200, max_silence_ms=600)
THRESHOLDS = [round(0.05 * k, 2) for k in range(1, 20)]


def probabilities(kind: str, clips: list[Clip], engine: VADEngine) -> list[dict[str, Any]]:
    if kind == "livekit":
        from worker.eot_livekit import register

        register()
    det = create_detector(kind)  # type: ignore[arg-type]
    assert det is not None
    base = {"smart-turn": 128.0, "livekit": 200.0}[kind]
    policy = EndOfTurnPolicy(min_silence_ms=250, max_silence_ms=1600, complete_threshold=1.0, probe_ms=base)
    rows = []
    for c in clips:
        listener = SpeechListener(config=CONFIG, engine=engine, batched=False)
        events: list[TurnEvent] = []
        listener.segmenter = TurnSegmenter(CONFIG, policy=policy, detector=det, on_event=events.append)
        pcm = load_clip(c)
        for i in range(0, len(pcm), 640):
            listener.push_sync(pcm[i : i + 640])
        listener.close()
        decisions = [e for e in events if isinstance(e, TurnDecision)]
        row: dict[str, Any] = {"clip": c.id, "kind": c.kind, "voice": c.voice}
        if c.kind == "pause" and c.pause_start_s is not None and c.pause_end_s is not None:
            at = [d for d in decisions if c.pause_start_s - 0.15 <= d.silence_start_s <= c.pause_end_s]
            row["p_pause"] = at[0].probability if at else 0.0
        ends = [d for d in decisions if d.silence_start_s >= c.speech_end_s - 0.15]
        row["p_end"] = ends[0].probability if ends else 0.0
        rows.append(row)
    return rows


def rates(rows: list[dict[str, Any]], t: float) -> tuple[float, float]:
    pauses = [r for r in rows if r["kind"] == "pause"]
    completes = [r for r in rows if r["kind"] == "complete"]
    fe = sum(r["p_pause"] >= t for r in pauses) / max(1, len(pauses))
    fast = sum(r["p_end"] >= t for r in completes) / max(1, len(completes))
    return fe, fast


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    engine = VADEngine.load("onnx")
    clips = [c for c in corpus() if c.kind in ("complete", "pause")]
    out: dict[str, Any] = {}
    for kind in ("smart-turn", "livekit"):
        rows = probabilities(kind, clips, engine)
        tune = [r for i, r in enumerate(rows) if i % 2 == 0]
        held = [r for i, r in enumerate(rows) if i % 2 == 1]
        ok = [t for t in THRESHOLDS if rates(tune, t)[0] <= 0.05]
        chosen = min(ok) if ok else 1.0
        result: dict[str, Any] = {"chosen_threshold": chosen}
        for label, subset in (("tune", tune), ("held_out", held)):
            fe, fast = rates(subset, chosen)
            result[label] = {"false_endpoints": round(fe, 3), "fast_complete": round(fast, 3)}
        for family in ("piper", "espeak"):
            fam = [r for r in rows if r["voice"].startswith("piper") == (family == "piper")]
            fe, fast = rates(fam, 0.5 if kind == "smart-turn" else 0.36)
            result[f"{family}_at_default"] = {
                "false_endpoints": round(fe, 3),
                "fast_complete": round(fast, 3),
            }
        result["rows"] = rows
        out[kind] = result
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    for kind, r in out.items():
        print(
            f"{kind}: chosen t={r['chosen_threshold']} tune {r['tune']} held-out {r['held_out']}; "
            f"at the default threshold: piper {r['piper_at_default']}, espeak-ng {r['espeak_at_default']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
