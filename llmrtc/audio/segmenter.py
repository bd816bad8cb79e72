"""The speech state machine: VAD probabilities in, utterances out.

Fed one 512-sample window (32 ms at 16 kHz) and its speech probability at a time, the segmenter decides
where utterances start and end:

* a window at or above ``threshold`` starts a *candidate*; windows at or above ``deactivation_threshold``
  count as voiced (hysteresis), and the candidate becomes speech once it holds ``min_speech_ms`` of voiced
  windows; it is abandoned if ``max_silence_ms`` of silence comes first (so short dips inside a word do not
  restart it, and a lone cough of less than ``min_speech_ms`` never becomes speech): :class:`SpeechStart` is emitted with the onset time (the first voiced window), not the
  confirmation time;
* speech ends after ``max_silence_ms`` of windows below ``deactivation_threshold``: :class:`SpeechEnd`
  carries ``end_s`` (the middle of the last voiced window), the utterance's PCM (with ``pre_roll_ms`` before the onset and up to ``post_roll_ms`` after the
  last voiced window) and its timing;
* an utterance reaching ``max_utterance_s`` is cut there (``SpeechEnd.split``); if speech goes on, a new
  utterance starts at the cut at once;
* every window also yields a :class:`Probability` event.

Names and defaults follow the reference VAD settings (``threshold`` 0.5, ``minSpeechDuration`` 200 ms,
``maxSilenceDuration`` 500 ms).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmrtc.errors import AudioError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
WINDOW_SAMPLES = 512
WINDOW_BYTES = WINDOW_SAMPLES * 2
WINDOW_S = WINDOW_SAMPLES / SAMPLE_RATE


class SegmenterConfig(BaseModel):
    """Segmenter settings (milliseconds unless the name says seconds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(0.5, ge=0.0, le=1.0, description="activation: probability that starts speech")
    deactivation_threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="probability below which a window is silence; None: threshold - 0.15",
    )
    min_speech_ms: float = Field(200.0, ge=0.0, description="voiced time before an onset counts as speech")
    max_silence_ms: float = Field(500.0, gt=0.0, description="silence that ends an utterance")
    pre_roll_ms: float = Field(300.0, ge=0.0, description="audio kept before the onset in SpeechEnd.pcm")
    post_roll_ms: float = Field(200.0, ge=0.0, description="audio kept after the last voiced window")
    max_utterance_s: float = Field(30.0, gt=0.0, description="an utterance this long is split")

    @model_validator(mode="after")
    def _check(self) -> SegmenterConfig:
        if self.deactivation_threshold is not None and self.deactivation_threshold > self.threshold:
            raise ValueError("deactivation_threshold must not exceed threshold")
        if self.post_roll_ms > self.max_silence_ms:
            raise ValueError("post_roll_ms must not exceed max_silence_ms")
        return self

    @property
    def off_threshold(self) -> float:
        """The effective deactivation threshold."""
        if self.deactivation_threshold is not None:
            return self.deactivation_threshold
        return max(self.threshold - 0.15, 0.01)


@dataclass(frozen=True, slots=True)
class SpeechStart:
    """Speech began at ``time_s`` (stream time of the first voiced window)."""

    time_s: float


@dataclass(frozen=True, slots=True)
class SpeechEnd:
    """An utterance: ``pcm`` is 16 kHz mono PCM16 from ``pcm_start_s``; speech spans ``start_s``..``end_s``."""

    pcm: bytes
    start_s: float
    end_s: float
    pcm_start_s: float
    split: bool = False
    sample_rate: int = SAMPLE_RATE

    @property
    def duration_s(self) -> float:
        """Speech duration (``end_s - start_s``)."""
        return self.end_s - self.start_s

    @property
    def pcm_duration_s(self) -> float:
        """Duration of ``pcm``."""
        return len(self.pcm) / (2 * self.sample_rate)


@dataclass(frozen=True, slots=True)
class Probability:
    """The speech probability of the window starting at ``time_s``; ``speaking`` is the segmenter's state."""

    time_s: float
    probability: float
    speaking: bool


SegmenterEvent = SpeechStart | SpeechEnd | Probability


