"""End of turn: how long to wait in a silence before the user's turn is over.

A fixed silence either cuts people off when they pause mid-sentence (short) or makes every answer late
(long). Here a model judges, when a silence starts, whether the turn sounds complete, and an
:class:`EndOfTurnPolicy` turns its probability into the silence to wait: ``min_silence_ms`` when it is
complete, ``max_silence_ms`` when the user is mid-thought.

* :class:`EndOfTurnDetector`: the model contract (``predict(pcm16k) -> P(complete)``); implementations are
  :class:`~llmrtc.audio.smart_turn.SmartTurnDetector` (``smart-turn``) and
  ``worker.eot_livekit.LiveKitEOTDetector`` (``livekit``, registered by the worker); ``vad`` has no model
  (fixed silence).
* :class:`EndOfTurnRunner`: runs a detector on its own thread, batching the requests of every stream of the
  process into one model call (off the event loop; one runner per detector per process).
* :class:`TurnSegmenter`: a :class:`~llmrtc.audio.segmenter.Segmenter` whose utterances end after the
  silence the policy asks for: it asks the detector once the silence reaches ``probe_ms``, keeps the
  utterance open through a mid-sentence pause (the pause stays inside ``SpeechEnd.pcm``), and reports each
  decision (:class:`TurnDecision`) and each resumption (:class:`TurnResumed`) to ``on_event``, the hooks
  for a preemptive reply. Drop it into a listener with ``listener.segmenter = TurnSegmenter(...)``.
* :class:`TurnDetectionSettings`: ``TURN_DETECTION``, ``TURN_MIN_SILENCE_MS``, ``TURN_MAX_SILENCE_MS``,
  ``TURN_COMPLETE_THRESHOLD`` from the environment (blank means unset) and :func:`create_detector`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmrtc.audio.segmenter import (
    WINDOW_BYTES,
    WINDOW_S,
    Segmenter,
    SegmenterConfig,
    SegmenterEvent,
    SpeechEnd,
    SpeechStart,
)
from llmrtc.errors import AudioError, ConfigError

logger = logging.getLogger(__name__)

TurnDetectionKind = Literal["vad", "smart-turn", "livekit"]


@runtime_checkable
class EndOfTurnDetector(Protocol):
    """An end-of-turn model: the turn's audio so far in, P(the turn is complete) out.

    ``max_audio_s``: how much of the end of the turn the model looks at (callers may send less, never need to
    send more). ``batchable``: :meth:`predict_batch` is one model call (otherwise a loop). Both methods are
    blocking and thread-safe; run them off the event loop (:class:`EndOfTurnRunner`).
    """

    name: str
    max_audio_s: float
    batchable: bool

    def predict(self, pcm16k: bytes) -> float:
        """P(complete) for 16 kHz mono PCM16 ending now (the start of the silence included)."""
        ...

    def predict_batch(self, items: Sequence[bytes]) -> list[float]:
        """:meth:`predict` for several turns."""
        ...


class EndOfTurnPolicy(BaseModel):
    """The silence to wait, given P(complete): ``min_silence_ms`` at or above ``complete_threshold``, else
    ``max_silence_ms``. The model is asked once the silence reaches ``probe_ms``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_silence_ms: float = Field(250.0, gt=0.0, le=10_000.0, description="silence when the turn is complete")
    max_silence_ms: float = Field(1600.0, gt=0.0, le=10_000.0, description="silence when mid-thought")
    complete_threshold: float = Field(0.5, ge=0.0, le=1.0, description="P(complete) that counts as complete")
    probe_ms: float = Field(64.0, ge=0.0, le=2000.0, description="silence before the model is asked")

    @model_validator(mode="after")
    def _check(self) -> EndOfTurnPolicy:
        if self.min_silence_ms > self.max_silence_ms:
            raise ValueError("min_silence_ms must not exceed max_silence_ms")
        if self.probe_ms > self.min_silence_ms:
            raise ValueError("probe_ms must not exceed min_silence_ms")
        return self

    @classmethod
    def fixed(cls, silence_ms: float) -> EndOfTurnPolicy:
        """Today's behaviour (``TURN_DETECTION=vad``): the same silence whatever is said."""
        return cls(min_silence_ms=silence_ms, max_silence_ms=silence_ms, probe_ms=0.0)

    def silence_ms(self, probability: float) -> float:
        """The silence to wait before the turn ends."""
        return self.min_silence_ms if probability >= self.complete_threshold else self.max_silence_ms


