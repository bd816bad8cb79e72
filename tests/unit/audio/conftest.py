"""Shared fixtures for the audio tests: one engine per runtime for the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llmrtc.audio.segmenter import WINDOW_BYTES
from llmrtc.audio.vad import VADEngine, VADRuntime
from llmrtc.audio.wav import wav_to_pcm16
from tests.fixtures import fixture_path

RUNTIMES: tuple[VADRuntime, ...] = ("onnx", "torch")
_engines: dict[str, VADEngine] = {}


@pytest.fixture(scope="session", params=RUNTIMES)
def engine(request: pytest.FixtureRequest) -> Iterator[VADEngine]:
    """A VAD engine of each runtime (tests using it run once per runtime)."""
    runtime = request.param
    if runtime not in _engines:
        _engines[runtime] = VADEngine.load(runtime)
    yield _engines[runtime]


@pytest.fixture(scope="session")
def onnx_engine() -> VADEngine:
    if "onnx" not in _engines:
        _engines["onnx"] = VADEngine.load("onnx")
    return _engines["onnx"]


def load_pcm(name: str) -> tuple[bytes, int]:
    """A fixture WAV as (PCM16 mono, sample rate)."""
    pcm, rate, channels = wav_to_pcm16(fixture_path(name).read_bytes())
    assert channels == 1
    return pcm, rate


def windows(pcm: bytes) -> list[bytes]:
    return [pcm[i : i + WINDOW_BYTES] for i in range(0, len(pcm) - WINDOW_BYTES + 1, WINDOW_BYTES)]