class Segmenter:
    """Turns (probability, window) pairs into :class:`SpeechStart` / :class:`SpeechEnd` events.

    Time is counted in windows from the first one pushed (``start_time_s`` offsets it).
    """

    def __init__(self, config: SegmenterConfig | None = None, *, start_time_s: float = 0.0) -> None:
        self.config = config or SegmenterConfig()
        self._t0 = start_time_s
        self._n = 0  # windows seen
        c = self.config
        self._pre_windows = round(c.pre_roll_ms / 1000 / WINDOW_S)
        self._post_windows = round(c.post_roll_ms / 1000 / WINDOW_S)
        self._min_speech_windows = max(1, round(c.min_speech_ms / 1000 / WINDOW_S))
        self._max_silence_windows = max(1, round(c.max_silence_ms / 1000 / WINDOW_S))
        self._max_windows = max(1, round(c.max_utterance_s / WINDOW_S))
        self._history: deque[bytes] = deque(maxlen=max(self._pre_windows, 1))
        self._reset_utterance()
        self.speaking = False

    def _reset_utterance(self) -> None:
        self._candidate = False
        self._onset = 0  # window index of the first voiced window
        self._voiced = 0
        self._silence_run = 0
        self._last_voiced = 0  # window index of the last voiced window
        self._buf: list[bytes] = []  # windows since pcm start
        self._buf_start = 0  # window index of _buf[0]

    def _time(self, index: int) -> float:
        return self._t0 + index * WINDOW_S

    def push(self, probability: float, window: bytes) -> list[SegmenterEvent]:
        """Feed the next window (``WINDOW_BYTES`` of 16 kHz PCM16) and its probability."""
        if len(window) != WINDOW_BYTES:
            raise AudioError(f"segmenter windows are {WINDOW_BYTES} bytes, got {len(window)}")
        if not 0.0 <= probability <= 1.0 or probability != probability:
            raise AudioError(f"speech probability must be in [0, 1], got {probability}")
        c = self.config
        i = self._n
        self._n += 1
        events: list[SegmenterEvent] = []
        voiced = probability >= c.off_threshold

        if not self._candidate:
            if probability >= c.threshold:
                self._candidate = True
                self._onset = self._last_voiced = i
                self._voiced = 1
                self._silence_run = 0
                pre = list(self._history)[-self._pre_windows :] if self._pre_windows else []
                self._buf = [*pre, window]
                self._buf_start = i - len(pre)
                if self._voiced >= self._min_speech_windows:
                    self.speaking = True
                    events.append(SpeechStart(self._time(i)))
            else:
                self._history.append(window)
        else:
            self._buf.append(window)
            if voiced:
                self._voiced += 1
                self._silence_run = 0
                self._last_voiced = i
                if not self.speaking and self._voiced >= self._min_speech_windows:
                    self.speaking = True
                    events.append(SpeechStart(self._time(self._onset)))
            else:
                self._silence_run += 1
            if self._silence_run >= self._max_silence_windows:
                if self.speaking:
                    events.append(self._end(split=False))
                else:
                    self._drop()
            elif self.speaking and i + 1 - self._onset >= self._max_windows:
                events.append(self._end(split=True))
                if voiced:
                    # speech goes on: a new utterance starts at the cut
                    self._candidate = True
                    self._onset = self._last_voiced = i + 1
                    self._voiced = self._min_speech_windows
                    self._buf = []
                    self._buf_start = i + 1
                    self.speaking = True
                    events.append(SpeechStart(self._time(i + 1)))
        events.append(Probability(self._time(i), float(probability), self.speaking))
        return events

    def _drop(self) -> None:
        """A candidate too short to count: its windows become history again."""
        for w in self._buf[-self._pre_windows :] if self._pre_windows else ():
            self._history.append(w)
        self._reset_utterance()

    def _end(self, *, split: bool) -> SpeechEnd:
        if split:
            last = self._n - 1
            keep = len(self._buf)
            end_s = self._time(last + 1)
        else:
            last = self._last_voiced
            keep = min(len(self._buf), last + 1 + self._post_windows - self._buf_start)
            # the middle of the last voiced window: Silero's probability trails the audio by one to three
            # windows, so the window's end would be systematically late
            end_s = self._time(last) + WINDOW_S / 2
        ev = SpeechEnd(
            pcm=b"".join(self._buf[:keep]),
            start_s=self._time(self._onset),
            end_s=end_s,
            pcm_start_s=self._time(self._buf_start),
            split=split,
        )
        tail = self._buf[keep:]
        self.speaking = False
        self._reset_utterance()
        self._history.clear()
        for w in tail[-self._pre_windows :] if self._pre_windows else ():
            self._history.append(w)
        logger.debug("utterance %.2f-%.2f s (split=%s)", ev.start_s, ev.end_s, split)
        return ev

    def flush(self) -> list[SegmenterEvent]:
        """End of stream: close an utterance in progress (a candidate shorter than min speech is dropped)."""
        if self._candidate and self.speaking:
            return [self._end(split=False)]
        if self._candidate:
            self._drop()
        return []

    @property
    def time_s(self) -> float:
        """Stream time after the last window pushed."""
        return self._time(self._n)
