"""The worker's load: one figure, 0..1, from what actually limits it; reported to LiveKit as ``load_fnc``.

Five signals, each scaled so that ``1.0`` is the point where turns start to be late (calibration in
``docs/worker.md``, measured with ``bench/capacity.py``):

- **CPU**: the process's CPU time over the last :data:`WINDOW_S` seconds, as a share of the cores it may
  run on (``os.sched_getaffinity``), divided by :data:`CPU_FULL` (the share at which a loaded machine
  still answers on time; above it the event loops and the VAD thread queue behind each other);
- **machine CPU**: how busy those cores are with everything on them (other workers, the media server, ...),
  over :data:`MACHINE_FULL`: a worker sharing its host gets only what the others leave (LiveKit Agents'
  default load is this figure alone; ``WORKER_LOAD_MACHINE=false`` leaves it out);
- **event-loop lag** of the job loops: every job's loop runs a probe (:func:`watch_loop`) that sleeps
  :data:`PROBE_INTERVAL_S` and records how late it woke; the worst lag in the window over
  :data:`LOOP_LAG_FULL_MS`;
- **VAD lag**: the longest wait of a submission to the process's batched Silero engine
  (:meth:`llmrtc.audio.vad.BatchScheduler.take_max_lag_ms`), over :data:`VAD_LAG_FULL_MS`;
- **audio underruns** of the agent's tracks (the playout queue ran dry in the middle of an answer: a
  listener hears a gap; :func:`note_underrun`), per second over :data:`UNDERRUNS_FULL_PER_S`.

The load is the largest of the five (each can be the bottleneck on its own), smoothed over the window, plus
what the rooms accepted in the last :data:`ADMISSION_S` will cost (**admissions**: a room's cost shows in
the signals only seconds after its job is accepted, so without this a burst of dispatches meets an idle
worker and every room is taken; ``bench/capacity.py`` at N = 16 saw 16 rooms accepted in 2 s). A room is
counted at the cost per room the process measures (its load over its rooms), at least
``WORKER_ROOM_CPU`` cores (default 0.15). And the load is never below the open rooms at ``WORKER_ROOM_CPU``
each: a room whose people are silent costs little now, but they may all speak at once (with the measured
load alone, the same bench filled the worker with 14 quiet rooms, then answered 3 of 28 turns).
``WORKER_LOAD_THRESHOLD`` (default 0.7) is where the worker reports itself full. :func:`current_load` is
what livekit-agents calls; it also sets the ``llmrtc_worker_load`` gauge and records
``llmrtc_vad_lag_ms``. :func:`inject_load` raises the figure by hand (tests, and operators draining load
off a host).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from llmrtc.metrics import MetricNames, MetricsAdapter
from worker.observability import open_rooms

log = logging.getLogger("llmrtc.worker.load")

WINDOW_S = 2.5
"""Signals are taken over this much recent time (livekit-agents asks for the load every 0.5 s)."""
CPU_FULL = 0.85
"""Process CPU share of its usable cores at which the load is 1.0."""
LOOP_LAG_FULL_MS = 250.0
"""A job loop waking this late adds as much to the time before a turn's first audio: load 1.0."""
VAD_LAG_FULL_MS = 200.0
"""VAD results this late delay every end-of-speech decision by as much: load 1.0."""
UNDERRUNS_FULL_PER_S = 2.0
"""Gaps in the agent's audio per second (all rooms) at which the load is 1.0."""
PROBE_INTERVAL_S = 0.1
MACHINE_FULL = 0.9
"""Share of the usable cores busy (all processes) at which the load is 1.0."""
ROOM_CPU_CORES = 0.15
"""What a room is assumed to cost, in cores, until the process has settled rooms to measure
(``WORKER_ROOM_CPU``; measured: about 0.1 core per talking room, more while it starts)."""
ADMISSION_S = 8.0
"""A room accepted this recently is counted by its estimated cost (connecting, subscribing and its first
turns take seconds to show in the signals)."""
SATURATED_AFTER_S = 5.0
"""The load must stay at 1.0 this long before the worker tells new rooms it cannot serve them: a burst of
room starts (provider clients, the native connection) is not saturation."""


