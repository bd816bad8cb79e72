"""Smart Turn v3: an open audio end-of-turn model (BSD-2, by Daily) on onnxruntime.

The model (``smart-turn-v3.2-cpu.onnx``, 8.7 MB, a quantized Whisper-tiny encoder with a classifier) ships
inside the ``pipecat-ai`` wheel; it is loaded from the installed package (``pip install 'llmrtc[smart-turn]'``)
without importing pipecat, and nothing is downloaded. It judges the last 8 s of the turn: 16 kHz audio,
left-padded with zeros to 8 s, normalized to zero mean and unit variance, turned into Whisper's 80-bin
log-mel spectrogram (25 ms Hann windows every 10 ms, 800 frames) and classified to P(the turn is complete).
The feature extraction below is a numpy implementation of Whisper's (``WhisperFeatureExtractor`` with
``chunk_length=8``), the preprocessing the model was trained with.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from llmrtc.errors import AudioError, ConfigError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
MAX_SECONDS = 8
MAX_SAMPLES = SAMPLE_RATE * MAX_SECONDS
N_FFT = 400
HOP = 160
N_MELS = 80
FRAMES = MAX_SAMPLES // HOP  # 800
MODEL_FILE = "smart-turn-v3.2-cpu.onnx"
MODEL_PACKAGE_DIR = ("audio", "turn", "smart_turn", "data")

FloatArray = npt.NDArray[np.float32]


def smart_turn_model_path() -> Path:
    """The Smart Turn v3.2 ONNX file inside the installed ``pipecat-ai`` package (found without importing it)."""
    spec = importlib.util.find_spec("pipecat")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "Smart Turn needs the pipecat-ai package (its model): pip install 'llmrtc[smart-turn]'"
        )
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*MODEL_PACKAGE_DIR, MODEL_FILE)
    if not path.is_file():
        raise ConfigError(f"the Smart Turn model is missing from the installed pipecat-ai: {path}")
    return path


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    mel = 3.0 * hz / 200.0
    log = hz >= 1000.0
    mel[log] = 15.0 + np.log(hz[log] / 1000.0) * (27.0 / np.log(6.4))
    return mel


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    hz = 200.0 * mel / 3.0
    log = mel >= 15.0
    hz[log] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel[log] - 15.0))
    return hz


@functools.cache
def mel_filters() -> npt.NDArray[np.float64]:
    """Whisper's filterbank: 80 Slaney-normalized triangles over 0-8 kHz, shape ``[80, 201]``."""
    n_bins = N_FFT // 2 + 1
    edges = _mel_to_hz(np.linspace(0.0, float(_hz_to_mel(np.array([SAMPLE_RATE / 2.0]))[0]), N_MELS + 2))
    fft_hz = np.linspace(0.0, SAMPLE_RATE // 2, n_bins)
    slopes = edges[None, :] - fft_hz[:, None]  # [bins, mels + 2]
    widths = np.diff(edges)
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    tri = np.maximum(0.0, np.minimum(down, up))
    tri *= 2.0 / (edges[2:] - edges[:-2])[None, :]
    return np.ascontiguousarray(tri.T)


@functools.cache
def _hann() -> npt.NDArray[np.float64]:
    return np.hanning(N_FFT + 1)[:-1]  # periodic Hann, as torch.hann_window


def log_mel(audio: FloatArray) -> FloatArray:
    """Whisper log-mel features ``[80, 800]`` of exactly 8 s of 16 kHz float audio."""
    if audio.shape != (MAX_SAMPLES,):
        raise AudioError(f"Smart Turn features need {MAX_SAMPLES} samples, got shape {audio.shape}")
    x = audio.astype(np.float32)
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    padded = np.pad(x.astype(np.float64), (N_FFT // 2, N_FFT // 2), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]  # [801, 400]
    power = np.abs(np.fft.rfft(frames * _hann(), axis=-1)) ** 2  # [801, 201]
    mel: npt.NDArray[np.float64] = np.log10(np.maximum(mel_filters() @ power.T, 1e-10))[:, :-1]  # [80, 800]
    mel = np.maximum(mel, mel.max() - 8.0)
    out: FloatArray = ((mel + 4.0) / 4.0).astype(np.float32)
    return out


def prepare(pcm: bytes) -> FloatArray:
    """The model's input window: the last 8 s of 16 kHz PCM16, left-padded with zeros, as float."""
    if len(pcm) % 2:
        raise AudioError(f"PCM16 needs an even number of bytes, got {len(pcm)}")
    samples = np.frombuffer(pcm, dtype="<i2")[-MAX_SAMPLES:].astype(np.float32) / 32768.0
    out = np.zeros(MAX_SAMPLES, dtype=np.float32)
    if len(samples):
        out[-len(samples) :] = samples
    return out


class SmartTurnDetector:
    """Smart Turn v3 as an :class:`~llmrtc.audio.turn_detection.EndOfTurnDetector` (thread-safe).

    ``path`` defaults to the model inside the installed ``pipecat-ai``; ``threads`` is onnxruntime's
    intra-op thread count (1: the decision takes one core for a few tens of ms).
    """

    name = "smart-turn"
    max_audio_s = float(MAX_SECONDS)
    batchable = True

    def __init__(self, path: Path | None = None, *, threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigError("Smart Turn needs onnxruntime: pip install 'llmrtc[smart-turn]'") from exc
        model_path = path or smart_turn_model_path()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(model_path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ConfigError(f"cannot load the Smart Turn model {model_path}: {exc}") from exc
        self.path = model_path

    def predict(self, pcm16k: bytes) -> float:
        """P(the turn is complete) for the turn's audio so far (16 kHz mono PCM16; the last 8 s count)."""
        return self.predict_batch([pcm16k])[0]

    def predict_batch(self, items: Sequence[bytes]) -> list[float]:
        """:meth:`predict` for several turns in one model call."""
        if not items:
            return []
        features = np.stack([log_mel(prepare(pcm)) for pcm in items])
        try:
            (out,) = self._session.run(["logits"], {"input_features": features})  # thread-safe
        except Exception as exc:
            logger.error("Smart Turn inference failed (batch=%d): %s", len(items), exc)
            raise AudioError(f"Smart Turn inference failed: {exc}") from exc
        return [float(p) for p in np.asarray(out, dtype=np.float32).reshape(-1)]

    def close(self) -> None:
        """Nothing to release beyond the session (dropped with the object)."""