@dataclass(frozen=True, slots=True)
class TurnDecision:
    """The detector's verdict on a silence that started at ``silence_start_s`` (stream time).

    ``complete``: the turn will end after ``silence_ms`` of silence unless speech resumes (a preemptive
    reply may start now); ``latency_s``: from asking to the answer (model and queueing).
    """

    probability: float
    complete: bool
    silence_ms: float
    silence_start_s: float
    latency_s: float
    detector: str


@dataclass(frozen=True, slots=True)
class TurnResumed:
    """Speech resumed at ``time_s`` after a decision: the turn goes on (cancel a preemptive reply)."""

    time_s: float
    decision: TurnDecision


TurnEvent = TurnDecision | TurnResumed


# ------------------------------------------------------------------------------------------------ runner


@dataclass
class _Request:
    pcm: bytes
    future: concurrent.futures.Future[float]


class EndOfTurnRunner:
    """Runs one detector on ``threads`` daemon threads, off every event loop, for all streams of a process.

    :meth:`submit` returns a :class:`concurrent.futures.Future` (poll it, or ``await runner.predict(pcm)``);
    requests are answered in order of arrival. One thread answers about 30 Smart Turn decisions a second;
    give it more threads (up to the cores you can spare) when many rooms share a process. With
    ``max_batch > 1`` and a batchable detector, the requests pending when a thread is free go in one model
    call. The default is 1: measured with ``bench/turn_detection.py``, a Smart Turn batch costs as much CPU
    per decision as single calls, so batching would only add latency. Statistics: ``calls``, ``decisions``,
    ``cpu_s`` (CPU time of the runner's threads).
    """

    def __init__(self, detector: EndOfTurnDetector, *, max_batch: int = 1, threads: int = 1) -> None:
        if max_batch < 1 or threads < 1:
            raise ConfigError("EndOfTurnRunner needs max_batch >= 1 and threads >= 1")
        self.detector = detector
        self._max_batch = max_batch if detector.batchable else 1
        self._cond = threading.Condition()
        self._queue: deque[_Request] = deque()
        self._stopped = False
        self.calls = 0
        self.decisions = 0
        self.cpu_s = 0.0
        self._threads = [
            threading.Thread(target=self._run, name=f"llmrtc-eot-{detector.name}-{k}", daemon=True)
            for k in range(threads)
        ]
        for t in self._threads:
            t.start()

    def submit(self, pcm16k: bytes) -> concurrent.futures.Future[float]:
        """Queue one prediction."""
        fut: concurrent.futures.Future[float] = concurrent.futures.Future()
        with self._cond:
            if self._stopped:
                raise AudioError(f"the {self.detector.name} end-of-turn runner is closed")
            self._queue.append(_Request(pcm16k, fut))
            self._cond.notify()
        return fut

    async def predict(self, pcm16k: bytes) -> float:
        """P(complete), computed on the runner's thread."""
        return await asyncio.wrap_future(self.submit(pcm16k))

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                batch = [self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))]
            batch = [r for r in batch if r.future.set_running_or_notify_cancel()]
            if not batch:
                continue
            started = time.thread_time()
            try:
                if len(batch) == 1:
                    probs = [self.detector.predict(batch[0].pcm)]
                else:
                    probs = self.detector.predict_batch([r.pcm for r in batch])
            except Exception as exc:  # never let the thread die with callers waiting
                logger.error("%s end-of-turn inference failed: %s", self.detector.name, exc)
                err = (
                    exc if isinstance(exc, AudioError) else AudioError(f"end-of-turn inference failed: {exc}")
                )
                for r in batch:
                    r.future.set_exception(err)
                continue
            with self._cond:
                self.cpu_s += time.thread_time() - started
                self.calls += 1
                self.decisions += len(batch)
            for r, p in zip(batch, probs, strict=True):
                r.future.set_result(p)

    def close(self) -> None:
        """Stop the thread; queued requests fail with :class:`AudioError`."""
        with self._cond:
            self._stopped = True
            queued, self._queue = self._queue, deque()
            self._cond.notify()
        for r in queued:
            if r.future.set_running_or_notify_cancel():
                r.future.set_exception(AudioError("the end-of-turn runner was closed"))
        for t in self._threads:
            t.join(timeout=5)


# ------------------------------------------------------------------------------------------------ segmenter