@dataclass(frozen=True, slots=True)
class LoadSample:
    """One reading: the load and the signals it was made of (each already scaled to 1.0 = full)."""

    load: float
    cpu: float
    loop_lag: float
    vad_lag: float
    underruns: float
    loop_lag_ms: float
    vad_lag_ms: float
    admissions: float = 0.0
    """The estimated cost of the rooms accepted in the last :data:`ADMISSION_S` (already in ``load``)."""
    rooms: float = 0.0
    """The open rooms at ``WORKER_ROOM_CPU`` each (``load`` is at least this plus ``admissions``)."""
    machine: float = 0.0
    """The usable cores' busy share (every process) over :data:`MACHINE_FULL`."""

    def bottleneck(self) -> str:
        parts = {
            "cpu": self.cpu,
            "loop_lag": self.loop_lag,
            "vad_lag": self.vad_lag,
            "underruns": self.underruns,
            "admissions": self.admissions,
            "rooms": self.rooms,
            "machine": self.machine,
        }
        return max(parts, key=lambda k: parts[k])


def _usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class MachineCPU:
    """How busy the cores this process may use are, all processes together, since the last reading
    (``psutil``'s per-core times; ``None`` where they cannot be read)."""

    def __init__(self) -> None:
        try:
            self._cores: list[int] | None = sorted(os.sched_getaffinity(0))
        except AttributeError:  # not Linux: every core
            self._cores = None
        self._last: list[tuple[float, float]] | None = None

    def _times(self) -> list[tuple[float, float]] | None:
        try:
            import psutil

            per_core = psutil.cpu_times(percpu=True)
        except Exception:  # no psutil, no /proc: the signal is left out
            return None
        chosen = per_core if self._cores is None else [per_core[i] for i in self._cores if i < len(per_core)]
        out = []
        for t in chosen:
            idle = t.idle + getattr(t, "iowait", 0.0)
            out.append((sum(t) - idle, sum(t)))
        return out

    def busy_share(self) -> float | None:
        """The busy share (0..1) of the usable cores since the previous call (``None`` the first time)."""
        now = self._times()
        last, self._last = self._last, now
        if now is None or last is None or len(now) != len(last):
            return None
        busy = sum(b - b0 for (b, _), (b0, _) in zip(now, last, strict=True))
        total = sum(t - t0 for (_, t), (_, t0) in zip(now, last, strict=True))
        return min(1.0, max(0.0, busy / total)) if total > 0 else None


