"""The segmenter on real speech (espeak-ng fixtures) with both VAD runtimes."""

from __future__ import annotations

import itertools

import pytest

from llmrtc.audio.segmenter import (
    WINDOW_BYTES,
    Probability,
    Segmenter,
    SegmenterConfig,
    SegmenterEvent,
    SpeechEnd,
    SpeechStart,
)
from llmrtc.audio.vad import VADEngine
from llmrtc.errors import AudioError
from tests.fixtures import fixture_truth

from .conftest import load_pcm, windows


def segment(engine: VADEngine, name: str, config: SegmenterConfig | None = None) -> list[SegmenterEvent]:
    pcm, rate = load_pcm(name)
    assert rate == 16_000
    probs = engine.open_stream().process_sync(pcm)
    seg = Segmenter(config)
    events: list[SegmenterEvent] = []
    for p, w in zip(probs, windows(pcm), strict=False):
        events += seg.push(p, w)
    return events + seg.flush()


def test_finds_each_utterance_within_100ms(engine: VADEngine) -> None:
    events = segment(engine, "multi_16k")
    ends = [e for e in events if isinstance(e, SpeechEnd)]
    starts = [e for e in events if isinstance(e, SpeechStart)]
    truth = fixture_truth("multi_16k")["utterances"]
    assert len(ends) == len(truth) == len(starts) == 4
    for got, start, want in zip(ends, starts, truth, strict=True):
        assert abs(got.start_s - want["start_s"]) <= 0.1, (got, want)
        assert abs(got.end_s - want["end_s"]) <= 0.1, (got, want)
        assert start.time_s == got.start_s
        assert not got.split
        # the PCM holds the speech, with pre-roll before it
        assert got.pcm_start_s < got.start_s
        assert got.pcm_start_s + got.pcm_duration_s >= got.end_s


def test_silence_and_noise_give_no_utterance(engine: VADEngine) -> None:
    for name in ("silence_16k", "noise_16k"):
        events = segment(engine, name)
        assert not [e for e in events if isinstance(e, SpeechStart | SpeechEnd)], name
        assert len([e for e in events if isinstance(e, Probability)]) == 5 * 16000 // 512


def test_long_utterance_is_split_at_the_maximum(engine: VADEngine) -> None:
    config = SegmenterConfig(max_utterance_s=4.0)
    ends = [e for e in segment(engine, "long_16k", config) if isinstance(e, SpeechEnd)]
    truth = fixture_truth("long_16k")["utterances"][0]
    assert len(ends) >= 3
    for e in ends[:-1]:
        assert e.split
        assert e.duration_s == pytest.approx(4.0, abs=0.04)
    for a, b in itertools.pairwise(ends):
        assert b.start_s == pytest.approx(a.end_s, abs=0.001)  # contiguous: nothing lost at a cut
    assert not ends[-1].split
    assert abs(ends[0].start_s - truth["start_s"]) <= 0.1
    assert abs(ends[-1].end_s - truth["end_s"]) <= 0.1


def test_short_burst_is_not_an_utterance(onnx_engine: VADEngine) -> None:
    events = segment(onnx_engine, "burst_16k")
    assert not [e for e in events if isinstance(e, SpeechStart | SpeechEnd)]


def test_min_speech_and_max_silence_on_synthetic_probabilities() -> None:
    seg = Segmenter(SegmenterConfig(min_speech_ms=96, max_silence_ms=160, pre_roll_ms=64, post_roll_ms=64))
    w = b"\x00" * WINDOW_BYTES
    feed = [0.0] * 5 + [0.9, 0.9, 0.1, 0.9] + [0.0] * 10
    events: list[SegmenterEvent] = []
    for p in feed:
        events += seg.push(p, w)
    starts = [e for e in events if isinstance(e, SpeechStart)]
    ends = [e for e in events if isinstance(e, SpeechEnd)]
    assert [s.time_s for s in starts] == [pytest.approx(5 * 0.032)]  # onset, not confirmation time
    assert len(ends) == 1
    assert ends[0].start_s == pytest.approx(0.16)
    assert ends[0].end_s == pytest.approx(8 * 0.032 + 0.016)
    # 2 pre-roll windows + 4 utterance windows + 2 post-roll windows
    assert len(ends[0].pcm) == 8 * WINDOW_BYTES


def test_bad_input_and_config() -> None:
    seg = Segmenter()
    with pytest.raises(AudioError):
        seg.push(0.5, b"\x00" * 10)
    with pytest.raises(AudioError):
        seg.push(1.5, b"\x00" * WINDOW_BYTES)
    with pytest.raises(ValueError):
        SegmenterConfig(threshold=0.3, deactivation_threshold=0.6)
    with pytest.raises(ValueError):
        SegmenterConfig(max_silence_ms=100, post_roll_ms=200)
    assert SegmenterConfig().off_threshold == pytest.approx(0.35)
