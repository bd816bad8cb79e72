"""Silero VAD: one model per process serving many streams, with batched evaluation.

Silero v6 judges one window of 512 samples at 16 kHz (32 ms) at a time. Each stream keeps its own recurrent
state (``[2, 128]``) and the last 64 samples of the previous window (the *context* the model expects in
front of each window), so windows of many streams can be stacked into one ``[batch, 576]`` call and the state
scattered back: the decisions are exactly those of evaluating each stream on its own.

**Silent windows skip the model.** A window whose loudest sample is below the stream's silence floor
(``silence_floor_dbfs``, default :data:`DEFAULT_SILENCE_FLOOR_DBFS`: -64 dBFS, an amplitude of 20 of 32768)
scores 0 without a model call once Silero has judged the silence itself (the stream's latest score below
:data:`SKIP_BELOW`), and the stream's state becomes the one Silero reaches after 1.3 s of digital silence.
Muted or silent participants, noise-suppressed microphones between words and the digital silence of a
synthetic source then cost almost nothing; any audible sound is judged by the model as before, and so are
the windows over which Silero's score decays after a word, so utterances end where they did (on the speech
fixtures padded with digital silence: the same utterances, each ending within a window and starting
within two; docs/audio.md "VAD"). ``silence_floor_dbfs=None`` evaluates every window.

Two runtimes of the same model ship inside the ``silero-vad`` package:

* ``"onnx"``: ``silero_vad.onnx`` on onnxruntime (no torch import; the default, fastest here),
* ``"torch"``: the TorchScript (JIT) model on torch.

Use::

    engine = get_shared_engine()            # loads once per process
    stream = engine.open_stream()
    probs = await stream.process(pcm16)     # batched with every other stream of the process
    probs = stream.process_sync(pcm16)      # or synchronously, on its own
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import logging
import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from llmrtc.errors import AudioError, ConfigError

logger = logging.getLogger(__name__)

VADRuntime = Literal["onnx", "torch"]
DEFAULT_RUNTIME: VADRuntime = "onnx"
DEFAULT_TICK_MS = 0.0

SAMPLE_RATE = 16_000
WINDOW_SAMPLES = 512
WINDOW_BYTES = WINDOW_SAMPLES * 2
WINDOW_S = WINDOW_SAMPLES / SAMPLE_RATE
CONTEXT_SAMPLES = 64
STATE_SHAPE = (2, 128)
DEFAULT_SILENCE_FLOOR_DBFS = -64.0
"""Windows quieter than this (their peak, in dB relative to full scale) score 0 without a model call."""
SKIP_BELOW = 0.1
"""A silent window skips the model only while the stream's latest score is below this: the few windows
over which Silero's score decays after speech still go to the model, so utterances end where they did."""
_SETTLE_WINDOWS = 40  # a silent window leaves a stream in the state 1.3 s of digital silence would

FloatArray = npt.NDArray[np.float32]


def silero_model_path(runtime: VADRuntime) -> Path:
    """The model file inside the installed ``silero-vad`` package (found without importing it)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("silero-vad is not installed: pip install 'llmrtc[vad]'")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    path = data / ("silero_vad.onnx" if runtime == "onnx" else "silero_vad.jit")
    if not path.is_file():
        raise ConfigError(f"silero-vad model file missing: {path}")
    return path


# ------------------------------------------------------------------------------------------------ models


class SileroModel(ABC):
    """A loaded Silero model: ``[B, 576]`` windows (context + 512 samples) and ``[2, B, 128]`` state in."""

    runtime: VADRuntime

    @abstractmethod
    def infer(self, x: FloatArray, state: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Return ``(probabilities [B], new_state [2, B, 128])``."""