class TurnSegmenter(Segmenter):
    """A :class:`Segmenter` whose utterances end when the turn does (see the module docstring).

    ``config.max_silence_ms`` is replaced by ``policy.max_silence_ms`` (the ceiling). With ``detector=None``
    every silence waits ``policy.max_silence_ms`` (use :meth:`EndOfTurnPolicy.fixed`). With a ``runner``
    the model runs on the runner's thread and the decision is applied at the first window pushed after it
    is known; without one it runs inline in :meth:`push`. ``on_event`` receives every
    :class:`TurnDecision` and :class:`TurnResumed` (called from ``push``, on the caller's thread).
    """

    def __init__(
        self,
        config: SegmenterConfig | None = None,
        *,
        policy: EndOfTurnPolicy,
        detector: EndOfTurnDetector | None = None,
        runner: EndOfTurnRunner | None = None,
        on_event: Callable[[TurnEvent], None] | None = None,
        start_time_s: float = 0.0,
    ) -> None:
        base = config or SegmenterConfig()
        ceiling = base.model_copy(
            update={
                "max_silence_ms": policy.max_silence_ms,
                "post_roll_ms": min(base.post_roll_ms, policy.min_silence_ms),
            }
        )
        super().__init__(SegmenterConfig.model_validate(ceiling.model_dump()), start_time_s=start_time_s)
        if runner is not None and detector is not None and runner.detector is not detector:
            raise ConfigError("the runner must run the same detector")
        self.policy = policy
        self.detector = detector if detector is not None else (runner.detector if runner else None)
        self.runner = runner
        self._on_event = on_event
        self._probe_windows = max(1, round(policy.probe_ms / 1000 / WINDOW_S))
        keep_s = (self.detector.max_audio_s if self.detector else 0.0) + 0.1
        self._recent: deque[bytes] = deque(maxlen=max(1, round(keep_s / WINDOW_S)))
        self._idx = 0  # windows pushed
        self._pre_windows_turn = round(self.config.pre_roll_ms / 1000 / WINDOW_S)
        self._clear_turn()
        self.decisions: list[TurnDecision] = []

    def _clear_turn(self) -> None:
        self._onset_idx: int | None = None
        self._run = 0  # silent windows since the last voiced one
        self._pending: concurrent.futures.Future[float] | None = None
        self._asked_at = 0.0
        self._asked_idx = 0
        self._decision: TurnDecision | None = None

    def push(self, probability: float, window: bytes) -> list[SegmenterEvent]:
        """Feed the next window and its probability (see :meth:`Segmenter.push`)."""
        if len(window) == WINDOW_BYTES:
            self._recent.append(window)
        events = super().push(probability, window)
        i = self._idx
        self._idx += 1
        for ev in events:
            if isinstance(ev, SpeechStart):
                self._clear_turn()
                self._onset_idx = round((ev.time_s - self._t0) / WINDOW_S)
            elif isinstance(ev, SpeechEnd):
                self._clear_turn()
        if not self.speaking or self._onset_idx is None:
            return events
        if probability >= self.config.off_threshold:
            if self._run and (self._decision is not None or self._pending is not None):
                self._resume(i)
            self._run = 0
            return events
        self._run += 1
        if self.detector is not None and self._run == self._probe_windows and self._pending is None:
            self._ask(i)
        if self._pending is not None and self._decision is None and self._pending.done():
            self._decide()
        if self._decision is not None and self._run * WINDOW_S * 1000 >= self._decision.silence_ms - 1e-6:
            events += super().flush()
            self._clear_turn()
        return events

    def _turn_audio(self) -> bytes:
        assert self._onset_idx is not None and self.detector is not None
        first = self._onset_idx - self._pre_windows_turn
        have = min(len(self._recent), self._idx - max(first, 0))
        return b"".join(list(self._recent)[len(self._recent) - have :])

    def _ask(self, i: int) -> None:
        assert self.detector is not None
        pcm = self._turn_audio()
        self._asked_at = time.perf_counter()
        self._asked_idx = i - self._run + 1
        if self.runner is not None:
            self._pending = self.runner.submit(pcm)
            return
        fut: concurrent.futures.Future[float] = concurrent.futures.Future()
        try:
            fut.set_result(self.detector.predict(pcm))
        except Exception as exc:
            fut.set_exception(exc)
        self._pending = fut
        self._decide()

    def _decide(self) -> None:
        assert self._pending is not None and self.detector is not None
        try:
            p = self._pending.result()
        except Exception as exc:
            # a failed model falls back to the ceiling: the turn still ends, late rather than early
            logger.error("end-of-turn detection failed (%s): %s", self.detector.name, exc)
            p = 0.0
        decision = TurnDecision(
            probability=p,
            complete=p >= self.policy.complete_threshold,
            silence_ms=self.policy.silence_ms(p),
            silence_start_s=self._time(self._asked_idx),
            latency_s=time.perf_counter() - self._asked_at,
            detector=self.detector.name,
        )
        self._decision = decision
        self.decisions.append(decision)
        logger.debug(
            "end of turn: p=%.2f -> wait %.0f ms (%s)",
            p,
            decision.silence_ms,
            "complete" if decision.complete else "mid-thought",
        )
        self._emit(decision)

    def _resume(self, i: int) -> None:
        if self._pending is not None and not self._pending.done():
            self._pending.cancel()
        decision = self._decision
        self._pending = None
        self._decision = None
        if decision is not None:
            self._emit(TurnResumed(self._time(i), decision))

    def _emit(self, ev: TurnEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(ev)
        except Exception:
            logger.exception("end-of-turn event callback failed")

    @property
    def utterance_windows(self) -> int:
        """Windows of the utterance in progress so far, pre-roll included (0 outside an utterance)."""
        return len(self._buf) if self.speaking else 0

    def utterance_pcm(self, start_window: int = 0) -> bytes:
        """The audio of the utterance in progress from window ``start_window`` on (pre-roll included):
        with 0, what ``SpeechEnd.pcm`` would start with. Empty outside an utterance."""
        return b"".join(self._buf[start_window:]) if self.speaking else b""

    def flush(self) -> list[SegmenterEvent]:
        """End of stream: close an utterance in progress (see :meth:`Segmenter.flush`)."""
        if self._pending is not None and not self._pending.done():
            self._pending.cancel()
        self._clear_turn()
        return super().flush()


# ------------------------------------------------------------------------------------------------ settings


DEFAULTS: dict[TurnDetectionKind, EndOfTurnPolicy] = {
    # asked after 128 ms: on the corpus as few false endpoints as after 64 ms, more complete turns recognized
    "smart-turn": EndOfTurnPolicy(
        min_silence_ms=250, max_silence_ms=1600, complete_threshold=0.5, probe_ms=128
    ),
    # LiveKit Agents' own settings for its local model: 200 ms of silence first, "unlikely" below 0.36 (en)
    "livekit": EndOfTurnPolicy(
        min_silence_ms=250, max_silence_ms=1600, complete_threshold=0.36, probe_ms=200
    ),
}
"""The policy of each model unless ``TURN_*`` settings override it (measured on the turn corpus)."""


class TurnDetectionSettings(BaseSettings):
    """End-of-turn settings from the environment (and ``.env``); blank values count as unset.

    ``TURN_DETECTION``: ``vad`` (a fixed silence: ``TURN_MIN_SILENCE_MS``, else the VAD's
    ``VAD_MIN_SILENCE_MS``), ``smart-turn`` or ``livekit``. ``TURN_MIN_SILENCE_MS`` / ``TURN_MAX_SILENCE_MS``:
    the silence when the turn is complete / mid-thought; ``TURN_COMPLETE_THRESHOLD``: P(complete) that counts
    as complete. Unset values take the model's defaults (:data:`DEFAULTS`). ``TURN_TEXT_CHECK``: also hold
    the turn when its transcript stops mid-sentence (:meth:`unfinished_hold_ms`), in ``TURN_TEXT_LANGUAGE``.
    """

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True
    )

    detection: TurnDetectionKind = Field(default="vad", validation_alias="TURN_DETECTION")
    min_silence_ms: float | None = Field(
        default=None, gt=0, le=10_000, validation_alias="TURN_MIN_SILENCE_MS"
    )
    max_silence_ms: float | None = Field(
        default=None, gt=0, le=10_000, validation_alias="TURN_MAX_SILENCE_MS"
    )
    complete_threshold: float | None = Field(
        default=None, ge=0.0, le=1.0, validation_alias="TURN_COMPLETE_THRESHOLD"
    )
    text_check: bool | None = Field(default=None, validation_alias="TURN_TEXT_CHECK")
    text_language: str = Field(default="en", min_length=2, validation_alias="TURN_TEXT_LANGUAGE")

    def unfinished_hold_ms(self, vad_min_silence_ms: float = 600.0) -> float | None:
        """How much longer to wait, after the turn's silence, when its transcript stops mid-sentence
        (:mod:`llmrtc.turn_text`); ``None`` when the words are not checked.

        ``TURN_TEXT_CHECK`` unset: checked with a model (``smart-turn``, ``livekit``), not with ``vad``. The
        total wait is the policy's mid-thought silence (``TURN_MAX_SILENCE_MS``); with ``vad`` that is
        ``TURN_MAX_SILENCE_MS`` when set, else 1600 ms. Nothing is checked in a language the check does not
        know (``TURN_TEXT_LANGUAGE``, default ``en``).
        """
        from llmrtc.turn_text import SUPPORTED_LANGUAGES

        enabled = self.text_check if self.text_check is not None else self.detection != "vad"
        if not enabled or self.text_language.lower().split("-")[0] not in SUPPORTED_LANGUAGES:
            return None
        policy = self.policy(vad_min_silence_ms)
        ceiling = policy.max_silence_ms
        if self.detection == "vad":
            ceiling = self.max_silence_ms or DEFAULTS["smart-turn"].max_silence_ms
        return max(0.0, ceiling - policy.min_silence_ms)

    def policy(self, vad_min_silence_ms: float = 600.0) -> EndOfTurnPolicy:
        """The policy these settings describe (``vad_min_silence_ms``: the worker's ``VAD_MIN_SILENCE_MS``)."""
        if self.detection == "vad":
            return EndOfTurnPolicy.fixed(self.min_silence_ms or vad_min_silence_ms)
        base = DEFAULTS[self.detection]
        update = {
            k: v
            for k, v in (
                ("min_silence_ms", self.min_silence_ms),
                ("max_silence_ms", self.max_silence_ms),
                ("complete_threshold", self.complete_threshold),
            )
            if v is not None
        }
        merged = base.model_dump() | update
        merged["probe_ms"] = min(merged["probe_ms"], merged["min_silence_ms"])
        try:
            return EndOfTurnPolicy.model_validate(merged)
        except ValueError as exc:
            raise ConfigError(f"invalid TURN_* settings: {exc}") from exc

    def segmenter(
        self,
        config: SegmenterConfig | None = None,
        *,
        on_event: Callable[[TurnEvent], None] | None = None,
        runner: EndOfTurnRunner | None = None,
    ) -> TurnSegmenter:
        """A :class:`TurnSegmenter` for one stream: these settings' policy, the model on the process-wide
        runner (``runner`` overrides it). ``config.max_silence_ms`` plays ``VAD_MIN_SILENCE_MS``."""
        config = config or SegmenterConfig()
        policy = self.policy(vad_min_silence_ms=config.max_silence_ms)
        if self.detection != "vad" and runner is None:
            runner = get_shared_runner(self.detection)
        return TurnSegmenter(config, policy=policy, runner=runner, on_event=on_event)


