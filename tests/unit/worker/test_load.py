"""The worker's load figure (worker/load.py), the shedding decisions built on it, and the supervisor."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from llmrtc.metrics import PrometheusMetrics
from worker import load as load_mod
from worker import shedding
from worker.load import (
    LOOP_LAG_FULL_MS,
    UNDERRUNS_FULL_PER_S,
    VAD_LAG_FULL_MS,
    LoadMonitor,
    current_load,
    inject_load,
    watch_loop,
)
from worker.supervisor import Supervisor

REAL_BUSY_SHARE = load_mod.MachineCPU.busy_share


@pytest.fixture(autouse=True)
def _quiet_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The figures below are about this process's signals: the machine's other load (other tests, benches)
    is left out unless a test sets it."""
    monkeypatch.setattr(load_mod.MachineCPU, "busy_share", lambda self: None)


def test_each_signal_is_scaled_so_that_one_means_turns_are_late() -> None:
    m = LoadMonitor()
    m.loop_lag(LOOP_LAG_FULL_MS / 2)
    s = m.sample()
    assert s.loop_lag == pytest.approx(0.5)
    assert s.load == pytest.approx(0.5, abs=0.05)
    assert s.bottleneck() == "loop_lag"

    m = LoadMonitor()
    s = m.sample(vad_lag_ms=VAD_LAG_FULL_MS * 2)
    assert s.vad_lag == pytest.approx(2.0)
    assert s.load == 1.0  # capped: LiveKit's scale ends at 1

    m = LoadMonitor()
    for _ in range(int(UNDERRUNS_FULL_PER_S * m.window_s)):
        m.underrun()
    assert m.sample().underruns == pytest.approx(1.0)


def test_signals_expire_after_the_window_and_the_figure_is_smoothed() -> None:
    m = LoadMonitor(window_s=0.3)
    m.loop_lag(LOOP_LAG_FULL_MS)
    assert m.sample().load == pytest.approx(1.0, abs=0.05)
    time.sleep(0.15)
    second = m.sample()  # the lag is still in the window
    assert second.loop_lag == pytest.approx(1.0)
    time.sleep(0.4)
    assert m.sample().load < 0.2  # gone


def test_cpu_is_the_process_share_of_its_cores() -> None:
    m = LoadMonitor(window_s=5.0)
    m.sample()
    end = time.process_time() + 0.4
    while time.process_time() < end:
        pass
    s = m.sample()
    assert s.cpu > 0.1
    assert s.bottleneck() == "cpu"


def test_injected_load_is_a_floor_and_drives_shedding() -> None:
    try:
        inject_load(0.8)
        assert current_load(PrometheusMetrics()) >= 0.8
        assert shedding.refuse_offer(0.7)
        assert not shedding.cannot_serve()
        inject_load(1.0)
        current_load(PrometheusMetrics())
        assert shedding.cannot_serve()
    finally:
        inject_load(0.0)
    load_mod._MONITOR = LoadMonitor()
    current_load(PrometheusMetrics())
    assert not shedding.refuse_offer(0.7)


def test_current_load_sets_the_gauge() -> None:
    metrics = PrometheusMetrics()
    inject_load(0.5)
    try:
        current_load(metrics)
    finally:
        inject_load(0.0)
    text = metrics.render().decode()
    line = next(ln for ln in text.splitlines() if ln.startswith("llmrtc_worker_load "))
    assert float(line.split()[1]) >= 0.5


async def test_the_loop_probe_sees_a_blocked_loop() -> None:
    load_mod._MONITOR = LoadMonitor()
    probe = asyncio.create_task(watch_loop(0.02))
    await asyncio.sleep(0.05)
    time.sleep(0.3)  # noqa: ASYNC251 - the point: this loop is blocked
    await asyncio.sleep(0.05)
    probe.cancel()
    sample = load_mod.monitor().sample()
    assert sample.loop_lag_ms >= 250
    assert sample.load >= 0.9


def test_shed_events_say_what_happened() -> None:
    busy = shedding.busy_event()
    assert busy.code == "worker_busy" and busy.retryable
    late = shedding.late_turn_event("turn_1", 6.2)
    assert late.code == "turn_late" and late.turn_id == "turn_1" and "6 s" in late.message
    dropped = shedding.audio_dropped_event(10.4)
    assert dropped.code == "audio_dropped" and dropped.retryable


def test_the_supervisor_restarts_a_dead_worker_and_stops_on_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("worker.supervisor.BACKOFF_MIN_S", 0.05)
    sup = Supervisor([sys.executable, "-c", "import time; time.sleep(0.2)"], 2, poll_s=0.02)
    sup.start()
    pids = {c.proc.pid for c in sup.children if c.proc is not None}
    deadline = time.monotonic() + 10
    while min(c.restarts for c in sup.children) < 1:
        assert time.monotonic() < deadline
        assert sup.step() is None
        time.sleep(0.02)
    assert {c.proc.pid for c in sup.children if c.proc is not None} - pids  # fresh processes
    assert sup.child_env(1)["WORKER_PROCESSES"] == "1"
    sup.stop()
    sup.wait_all()
    assert sup.step() == 0

    bad = Supervisor([sys.executable, "-c", "import sys; sys.exit(2)"], 2, poll_s=0.02)
    assert bad.run() == 2


def test_children_get_their_own_metrics_port() -> None:
    sup = Supervisor(["true"], 3, metrics_port=9100)
    assert [sup.child_env(i)["METRICS_PORT"] for i in range(3)] == ["9100", "9101", "9102"]
    assert "METRICS_PORT" not in Supervisor(["true"], 2, env={}).child_env(0)


