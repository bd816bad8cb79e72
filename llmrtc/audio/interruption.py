"""Barge-in: when speech from a listener counts as interrupting the agent, and when that was a mistake.

The segmenter decides what is an utterance; barge-in uses its own, stricter onset rule on the same VAD
probabilities so that a cough, a laugh or a short "mm" does not stop the agent mid-sentence:

* :class:`OnsetRule`: speech counts as an interruption once ``min_speech_ms`` of windows at or above
  ``threshold`` have accumulated, where silent gaps up to ``max_gap_ms`` do not break the run. The default
  (400 ms at 0.6) ignores a 150 ms burst; the agent reacts 0.4 s after the person starts talking.
* :class:`InterruptionDetector`: feed it probabilities while the agent speaks; it reports an
  :class:`Interruption` once per onset.
* :class:`FalseInterruptionPolicy`: an interruption is *false* when the speech that caused it brings no words
  within ``window_s`` (the transcript is empty, or has fewer than ``min_words`` words, or no utterance
  arrived in time). The caller then may resume or repeat what the agent was saying.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from llmrtc.errors import AudioError

WINDOW_S = 512 / 16_000


class OnsetRule(BaseModel):
    """What counts as a barge-in onset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_speech_ms: float = Field(400.0, ge=0.0, description="voiced time before speech interrupts the agent")
    threshold: float = Field(0.6, ge=0.0, le=1.0, description="probability at which a window is voiced")
    max_gap_ms: float = Field(100.0, ge=0.0, description="silence inside the run that does not reset it")


@dataclass(frozen=True, slots=True)
class Interruption:
    """Speech that started at ``onset_s`` counted as barge-in at ``time_s`` (``time_s - onset_s`` voiced)."""

    onset_s: float
    time_s: float


class InterruptionDetector:
    """Applies an :class:`OnsetRule` to one stream's VAD probabilities (one per 32 ms window)."""

    def __init__(self, rule: OnsetRule | None = None, *, start_time_s: float = 0.0) -> None:
        self.rule = rule or OnsetRule()
        self._need = max(1, round(self.rule.min_speech_ms / 1000 / WINDOW_S))
        self._max_gap = round(self.rule.max_gap_ms / 1000 / WINDOW_S)
        self._t0 = start_time_s
        self._n = 0
        self.reset()

    def reset(self) -> None:
        """Forget the current run (e.g. when the agent starts a new answer)."""
        self._voiced = 0
        self._gap = 0
        self._onset: int | None = None
        self._fired = False

    def push(self, probability: float) -> Interruption | None:
        """Feed the next window's probability; returns an :class:`Interruption` when the rule is met."""
        if not 0.0 <= probability <= 1.0:
            raise AudioError(f"speech probability must be in [0, 1], got {probability}")
        i = self._n
        self._n += 1
        if probability >= self.rule.threshold:
            if self._onset is None:
                self._onset = i
            self._voiced += 1
            self._gap = 0
        elif self._onset is not None:
            self._gap += 1
            if self._gap > self._max_gap:
                self.reset()
            return None
        else:
            return None
        if not self._fired and self._voiced >= self._need:
            self._fired = True
            assert self._onset is not None
            return Interruption(
                onset_s=self._t0 + self._onset * WINDOW_S, time_s=self._t0 + self._n * WINDOW_S
            )
        return None

    @property
    def active(self) -> bool:
        """True while a run that already counted as an interruption goes on."""
        return self._fired


_WORD = re.compile(r"\w+", re.UNICODE)


class FalseInterruptionPolicy(BaseModel):
    """When a barge-in was false: no words came from it within ``window_s``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_s: float = Field(2.0, gt=0.0, description="time after the onset to wait for words")
    min_words: int = Field(1, ge=1, description="words the transcript needs for the interruption to stand")

    def is_false(self, transcript: str | None, elapsed_s: float) -> bool | None:
        """Judge an interruption ``elapsed_s`` after its onset.

        ``transcript`` is the text of the interrupting utterance (``None`` while none has arrived). Returns
        ``True`` (false interruption), ``False`` (a real one) or ``None`` (too early to say).
        """
        if transcript is not None:
            return len(_WORD.findall(transcript)) < self.min_words
        if elapsed_s >= self.window_s:
            return True
        return None