class LoadMonitor:
    """Collects the signals of one worker process; thread-safe (job loops run on many threads)."""

    def __init__(
        self,
        *,
        window_s: float = WINDOW_S,
        room_cpu_cores: float = ROOM_CPU_CORES,
        admission_s: float = ADMISSION_S,
        rooms: Callable[[], int] = open_rooms,
        machine_busy: Callable[[], float | None] | None = None,
    ) -> None:
        self.window_s = window_s
        self.room_cpu_cores = room_cpu_cores
        self.count_machine = True
        """Whether the machine's CPU (every process on the usable cores) counts (``WORKER_LOAD_MACHINE``)."""
        self.admission_s = admission_s
        self._lock = threading.Lock()
        self._cores = _usable_cores()
        self._admitted: deque[float] = deque()
        self._rooms = rooms
        self._machine_busy = machine_busy if machine_busy is not None else MachineCPU().busy_share
        self._measured = 0.0
        self._per_room = 0.0
        self._cpu_points: deque[tuple[float, float]] = deque()
        self._lags: deque[tuple[float, float]] = deque()
        self._vad: deque[tuple[float, float]] = deque()
        self._underruns: deque[float] = deque()
        self._injected = 0.0
        self._loads: deque[tuple[float, float]] = deque()
        self._full_since: float | None = None
        self.last: LoadSample | None = None

    # ------------------------------------------------------------------------------------- signals in

    def loop_lag(self, lag_ms: float) -> None:
        """A job loop's probe woke ``lag_ms`` late."""
        now = time.monotonic()
        with self._lock:
            self._lags.append((now, lag_ms))
            self._trim(self._lags, now)

    def underrun(self) -> None:
        """An agent track's playout queue ran dry mid-answer."""
        now = time.monotonic()
        with self._lock:
            self._underruns.append(now)
            while self._underruns and self._underruns[0] < now - self.window_s:
                self._underruns.popleft()

    def admit(self) -> float:
        """A room was just accepted: count its estimated cost at once (the next offer sees it); the load
        with it."""
        now = time.monotonic()
        rooms = self._rooms()  # outside the lock: another module's lock is never taken under this one
        with self._lock:
            self._admitted.append(now)
            admissions = self._admissions(now)
            last = self.last
            load = max(self._base(rooms) + admissions, self._injected)
            open_rooms = self._open_rooms_load(rooms)
            if last is not None:
                self.last = replace(last, load=min(load, 1.0), admissions=admissions, rooms=open_rooms)
            else:
                self.last = LoadSample(min(load, 1.0), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, admissions, open_rooms)
            return self.last.load

    def room_load(self) -> float:
        """The estimated load of one more room: the load per room measured when no room was starting, at
        least ``room_cpu_cores`` of the process's cores."""
        with self._lock:
            return self._room_load()

    def _floor(self) -> float:
        return self.room_cpu_cores / self._cores / CPU_FULL

    def _room_load(self) -> float:
        return max(self._floor(), self._per_room)

    def _open_rooms_load(self, rooms: int) -> float:
        """What the open rooms cost when they talk, at the floor: a room listening to silence is cheap, but
        its people may speak any moment. (A room admitted and joined in the last seconds is counted twice
        for that while: on the safe side.)"""
        return rooms * self._floor()

    def _base(self, rooms: int) -> float:
        return max(self._measured, self._open_rooms_load(rooms))

    def _admissions(self, now: float) -> float:
        while self._admitted and self._admitted[0] < now - self.admission_s:
            self._admitted.popleft()
        return len(self._admitted) * self._room_load()

    def inject(self, load: float) -> None:
        """Report at least ``load`` (0 to stop), whatever the signals say."""
        with self._lock:
            self._injected = max(0.0, load)

    def saturated(self) -> bool:
        """Whether the load has been at 1.0 for :data:`SATURATED_AFTER_S` (turns are late now, not only
        during a burst of room starts)."""
        with self._lock:
            since = self._full_since
        return since is not None and time.monotonic() - since >= SATURATED_AFTER_S

    def _trim(self, points: deque[tuple[float, float]], now: float) -> None:
        while points and points[0][0] < now - self.window_s:
            points.popleft()

    # ------------------------------------------------------------------------------------- the figure

    def _cpu_share(self, now: float) -> float:
        cpu = time.process_time()  # all threads of the process: job loops, VAD thread, the native SDK's
        self._cpu_points.append((now, cpu))
        while len(self._cpu_points) > 2 and self._cpu_points[1][0] <= now - self.window_s:
            self._cpu_points.popleft()
        t0, c0 = self._cpu_points[0]
        if now - t0 < 0.2:
            return 0.0
        return (cpu - c0) / (now - t0) / self._cores

    def sample(self, vad_lag_ms: float | None = None) -> LoadSample:
        """Read the signals now (``vad_lag_ms``: the engine's worst lag since the last sample, if known)."""
        now = time.monotonic()
        # read outside the lock (a file read, another module's lock): the job loops' probes take it every
        # 100 ms
        busy = self._machine_busy() if self.count_machine else None
        rooms = self._rooms()
        with self._lock:
            if vad_lag_ms is not None:
                self._vad.append((now, vad_lag_ms))
            self._trim(self._vad, now)
            self._trim(self._lags, now)
            while self._underruns and self._underruns[0] < now - self.window_s:
                self._underruns.popleft()
            cpu_share = self._cpu_share(now)
            lag_ms = max((v for _, v in self._lags), default=0.0)
            vad_ms = max((v for _, v in self._vad), default=0.0)
            underruns_per_s = len(self._underruns) / self.window_s
            cpu = cpu_share / CPU_FULL
            loop_lag = lag_ms / LOOP_LAG_FULL_MS
            vad_lag = vad_ms / VAD_LAG_FULL_MS
            under = underruns_per_s / UNDERRUNS_FULL_PER_S
            machine = (busy or 0.0) / MACHINE_FULL
            raw = max(cpu, machine, loop_lag, vad_lag, under, self._injected)
            # smoothed: the mean of the last readings, so one slow tick does not flip the worker full
            self._loads.append((now, raw))
            self._trim(self._loads, now)
            measured = sum(v for _, v in self._loads) / len(self._loads)
            self._measured = measured
            admissions = self._admissions(now)
            if not self._admitted and rooms:  # every room settled: what one costs here
                self._per_room = measured / rooms
            # saturation is what the signals measure: rooms still starting are not "turns are late"
            full = max(measured, self._injected)
            if full < 1.0:
                self._full_since = None
            elif self._full_since is None:
                # an injected full load counts at once; a measured one from when it began
                self._full_since = now - (SATURATED_AFTER_S if self._injected >= 1.0 else 0.0)
            load = max(self._base(rooms) + admissions, self._injected)
            sample = LoadSample(
                load=min(load, 1.0),
                cpu=cpu,
                loop_lag=loop_lag,
                vad_lag=vad_lag,
                underruns=under,
                loop_lag_ms=lag_ms,
                vad_lag_ms=vad_ms,
                admissions=admissions,
                rooms=self._open_rooms_load(rooms),
                machine=machine,
            )
            self.last = sample
        return sample


