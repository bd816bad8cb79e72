"""Barge-in onset rule and false-interruption policy."""

from __future__ import annotations

import pytest

from llmrtc.audio.interruption import FalseInterruptionPolicy, InterruptionDetector, OnsetRule
from llmrtc.audio.vad import VADEngine
from llmrtc.errors import AudioError

from .conftest import load_pcm


def onsets(engine: VADEngine, name: str, rule: OnsetRule | None = None) -> list[float]:
    pcm, _ = load_pcm(name)
    det = InterruptionDetector(rule)
    hits = [det.push(p) for p in engine.open_stream().process_sync(pcm)]
    return [h.onset_s for h in hits if h is not None]


def test_150ms_burst_is_not_an_interruption(engine: VADEngine) -> None:
    assert onsets(engine, "burst_16k") == []
    # the burst is speech to the model: a permissive rule does count it
    assert len(onsets(engine, "burst_16k", OnsetRule(min_speech_ms=64))) == 1


def test_real_speech_interrupts_once(engine: VADEngine) -> None:
    hits = onsets(engine, "capital_16k")
    assert len(hits) == 1
    assert hits[0] == pytest.approx(1.0, abs=0.1)


def test_detector_timing_and_gaps() -> None:
    det = InterruptionDetector(OnsetRule(min_speech_ms=128, threshold=0.6, max_gap_ms=32))
    assert [det.push(p) for p in (0.9, 0.9, 0.1, 0.9)] == [None] * 4  # 3 voiced windows, one gap
    hit = det.push(0.9)
    assert hit is not None
    assert hit.onset_s == 0.0
    assert hit.time_s == pytest.approx(5 * 0.032)
    assert det.push(0.9) is None  # once per onset
    det2 = InterruptionDetector(OnsetRule(min_speech_ms=128, max_gap_ms=32))
    assert all(det2.push(p) is None for p in (0.9, 0.9, 0.1, 0.1, 0.9, 0.9))  # gap too long: run restarts
    with pytest.raises(AudioError):
        det2.push(-0.1)


def test_false_interruption_policy() -> None:
    policy = FalseInterruptionPolicy(window_s=2.0)
    assert policy.is_false(None, 0.5) is None
    assert policy.is_false(None, 2.0) is True
    assert policy.is_false("", 0.8) is True
    assert policy.is_false(" ... ", 0.8) is True
    assert policy.is_false("stop", 0.8) is False
    assert FalseInterruptionPolicy(min_words=2).is_false("stop", 0.8) is True