class SileroOnnxModel(SileroModel):
    """Silero on onnxruntime, one intra-op thread (no torch import)."""

    runtime: VADRuntime = "onnx"

    def __init__(self, path: Path | None = None, *, threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigError("onnxruntime is not installed: pip install 'llmrtc[vad]'") from exc
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        model_path = path or silero_model_path("onnx")
        self._session = ort.InferenceSession(
            str(model_path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)

    def infer(self, x: FloatArray, state: FloatArray) -> tuple[FloatArray, FloatArray]:
        out, new_state = self._session.run(None, {"input": x, "state": state, "sr": self._sr})
        return np.asarray(out, dtype=np.float32).reshape(-1), np.asarray(new_state, dtype=np.float32)


class SileroTorchModel(SileroModel):
    """Silero's TorchScript model on torch (its 16 kHz sub-model, called with explicit state).

    torch's intra-op thread count is process-wide; ``threads`` sets it (Silero itself sets 1 on import).
    """

    runtime: VADRuntime = "torch"

    def __init__(self, path: Path | None = None, *, threads: int | None = 1) -> None:
        try:
            import torch
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigError("the torch runtime needs torch: pip install torch==2.13.0") from exc
        self._torch: Any = torch
        if threads is not None:
            torch.set_num_threads(threads)
        with warnings.catch_warnings():  # torch 2.13 deprecates jit.load; Silero ships only TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            model = self._torch.jit.load(str(path or silero_model_path("torch")), map_location="cpu")
        model.eval()
        self._model: Any = model._model

    def infer(self, x: FloatArray, state: FloatArray) -> tuple[FloatArray, FloatArray]:
        torch = self._torch
        with torch.inference_mode():
            out, new_state = self._model(torch.from_numpy(x), torch.from_numpy(state))
        return (
            out.numpy().astype(np.float32, copy=False).reshape(-1),
            new_state.numpy().astype(np.float32, copy=False),
        )


def load_model(runtime: VADRuntime = DEFAULT_RUNTIME, *, threads: int = 1) -> SileroModel:
    """Load the Silero model for ``runtime`` (``"onnx"`` or ``"torch"``)."""
    if runtime == "onnx":
        return SileroOnnxModel(threads=threads)
    if runtime == "torch":
        return SileroTorchModel(threads=threads)
    raise ConfigError(f"unknown VAD runtime {runtime!r}: use 'onnx' or 'torch'")


# ------------------------------------------------------------------------------------------------ streams


def pcm16_to_float(pcm: bytes | bytearray | memoryview) -> FloatArray:
    """PCM16 little-endian bytes to float32 samples in [-1, 1)."""
    if len(pcm) % 2:
        raise AudioError(f"PCM16 needs an even number of bytes, got {len(pcm)}")
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


_stream_ids = itertools.count(1)


def silence_peak(silence_floor_dbfs: float | None) -> float:
    """The floor in PCM16 units (0 when there is none): a window whose peak is below it is silent."""
    if silence_floor_dbfs is None:
        return 0.0
    if not -120.0 <= silence_floor_dbfs <= -20.0:
        raise ConfigError(f"a VAD silence floor of {silence_floor_dbfs} dBFS is outside -120..-20")
    return float(32768.0 * 10.0 ** (silence_floor_dbfs / 20.0))


def _peaks(windows: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Each window's largest absolute sample (int16 or float windows alike)."""
    peaks: npt.NDArray[Any] = np.maximum(
        windows.max(axis=1).astype(np.float32), -windows.min(axis=1).astype(np.float32)
    )
    return peaks


class VADStream:
    """One audio stream's VAD state: recurrent state, context and not-yet-windowed samples.

    Feed 16 kHz mono PCM16 in pieces of any size; every complete 512-sample window gives one speech
    probability, in order. A stream is fed by one task at a time: do not call ``process`` and
    ``process_sync`` on the same stream concurrently. Windows quieter than ``silence_floor_dbfs`` score 0
    without a model call (``None``: every window is evaluated; see the module docstring).
    """

    def __init__(
        self,
        engine: VADEngine,
        name: str | None = None,
        *,
        silence_floor_dbfs: float | None = DEFAULT_SILENCE_FLOOR_DBFS,
    ) -> None:
        self.engine = engine
        self.id = next(_stream_ids)
        self.name = name or f"vad-{self.id}"
        self.silence_peak = silence_peak(silence_floor_dbfs)
        self.state: FloatArray = np.zeros((2, 128), dtype=np.float32)
        self.context: FloatArray = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)
        self._pending = bytearray()
        self._in_flight = 0
        self.windows_done = 0
        self.windows_skipped = 0
        self.last_probability = 0.0
        """The latest window's score (0 before the first): a silent window skips the model only below
        :data:`SKIP_BELOW`, once Silero itself has judged the silence."""
        self.closed = False

    def reset(self) -> None:
        """Forget the recurrent state and any buffered samples (a new, unrelated recording follows)."""
        self.state = np.zeros((2, 128), dtype=np.float32)
        self.context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)
        self.last_probability = 0.0
        self._pending.clear()

    def take_pcm_windows(self, pcm: bytes | bytearray | memoryview) -> npt.NDArray[np.int16]:
        """Buffer ``pcm`` and return the complete windows now available as ``[n, 512]`` int16."""
        if self.closed:
            raise AudioError(f"VAD stream {self.name} is closed")
        if len(pcm) % 2:
            raise AudioError(f"PCM16 needs an even number of bytes, got {len(pcm)}")
        self._pending += pcm
        n = len(self._pending) // WINDOW_BYTES
        if n == 0:
            return np.zeros((0, WINDOW_SAMPLES), dtype=np.int16)
        take = n * WINDOW_BYTES
        windows = np.frombuffer(bytes(self._pending[:take]), dtype="<i2").reshape(n, WINDOW_SAMPLES)
        del self._pending[:take]
        return windows

    def take_windows(self, pcm: bytes | bytearray | memoryview) -> FloatArray:
        """Buffer ``pcm`` and return the complete windows now available as ``[n, 512]`` float32."""
        return self.take_pcm_windows(pcm).astype(np.float32) / np.float32(32768.0)

    def process_sync(self, pcm: bytes | bytearray | memoryview) -> list[float]:
        """Evaluate the complete windows in ``pcm`` now, on this thread (batch of one per window)."""
        windows = self.take_windows(pcm)
        return [float(self.engine.evaluate([self], windows[i : i + 1])[0]) for i in range(len(windows))]

    async def process(self, pcm: bytes | bytearray | memoryview) -> list[float]:
        """Evaluate the complete windows in ``pcm`` in the engine's shared batches; one probability each."""
        windows = self.take_pcm_windows(pcm)  # converted to float in the batching thread, all at once
        n = len(windows)
        if n == 0:
            return []
        if (
            self.silence_peak
            and self._in_flight == 0
            and self.last_probability < SKIP_BELOW
            and bool((_peaks(windows) < self.silence_peak).all())
        ):
            # nothing audible and nothing of this stream queued ahead: no model call, no thread hand-off
            self._settle_silent(windows[-1, -CONTEXT_SAMPLES:].astype(np.float32) / np.float32(32768.0), n)
            return [0.0] * n
        self._in_flight += 1
        try:
            return await self.engine.scheduler.submit(self, windows)
        finally:
            self._in_flight -= 1

    def _settle_silent(self, context: FloatArray, windows: int) -> None:
        """``windows`` silent windows went by (the last one ending in ``context``): Silero's silence state."""
        self.state = self.engine.silent_state
        self.context = context
        self.last_probability = 0.0
        self.windows_done += windows
        self.windows_skipped += windows
        self.engine.count_skipped(windows)

    def close(self) -> None:
        """Release the stream; pending batched work for it is dropped."""
        self.closed = True
        sched = self.engine._scheduler
        if sched is not None:
            sched.discard(self)


# ------------------------------------------------------------------------------------------------ engine


class VADEngine:
    """One Silero model serving any number of :class:`VADStream` handles, thread-safe.

    :meth:`evaluate` runs one window of each given stream in a single batched model call; the async path
    (:meth:`VADStream.process`) goes through :attr:`scheduler`, which batches the due windows of every stream
    in the process.
    """

    def __init__(
        self, model: SileroModel, *, max_batch: int = 2048, tick_ms: float = DEFAULT_TICK_MS
    ) -> None:
        self.model = model
        self.runtime: VADRuntime = model.runtime
        self._lock = threading.Lock()
        self._sched_lock = threading.Lock()
        self._max_batch = max_batch
        self._tick_ms = tick_ms
        self._scheduler: BatchScheduler | None = None
        self._silent_state: FloatArray | None = None
        self._count_lock = threading.Lock()
        self.windows_evaluated = 0
        """Windows scored by the model so far."""
        self.windows_skipped = 0
        """Windows that scored 0 without a model call (below their stream's silence floor) so far."""

    @classmethod
    def load(cls, runtime: VADRuntime = DEFAULT_RUNTIME, **kwargs: Any) -> VADEngine:
        """Load the model for ``runtime`` and wrap it in an engine (its silence state computed up front)."""
        engine = cls(load_model(runtime), **kwargs)
        engine.silent_state  # noqa: B018 - computed now, not on a stream's first silent window
        return engine

    def open_stream(
        self, name: str | None = None, *, silence_floor_dbfs: float | None = DEFAULT_SILENCE_FLOOR_DBFS
    ) -> VADStream:
        """A new stream with fresh state (``silence_floor_dbfs``: see :class:`VADStream`)."""
        return VADStream(self, name, silence_floor_dbfs=silence_floor_dbfs)

    @property
    def silent_state(self) -> FloatArray:
        """The recurrent state Silero reaches after 1.3 s of digital silence, which a silent window leaves a
        stream in (computed once, then shared: streams replace their state, never change it in place)."""
        state = self._silent_state
        if state is None:
            x = np.zeros((1, CONTEXT_SAMPLES + WINDOW_SAMPLES), dtype=np.float32)
            state = np.zeros((2, 1, 128), dtype=np.float32)
            with self._lock:
                for _ in range(_SETTLE_WINDOWS):
                    _, state = self.model.infer(x, state)
            state = np.ascontiguousarray(state[:, 0, :])
            state.setflags(write=False)
            self._silent_state = state
        return state

    def count_skipped(self, windows: int) -> None:
        """Count ``windows`` that scored 0 without a model call (see :attr:`windows_skipped`)."""
        with self._count_lock:
            self.windows_skipped += windows

    def evaluate(self, streams: Sequence[VADStream], windows: FloatArray) -> FloatArray:
        """One window per stream (``windows[i]`` belongs to ``streams[i]``), in one model call.

        Advances each stream's state and context; a stream may appear only once. A window below its
        stream's silence floor scores 0 and is left out of the call.
        """
        n = len(streams)
        if windows.shape != (n, WINDOW_SAMPLES):
            raise AudioError(f"expected windows of shape ({n}, {WINDOW_SAMPLES}), got {windows.shape}")
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        floors = np.fromiter((s.silence_peak for s in streams), dtype=np.float32, count=n) / np.float32(
            32768.0
        )
        settled = np.fromiter((s.last_probability < SKIP_BELOW for s in streams), dtype=bool, count=n)
        silent = (_peaks(windows) < floors) & settled
        if not silent.any():
            return self._infer(streams, windows)
        probs = np.zeros(n, dtype=np.float32)
        loud = np.flatnonzero(~silent)
        if len(loud):
            probs[loud] = self._infer([streams[int(i)] for i in loud], windows[loud])
        for i in np.flatnonzero(silent):
            streams[int(i)]._settle_silent(windows[i, -CONTEXT_SAMPLES:].copy(), 1)
        return probs

    @property
    def scheduler(self) -> BatchScheduler:
        """The process-wide batching scheduler of this engine (started on first use)."""
        sched = self._scheduler
        if sched is not None:
            return sched
        with self._sched_lock:  # not the inference lock: never wait for a model call here
            if self._scheduler is None:
                self._scheduler = BatchScheduler(self, max_batch=self._max_batch, tick_ms=self._tick_ms)
            return self._scheduler

    def _infer(self, streams: Sequence[VADStream], windows: FloatArray) -> FloatArray:
        n = len(streams)
        x = np.empty((n, CONTEXT_SAMPLES + WINDOW_SAMPLES), dtype=np.float32)
        x[:, :CONTEXT_SAMPLES] = np.stack([s.context for s in streams])
        x[:, CONTEXT_SAMPLES:] = windows
        state = np.stack([s.state for s in streams], axis=1)
        try:
            with self._lock:
                probs, new_state = self.model.infer(x, state)
        except Exception as exc:
            logger.error("VAD inference failed (runtime=%s, batch=%d): %s", self.runtime, n, exc)
            raise AudioError(f"VAD inference failed: {exc}") from exc
        # per-stream rows of two fresh arrays (views: no per-stream copies)
        states = np.ascontiguousarray(new_state.transpose(1, 0, 2))
        contexts = x[:, -CONTEXT_SAMPLES:].copy()
        for s, st, ctx, p in zip(
            streams, states, contexts, np.asarray(probs, dtype=np.float32).reshape(-1).tolist(), strict=True
        ):
            s.state = st
            s.context = ctx
            s.last_probability = p
            s.windows_done += 1
        with self._count_lock:
            self.windows_evaluated += n
        return probs

    def process_many(self, items: Sequence[tuple[VADStream, bytes]]) -> list[list[float]]:
        """Synchronous batched evaluation: the k-th windows of all streams go in one call, for each k."""
        if len({id(s) for s, _ in items}) != len(items):
            raise AudioError("process_many: each stream may appear only once")
        per_stream = [(s, s.take_windows(pcm)) for s, pcm in items]
        results: list[list[float]] = [[] for _ in items]
        depth = max((len(w) for _, w in per_stream), default=0)
        for k in range(depth):
            idx = [i for i, (_, w) in enumerate(per_stream) if len(w) > k]
            for start in range(0, len(idx), self._max_batch):
                part = idx[start : start + self._max_batch]
                probs = self.evaluate(
                    [per_stream[i][0] for i in part], np.stack([per_stream[i][1][k] for i in part])
                )
                for i, p in zip(part, probs, strict=True):
                    results[i].append(float(p))
        return results

    def close(self) -> None:
        """Stop the scheduler thread (pending work fails with :class:`AudioError`)."""
        with self._sched_lock:
            sched, self._scheduler = self._scheduler, None
        if sched is not None:
            sched.stop()


# ------------------------------------------------------------------------------------------------ batching


@dataclass
class _Job:
    stream: VADStream
    windows: npt.NDArray[np.int16]
    future: asyncio.Future[list[float]]
    loop: asyncio.AbstractEventLoop
    results: list[float] = field(default_factory=list)
    submitted: float = field(default_factory=time.monotonic)


class BatchScheduler:
    """Batches the due windows of every stream of an engine into shared model calls.

    A single daemon thread owns the model calls; event loops (one or many, as with livekit-agents' thread
    executor) submit windows and await futures. Each round takes the next window of every stream that has
    one and evaluates them in one call, so per-stream state stays in order. Batching is self-clocking:
    while one call runs, newly due windows queue up for the next, so batches grow with load without adding
    latency when idle. ``tick_ms > 0`` additionally waits that long after the first window arrives to
    gather more (fewer, larger calls at the cost of that much latency).
    """

    def __init__(self, engine: VADEngine, *, max_batch: int = 2048, tick_ms: float = DEFAULT_TICK_MS) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._tick_s = max(tick_ms, 0.0) / 1000.0
        self._cond = threading.Condition()
        self._queues: dict[VADStream, deque[_Job]] = {}
        self._stopped = False
        self.calls = 0
        self.windows = 0
        self._max_lag_s = 0.0
        self._thread = threading.Thread(target=self._run, name="llmrtc-vad-batcher", daemon=True)
        self._thread.start()

    @property
    def mean_batch(self) -> float:
        """Average windows per model call so far."""
        return self.windows / self.calls if self.calls else 0.0

    def take_max_lag_ms(self) -> float:
        """The longest time a submission waited for its results since the last call (then reset), in ms:
        how far the VAD runs behind the audio it was given."""
        with self._cond:
            lag, self._max_lag_s = self._max_lag_s, 0.0
        return lag * 1000.0

    def submit(self, stream: VADStream, windows: npt.NDArray[np.int16]) -> asyncio.Future[list[float]]:
        """Queue ``windows`` of ``stream``; the future resolves to their probabilities, in order."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[float]] = loop.create_future()
        with self._cond:
            if self._stopped:
                raise AudioError("the VAD engine is closed")
            self._queues.setdefault(stream, deque()).append(_Job(stream, windows, fut, loop))
            self._cond.notify()
        return fut

    def discard(self, stream: VADStream) -> None:
        """Drop the queued work of ``stream`` (its futures are cancelled)."""
        with self._cond:
            jobs = self._queues.pop(stream, None)
        for job in jobs or ():
            with contextlib.suppress(RuntimeError):
                job.loop.call_soon_threadsafe(_cancel, job.future)

    def stop(self) -> None:
        """Stop the thread; queued work fails."""
        with self._cond:
            self._stopped = True
            queues, self._queues = self._queues, {}
            self._cond.notify()
        err = AudioError("the VAD engine was closed")
        _dispatch([(job, None, err) for q in queues.values() for job in q])
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queues and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
            if self._tick_s:
                time.sleep(self._tick_s)
            try:
                self._round()
            except Exception as exc:  # never let the batching thread die with callers waiting
                logger.exception("VAD batching round failed")
                with self._cond:
                    queues, self._queues = self._queues, {}
                err = AudioError(f"VAD batching failed: {exc}")
                _dispatch([(job, None, err) for q in queues.values() for job in q])

    def _round(self) -> None:
        with self._cond:
            if self._stopped:
                return
            heads = [(s, q[0]) for s, q in itertools.islice(self._queues.items(), self._max_batch)]
        if not heads:
            return
        streams = [s for s, _ in heads]
        windows = np.stack([job.windows[len(job.results)] for _, job in heads]).astype(np.float32)
        windows /= np.float32(32768.0)
        try:
            probs = self._engine.evaluate(streams, windows).tolist()
        except AudioError as exc:
            with self._cond:
                for s, _ in heads:
                    self._queues.pop(s, None)
            _dispatch([(job, None, exc) for _, job in heads])
            return
        self.calls += 1
        self.windows += len(heads)
        done: list[tuple[_Job, list[float] | None, BaseException | None]] = []
        now = time.monotonic()
        with self._cond:
            for (s, job), p in zip(heads, probs, strict=True):
                job.results.append(p)
                if len(job.results) == len(job.windows):
                    q = self._queues.get(s)
                    if q and q[0] is job:
                        q.popleft()
                        if not q:
                            del self._queues[s]
                    done.append((job, job.results, None))
                    self._max_lag_s = max(self._max_lag_s, now - job.submitted)
        _dispatch(done)


def _dispatch(outcomes: list[tuple[_Job, list[float] | None, BaseException | None]]) -> None:
    """Settle futures with one wake-up per event loop (not one per future)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, list[float] | None, BaseException | None]]] = {}
    for item in outcomes:
        by_loop.setdefault(item[0].loop, []).append(item)
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_settle, items)


def _settle(items: list[tuple[_Job, list[float] | None, BaseException | None]]) -> None:
    for job, value, exc in items:
        if job.future.done():
            continue
        if exc is not None:
            job.future.set_exception(exc)
        else:
            job.future.set_result(value or [])


def _cancel(fut: asyncio.Future[list[float]]) -> None:
    if not fut.done():
        fut.cancel()


# ------------------------------------------------------------------------------------------------ shared


_shared: dict[VADRuntime, VADEngine] = {}
_shared_lock = threading.Lock()


def get_shared_engine(runtime: VADRuntime = DEFAULT_RUNTIME) -> VADEngine:
    """The process-wide engine for ``runtime``: loaded once, shared by every stream (prewarm with this)."""
    if runtime not in ("onnx", "torch"):
        raise ConfigError(f"unknown VAD runtime {runtime!r}: use 'onnx' or 'torch'")
    with _shared_lock:
        engine = _shared.get(runtime)
        if engine is None:
            started = time.perf_counter()
            engine = VADEngine.load(runtime)
            _shared[runtime] = engine
            logger.info(
                "loaded Silero VAD (runtime=%s) in %.0f ms", runtime, 1000 * (time.perf_counter() - started)
            )
        return engine