_MONITOR = LoadMonitor()


def monitor() -> LoadMonitor:
    """This process's monitor."""
    return _MONITOR


def note_underrun() -> None:
    """An agent track ran dry mid-answer (called by :class:`worker.room.AgentAudio`)."""
    _MONITOR.underrun()


def inject_load(load: float) -> None:
    """Report at least ``load`` from now on (``0``: back to the measured figure)."""
    _MONITOR.inject(load)


def current_load(metrics: MetricsAdapter | None = None) -> float:
    """The load now, 0..1 (livekit-agents' ``load_fnc``); also sets the load gauge and records the VAD lag."""
    from llmrtc.audio.vad import _shared

    vad_ms: float | None = None
    evaluated = skipped = 0
    for engine in list(_shared.values()):
        sched = engine._scheduler
        if sched is not None:
            vad_ms = max(vad_ms or 0.0, sched.take_max_lag_ms())
        evaluated += engine.windows_evaluated
        skipped += engine.windows_skipped
    sample = _MONITOR.sample(vad_ms)
    if metrics is None:
        from worker.observability import process_metrics

        metrics = process_metrics()
    metrics.gauge(MetricNames.WORKER_LOAD, sample.load)
    _count_vad_windows(metrics, evaluated, skipped)
    if vad_ms is not None:
        metrics.timing(MetricNames.VAD_LAG, vad_ms)
    return sample.load


_vad_counted: dict[int, tuple[int, int]] = {}  # per metrics sink: the engines' totals already counted


def _count_vad_windows(metrics: MetricsAdapter, evaluated: int, skipped: int) -> None:
    """Add the windows judged since the last sample to ``llmrtc_vad_windows_total`` (by ``result``)."""
    before_eval, before_skip = _vad_counted.get(id(metrics), (0, 0))
    _vad_counted[id(metrics)] = (evaluated, skipped)
    if evaluated > before_eval:
        metrics.increment(MetricNames.VAD_WINDOWS, evaluated - before_eval, {"result": "evaluated"})
    if skipped > before_skip:
        metrics.increment(MetricNames.VAD_WINDOWS, skipped - before_skip, {"result": "skipped"})


def load_fnc() -> float:
    """livekit-agents' ``load_fnc`` (called every 0.5 s and before each job offer is answered)."""
    return current_load()


async def watch_loop(interval_s: float = PROBE_INTERVAL_S, *, stuck_after_s: float = 5.0) -> None:
    """Run on a job's event loop until cancelled: report how late the loop wakes (its lag), and log a loop
    that was blocked for longer than ``stuck_after_s``."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time()
        await asyncio.sleep(interval_s)
        lag_s = max(0.0, loop.time() - asked - interval_s)
        _MONITOR.loop_lag(lag_s * 1000.0)
        if lag_s > stuck_after_s:
            log.error("a job's event loop was blocked for %.1f s", lag_s)


__all__ = [
    "ADMISSION_S",
    "CPU_FULL",
    "LOOP_LAG_FULL_MS",
    "MACHINE_FULL",
    "ROOM_CPU_CORES",
    "UNDERRUNS_FULL_PER_S",
    "VAD_LAG_FULL_MS",
    "LoadMonitor",
    "LoadSample",
    "MachineCPU",
    "current_load",
    "inject_load",
    "load_fnc",
    "monitor",
    "note_underrun",
    "watch_loop",
]
