"""LiveKit's audio end-of-turn model (``livekit-local-inference``, installed with livekit-agents).

The model judges the last 1.2 s of 16 kHz int16 audio (``EOT.predict``; shorter input is left-padded with
silence) and returns P(the turn ended). Its native library releases the GIL while it runs.

Licence: the model comes under the LiveKit Model License, which allows its use only together with the
LiveKit Agents framework (the llmrtc worker runs on it), so it lives in the worker, not in llmrtc (which
never imports livekit). :func:`register` makes ``TURN_DETECTION=livekit`` build it
(:func:`llmrtc.audio.turn_detection.register_detector`); the worker registers it when its listeners load.
``livekit.local_inference`` is imported when the detector is created; it imports no other part of livekit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from llmrtc.audio.turn_detection import register_detector
from llmrtc.errors import AudioError, ConfigError

logger = logging.getLogger(__name__)

MAX_SECONDS = 1.2


class LiveKitEOTDetector:
    """LiveKit's end-of-turn model as an :class:`~llmrtc.audio.turn_detection.EndOfTurnDetector`.

    Loading takes about 0.3 s and 100 MB (once per process: the native model is a singleton).
    """

    name = "livekit"
    max_audio_s = MAX_SECONDS
    batchable = False

    def __init__(self) -> None:
        try:
            from livekit import local_inference
        except ImportError as exc:
            raise ConfigError(
                "the livekit end-of-turn model needs livekit-local-inference: pip install 'llmrtc[worker]'"
            ) from exc
        try:
            self._eot: Any = local_inference.EOT()
        except Exception as exc:
            raise ConfigError(f"cannot load LiveKit's end-of-turn model: {exc}") from exc
        self._max_samples = int(local_inference.EOT_MAX_SAMPLES)
        self._lock = threading.Lock()

    def predict(self, pcm16k: bytes) -> float:
        """P(complete) from the last 1.2 s of 16 kHz mono PCM16."""
        if len(pcm16k) % 2:
            raise AudioError(f"PCM16 needs an even number of bytes, got {len(pcm16k)}")
        samples = np.frombuffer(pcm16k, dtype="<i2")[-self._max_samples :].astype(np.int16)
        if len(samples) == 0:
            samples = np.zeros(1, dtype=np.int16)
        try:
            with self._lock:
                return float(self._eot.predict(np.ascontiguousarray(samples)))
        except Exception as exc:
            logger.error("LiveKit end-of-turn inference failed: %s", exc)
            raise AudioError(f"LiveKit end-of-turn inference failed: {exc}") from exc

    def predict_batch(self, items: Sequence[bytes]) -> list[float]:
        """One prediction after another (the model has no batch input)."""
        return [self.predict(pcm) for pcm in items]

    def close(self) -> None:
        """Release this handle (the process-wide model stays loaded)."""
        self._eot.close()


def register() -> None:
    """Make ``create_detector("livekit")`` (``TURN_DETECTION=livekit``) build :class:`LiveKitEOTDetector`."""
    register_detector("livekit", LiveKitEOTDetector)


__all__ = ["LiveKitEOTDetector", "register"]