_REGISTERED: dict[str, Callable[[], EndOfTurnDetector]] = {}


def register_detector(kind: str, factory: Callable[[], EndOfTurnDetector]) -> None:
    """Make :func:`create_detector` build ``factory()`` for ``kind``: how the worker adds LiveKit's model
    (``worker.eot_livekit``), which llmrtc itself never imports."""
    _REGISTERED[kind] = factory


def create_detector(kind: TurnDetectionKind) -> EndOfTurnDetector | None:
    """Load the model of ``kind`` (``None`` for ``vad``); raises :class:`ConfigError` if it is not installed."""
    if kind == "vad":
        return None
    if kind in _REGISTERED:
        return _REGISTERED[kind]()
    if kind == "smart-turn":
        from llmrtc.audio.smart_turn import SmartTurnDetector

        return SmartTurnDetector()
    if kind == "livekit":
        raise ConfigError(
            "TURN_DETECTION=livekit: LiveKit's end-of-turn model runs in the llmrtc worker only (its licence "
            "allows it only with LiveKit Agents); the worker registers it (worker.eot_livekit.register())"
        )
    raise ConfigError(f"unknown TURN_DETECTION {kind!r}: use vad, smart-turn or livekit")


_runners: dict[str, EndOfTurnRunner] = {}
_runners_lock = threading.Lock()


def get_shared_runner(kind: TurnDetectionKind) -> EndOfTurnRunner | None:
    """The process-wide runner of ``kind``'s model, loaded once (``None`` for ``vad``); prewarm with this."""
    if kind == "vad":
        return None
    with _runners_lock:
        runner = _runners.get(kind)
        if runner is None:
            started = time.perf_counter()
            detector = create_detector(kind)
            assert detector is not None
            runner = _runners[kind] = EndOfTurnRunner(detector)
            logger.info(
                "loaded the %s end-of-turn model in %.0f ms", kind, 1000 * (time.perf_counter() - started)
            )
        return runner


__all__ = [
    "DEFAULTS",
    "EndOfTurnDetector",
    "EndOfTurnPolicy",
    "EndOfTurnRunner",
    "TurnDecision",
    "TurnDetectionKind",
    "TurnDetectionSettings",
    "TurnEvent",
    "TurnResumed",
    "TurnSegmenter",
    "create_detector",
    "get_shared_runner",
    "register_detector",
]
