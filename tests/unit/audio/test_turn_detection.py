"""End of turn: the policy, the settings, Smart Turn's features, and turns through a real listener.

The turn tests run the real Silero VAD, the real models and the turn corpus (Piper voice clips where the
model's verdict is clear; ``bench/turn_detection.py`` reports the whole corpus).
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from pathlib import Path

import numpy as np
import pytest

from llmrtc.audio.listener import SpeechListener
from llmrtc.audio.segmenter import SegmenterConfig, SpeechEnd
from llmrtc.audio.smart_turn import MAX_SAMPLES, SmartTurnDetector, log_mel, prepare, smart_turn_model_path
from llmrtc.audio.turn_detection import (
    DEFAULTS,
    EndOfTurnDetector,
    EndOfTurnPolicy,
    EndOfTurnRunner,
    TurnDecision,
    TurnDetectionSettings,
    TurnEvent,
    TurnResumed,
    TurnSegmenter,
    create_detector,
)
from llmrtc.audio.vad import VADEngine
from llmrtc.errors import ConfigError
from tests.fixtures.turn_corpus import Clip, corpus, load_clip

CONFIG = SegmenterConfig(min_speech_ms=250, pre_roll_ms=200, post_roll_ms=200, max_silence_ms=600)
FRAME = 640  # 20 ms at 16 kHz, as the worker pushes

_detectors: dict[str, EndOfTurnDetector] = {}


def detector(kind: str) -> EndOfTurnDetector:
    if kind == "livekit":
        pytest.importorskip("livekit.local_inference")
        from worker.eot_livekit import register

        register()  # the worker's detector (llmrtc never imports livekit)
    if kind not in _detectors:
        d = create_detector(kind)  # type: ignore[arg-type]
        assert d is not None
        _detectors[kind] = d
    return _detectors[kind]


def clip(cid: str) -> Clip:
    (c,) = [c for c in corpus() if c.id == cid]
    return c


def run_turns(
    c: Clip, engine: VADEngine, policy: EndOfTurnPolicy, det: EndOfTurnDetector | None, **kw: object
) -> tuple[list[tuple[float, SpeechEnd]], list[TurnEvent]]:
    """Feed a clip through a SpeechListener whose segmenter is a TurnSegmenter; (stream time, end) pairs."""
    listener = SpeechListener(config=CONFIG, engine=engine, batched=False)
    events: list[TurnEvent] = []
    seg = TurnSegmenter(CONFIG, policy=policy, detector=det, on_event=events.append, **kw)  # type: ignore[arg-type]
    listener.segmenter = seg
    ends: list[tuple[float, SpeechEnd]] = []
    pcm = load_clip(c)
    for i in range(0, len(pcm), FRAME):
        for ev in listener.push_sync(pcm[i : i + FRAME]):
            if isinstance(ev, SpeechEnd):
                ends.append((seg.time_s, ev))
        if kw.get("runner") is not None:
            time.sleep(0.004)  # give the runner's thread time, as real-time audio would
    listener.close()
    return ends, events


# ------------------------------------------------------------------------------------------------ policy


def test_policy_waits_short_when_complete_and_long_mid_thought() -> None:
    p = EndOfTurnPolicy(min_silence_ms=200, max_silence_ms=1800, complete_threshold=0.6, probe_ms=64)
    assert p.silence_ms(0.61) == 200 and p.silence_ms(0.6) == 200
    assert p.silence_ms(0.59) == 1800 and p.silence_ms(0.0) == 1800
    assert EndOfTurnPolicy.fixed(600).silence_ms(0.0) == EndOfTurnPolicy.fixed(600).silence_ms(1.0) == 600
    with pytest.raises(ValueError):
        EndOfTurnPolicy(min_silence_ms=900, max_silence_ms=300)
    with pytest.raises(ValueError):
        EndOfTurnPolicy(min_silence_ms=100, probe_ms=200)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    for name in ("TURN_DETECTION", "TURN_MIN_SILENCE_MS", "TURN_MAX_SILENCE_MS", "TURN_COMPLETE_THRESHOLD"):
        monkeypatch.delenv(name, raising=False)
    assert TurnDetectionSettings().detection == "vad"
    assert TurnDetectionSettings().policy(vad_min_silence_ms=600) == EndOfTurnPolicy.fixed(600)
    monkeypatch.setenv("TURN_MIN_SILENCE_MS", "300")
    assert TurnDetectionSettings().policy(vad_min_silence_ms=600) == EndOfTurnPolicy.fixed(300)
    monkeypatch.setenv("TURN_DETECTION", "smart-turn")
    monkeypatch.setenv("TURN_MAX_SILENCE_MS", "")  # blank: unset
    monkeypatch.setenv("TURN_COMPLETE_THRESHOLD", "0.7")
    p = TurnDetectionSettings().policy()
    assert (p.min_silence_ms, p.max_silence_ms, p.complete_threshold) == (
        300,
        DEFAULTS["smart-turn"].max_silence_ms,
        0.7,
    )
    monkeypatch.setenv("TURN_MIN_SILENCE_MS", "40")  # below the probe: the probe follows
    assert TurnDetectionSettings().policy().probe_ms == 40
    monkeypatch.setenv("TURN_MAX_SILENCE_MS", "30")
    with pytest.raises(ConfigError):
        TurnDetectionSettings().policy()
    monkeypatch.setenv("TURN_DETECTION", "magic")
    with pytest.raises(ValueError):
        TurnDetectionSettings()


def test_vad_has_no_model() -> None:
    assert create_detector("vad") is None


# ------------------------------------------------------------------------------------------------ smart turn


def test_smart_turn_features_match_the_reference_implementation() -> None:
    """Our numpy log-mel equals the one shipped next to the model in pipecat (loaded by path, not imported)."""
    ref_path = smart_turn_model_path().parent.parent / "_whisper_features.py"
    spec = importlib.util.spec_from_file_location("smart_turn_reference_features", ref_path)
    assert spec is not None and spec.loader is not None
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    pcm = load_clip(clip("complete_00_0"))
    audio = prepare(pcm)
    assert audio.shape == (MAX_SAMPLES,) and audio[:1000].max() == 0.0  # left-padded
    ours = log_mel(audio)
    assert ours.shape == (80, 800)
    np.testing.assert_allclose(ours, ref.compute_whisper_log_mel_features(audio), atol=1e-5)


def test_smart_turn_batch_equals_single() -> None:
    det = detector("smart-turn")
    assert isinstance(det, SmartTurnDetector) and isinstance(det, EndOfTurnDetector)
    items = [
        load_clip(clip(cid))[: 16000 * 2 * 2] for cid in ("complete_00_0", "pause_08_0", "complete_06_1")
    ]
    single = [det.predict(x) for x in items]
    np.testing.assert_allclose(det.predict_batch(items), single, atol=2e-3)
    assert all(0.0 <= p <= 1.0 for p in single)


# ------------------------------------------------------------------------------------------------ turns


@pytest.mark.parametrize(
    ("kind", "pause_ids", "complete_ids"),
    [
        ("smart-turn", ["pause_08_0", "pause_04_2", "pause_04_0"], ["complete_00_0", "complete_02_1", "complete_06_1"]),
        ("livekit", ["pause_06_1", "pause_04_2", "pause_04_0"], ["complete_08_0", "complete_04_2", "complete_09_3"]),
    ],
)  # fmt: skip
# The clips are ones whose P(complete) sits far from the threshold (the corpus is the same audio in every
# generation: its synthesis is seeded): these tests show the mechanism, not the model's accuracy, which
# bench/turn_taking.py measures over the whole corpus.
def test_pause_holds_the_turn_and_a_complete_request_ends_it_fast(
    onnx_engine: VADEngine, kind: str, pause_ids: list[str], complete_ids: list[str]
) -> None:
    det = detector(kind)
    policy = DEFAULTS[kind]  # type: ignore[index]
    for cid in pause_ids:
        c = clip(cid)
        assert c.voice.startswith("piper") and c.pause_start_s is not None and c.pause_end_s is not None
        ends, events = run_turns(c, onnx_engine, policy, det)
        decisions = [e for e in events if isinstance(e, TurnDecision)]
        at_pause = [d for d in decisions if c.pause_start_s - 0.1 <= d.silence_start_s <= c.pause_end_s]
        assert at_pause and not at_pause[0].complete, (cid, decisions)
        assert at_pause[0].silence_ms == policy.max_silence_ms  # the policy asks for the long silence
        assert any(isinstance(e, TurnResumed) and e.decision == at_pause[0] for e in events)
        assert len(ends) == 1, (cid, [(t, e.end_s) for t, e in ends])  # not cut in the pause
        end = ends[0][1]
        assert (
            end.end_s >= c.speech_end_s - 0.1 and end.start_s <= c.speech_start_s + 0.1
        )  # the whole sentence
    for cid in complete_ids:
        c = clip(cid)
        ends, events = run_turns(c, onnx_engine, policy, det)
        decisions = [e for e in events if isinstance(e, TurnDecision)]
        assert len(ends) == 1 and decisions and decisions[-1].complete, (cid, decisions)
        t, end = ends[0]
        assert abs(end.end_s - c.speech_end_s) < 0.1
        # ends within the short silence (plus one 20 ms frame of granularity), not the long one
        assert t - end.end_s <= (policy.min_silence_ms + 20) / 1000 + 0.032, (cid, t, end.end_s)


def test_a_fixed_short_silence_cuts_the_same_pause(onnx_engine: VADEngine) -> None:
    """The failure the model avoids: TURN_DETECTION=vad with 300 ms ends the turn inside the pause."""
    c = clip("pause_08_0")
    ends, events = run_turns(c, onnx_engine, EndOfTurnPolicy.fixed(300), None)
    assert events == []
    assert len(ends) == 2 and ends[0][1].end_s < c.pause_end_s


def test_runner_batches_across_streams_off_the_loop() -> None:
    det = detector("smart-turn")
    runner = EndOfTurnRunner(det, max_batch=8)
    items = [
        load_clip(clip(cid))[: 16000 * 2 * 3] for cid in ("complete_00_0", "pause_08_0", "complete_06_1")
    ] * 2

    async def ask_all() -> list[float]:
        return list(await asyncio.gather(*(runner.predict(x) for x in items)))

    try:
        probs = asyncio.run(ask_all())
    finally:
        runner.close()
    np.testing.assert_allclose(probs, [det.predict(x) for x in items], atol=2e-3)
    assert runner.decisions == len(items) and runner.calls < len(items)  # batched
    assert runner.cpu_s > 0


def test_turn_segmenter_with_runner(onnx_engine: VADEngine) -> None:
    det = detector("smart-turn")
    runner = EndOfTurnRunner(det)
    try:
        c = clip("complete_00_0")
        ends, events = run_turns(c, onnx_engine, DEFAULTS["smart-turn"], None, runner=runner)
    finally:
        runner.close()
    decisions = [e for e in events if isinstance(e, TurnDecision)]
    assert len(ends) == 1 and decisions and decisions[-1].complete
    assert decisions[-1].latency_s > 0
    assert ends[0][0] - ends[0][1].end_s < DEFAULTS["smart-turn"].max_silence_ms / 1000


def test_runner_with_two_threads_answers_everything_in_order() -> None:
    det = detector("smart-turn")
    runner = EndOfTurnRunner(det, threads=2)
    items = [load_clip(clip(cid))[: 16000 * 2 * 2] for cid in ("complete_00_0", "pause_08_0")] * 3
    try:
        futures = [runner.submit(x) for x in items]
        probs = [f.result(timeout=30) for f in futures]
    finally:
        runner.close()
    np.testing.assert_allclose(probs, [det.predict(x) for x in items], atol=1e-5)
    assert runner.decisions == runner.calls == len(items)
    with pytest.raises(ConfigError):
        EndOfTurnRunner(det, threads=0)


def test_runner_closed_refuses_work() -> None:
    runner = EndOfTurnRunner(detector("smart-turn"))
    runner.close()
    with pytest.raises(Exception, match="closed"):
        runner.submit(b"\x00\x00" * 160)


def test_importing_the_turn_modules_loads_no_livekit_and_no_model() -> None:
    import subprocess
    import sys

    code = (
        "import sys, llmrtc.audio.turn_detection, worker.eot_livekit, llmrtc.audio.smart_turn, "
        "llmrtc.stt_interim, llmrtc.audio.backchannel\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('livekit', 'pipecat', 'onnxruntime', 'torch')]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_settings_segmenter_on_the_worker_path(
    onnx_engine: VADEngine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """As the worker would: the async, batched listener with the settings' segmenter and the shared runner."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TURN_DETECTION", "smart-turn")
    for name in ("TURN_MIN_SILENCE_MS", "TURN_MAX_SILENCE_MS", "TURN_COMPLETE_THRESHOLD"):
        monkeypatch.delenv(name, raising=False)
    settings = TurnDetectionSettings()
    events: list[TurnEvent] = []
    seg = settings.segmenter(CONFIG, on_event=events.append)
    assert seg.runner is not None and seg.runner is settings.segmenter(CONFIG).runner  # one per process
    assert seg.policy == DEFAULTS["smart-turn"]
    listener = SpeechListener(config=CONFIG, engine=onnx_engine)
    listener.segmenter = seg
    c = clip("pause_08_0")
    pcm = load_clip(c)
    ends: list[tuple[float, SpeechEnd]] = []
    for i in range(0, len(pcm), FRAME):
        for ev in await listener.push(pcm[i : i + FRAME]):
            if isinstance(ev, SpeechEnd):
                ends.append((seg.time_s, ev))
        await asyncio.sleep(0.005)  # 4x real time
    listener.close()
    decisions = [e for e in events if isinstance(e, TurnDecision)]
    assert len(ends) == 1 and ends[0][1].end_s >= c.speech_end_s - 0.1  # the pause did not end the turn
    assert decisions and not decisions[0].complete and decisions[-1].complete is not None
    monkeypatch.setenv("TURN_DETECTION", "vad")
    vad = TurnDetectionSettings().segmenter(CONFIG)
    assert vad.runner is None and vad.detector is None and vad.config.max_silence_ms == CONFIG.max_silence_ms