def test_a_burst_is_not_saturation_until_it_lasts() -> None:
    m = LoadMonitor()
    m.loop_lag(LOOP_LAG_FULL_MS * 4)  # room starts block the loop for a second
    assert m.sample().load == 1.0
    assert not m.saturated()  # not yet: SATURATED_AFTER_S must pass at full load
    m._full_since = time.monotonic() - 6.0
    assert m.saturated()
    m._lags.clear()
    m._loads.clear()
    m.sample()
    assert not m.saturated()


def test_a_burst_of_offers_is_counted_room_by_room_before_the_signals_show_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    m = LoadMonitor(room_cpu_cores=0.25, rooms=lambda: 0)
    monkeypatch.setattr(load_mod, "_MONITOR", m)
    m.sample()
    per_room = m.room_load()
    assert per_room == pytest.approx(0.25 / load_mod._usable_cores() / load_mod.CPU_FULL)
    accepted = 0
    for _ in range(40):  # sixteen rooms dispatched at once, each offer answered before any room starts
        if shedding.refuse_offer(0.7):
            break
        m.admit()
        accepted += 1
    # accepted while the load with them stayed under the threshold, then refused: not all of them
    assert 1 <= accepted < 40
    assert m.last is not None and m.last.load >= 0.7 and m.last.bottleneck() == "admissions"
    assert accepted == min(40, int(0.7 / per_room - 1e-9) + 1 if per_room < 0.7 else 1)
    assert not m.saturated()  # rooms starting are not late turns: nobody is told "busy" for them


def test_admissions_expire_and_the_measured_cost_per_room_takes_over() -> None:
    rooms = [0]
    m = LoadMonitor(window_s=0.2, room_cpu_cores=0.01, admission_s=0.2, rooms=lambda: rooms[0])
    m.admit()
    m.admit()
    assert m.sample().admissions == pytest.approx(2 * m.room_load())
    time.sleep(0.25)
    rooms[0] = 2  # both joined; their cost is in the signals now
    m.loop_lag(LOOP_LAG_FULL_MS * 0.6)
    sample = m.sample()
    assert sample.admissions == 0.0
    assert sample.load == pytest.approx(0.6, abs=0.05)
    # one more room is estimated at what the settled rooms cost each, not at the small floor
    assert m.room_load() == pytest.approx(0.3, abs=0.03)
    assert m.admit() == pytest.approx(0.9, abs=0.06)


def test_open_rooms_count_at_their_talking_cost_even_when_they_are_quiet() -> None:
    rooms = [0]
    m = LoadMonitor(room_cpu_cores=0.2, rooms=lambda: rooms[0])
    per_room = 0.2 / load_mod._usable_cores() / load_mod.CPU_FULL
    assert m.sample().load < per_room  # an idle worker, no room
    rooms[0] = 3  # three rooms whose people say nothing: the signals read almost nothing
    sample = m.sample()
    assert sample.rooms == pytest.approx(3 * per_room)
    assert sample.load >= min(1.0, 3 * per_room) - 1e-9
    rooms[0] = 0
    assert m.sample().rooms == 0.0


def test_a_machine_busy_with_other_processes_fills_the_worker() -> None:
    busy = [0.0]
    m = LoadMonitor(window_s=0.2, machine_busy=lambda: busy[0])
    assert m.sample().machine == 0.0
    busy[0] = load_mod.MACHINE_FULL * 0.8  # the media server and other workers took the cores
    time.sleep(0.25)
    sample = m.sample()
    assert sample.machine == pytest.approx(0.8)
    assert sample.load == pytest.approx(0.8, abs=0.05)  # this process itself used almost nothing
    assert sample.bottleneck() == "machine"


def test_the_machine_share_is_read_from_the_usable_cores() -> None:
    cpu = load_mod.MachineCPU()
    assert REAL_BUSY_SHARE(cpu) is None  # the first reading only sets the start
    end = time.process_time() + 0.3
    while time.process_time() < end:  # keep one core busy
        pass
    share = REAL_BUSY_SHARE(cpu)
    assert share is not None
    assert 0.9 / load_mod._usable_cores() / 2 < share <= 1.0  # at least about this thread's core


def test_vad_windows_are_counted_evaluated_and_skipped() -> None:
    """``llmrtc_vad_windows_total{result=...}``: what the shared VAD engine judged, by Silero or as silence."""
    from llmrtc.audio.vad import get_shared_engine
    from llmrtc.metrics import InMemoryMetrics

    engine = get_shared_engine()
    metrics = InMemoryMetrics()
    current_load(metrics)
    eval0 = metrics.counter("llmrtc.vad.windows", {"result": "evaluated"})
    skip0 = metrics.counter("llmrtc.vad.windows", {"result": "skipped"})
    stream = engine.open_stream()
    quiet = b"\x00" * 1024 * 5
    loud = (b"\x00\x40" + b"\x00\xc0") * 256 * 3  # a loud square wave: audible
    stream.process_sync(quiet + loud)
    current_load(metrics)
    assert metrics.counter("llmrtc.vad.windows", {"result": "skipped"}) - skip0 >= 5
    assert metrics.counter("llmrtc.vad.windows", {"result": "evaluated"}) - eval0 >= 3
    prom = PrometheusMetrics()
    current_load(prom)
    assert b'llmrtc_vad_windows_total{result="skipped"}' in prom.render()
