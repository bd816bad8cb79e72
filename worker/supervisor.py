"""``WORKER_PROCESSES=N``: N worker processes under one supervisor, each restarted when it dies.

Rooms of one worker process share its event-loop threads, its VAD engine and the native WebRTC stack; one
fault that ends the process (the livekit FFI's panic on a starved event loop, an out-of-memory kill, a
crash in native code) ends every room it holds. The supervisor bounds that: each of its N children is a
complete worker (``python -m worker dev|start``, or the user's agent script, with ``WORKER_PROCESSES=1``)
that registers with LiveKit on its own, so LiveKit spreads rooms over them by their load. When a child
dies, LiveKit re-dispatches its rooms to the others, which restore each conversation from the shared
session store (``SESSION_STORE_URL=redis://...``), and the supervisor starts a fresh child in its place.

- The children's ``METRICS_PORT``: ``0`` stays ephemeral; a fixed port ``P`` becomes ``P + i`` for child
  ``i`` (0-based), so each serves its own ``/metrics``, ``/healthz`` and ``/readyz``.
- Restarts back off (1 s, doubling, at most 30 s; back to 1 s after a child ran for a minute). A child that
  exits with status 2 (bad configuration) is not restarted: the supervisor stops the others and exits 2.
- SIGTERM or SIGINT to the supervisor goes to every child (each drains its rooms as a single worker does)
  and the supervisor waits ``DRAIN_TIMEOUT_S`` + 15 s for them before it kills what is left.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType

log = logging.getLogger("llmrtc.worker.supervisor")

INDEX_ENV = "LLMRTC_WORKER_INDEX"
"""Set in each child: its index (0-based)."""
BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 30.0
HEALTHY_AFTER_S = 60.0
CONFIG_ERROR_STATUS = 2
PR_SET_PDEATHSIG = 1


@dataclass
class _Child:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff_s: float = BACKOFF_MIN_S
    restart_at: float = 0.0
    restarts: int = 0


@dataclass
class Supervisor:
    """Runs ``command`` ``count`` times, restarting each copy that exits."""

    command: list[str]
    count: int
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    metrics_port: int | None = None
    drain_timeout_s: float = 60.0
    poll_s: float = 0.2
    children: list[_Child] = field(default_factory=list)
    _stopping: bool = False

    def child_env(self, index: int) -> dict[str, str]:
        env = dict(self.env)
        env["WORKER_PROCESSES"] = "1"
        env[INDEX_ENV] = str(index)
        if self.metrics_port:
            env["METRICS_PORT"] = str(self.metrics_port + index)
        return env

    def _spawn(self, child: _Child) -> None:
        child.proc = subprocess.Popen(
            self.command, env=self.child_env(child.index), preexec_fn=_die_with_parent
        )
        child.started = time.monotonic()
        log.info("worker process %d started (pid %d)", child.index, child.proc.pid)

    def start(self) -> None:
        self.children = [_Child(i) for i in range(self.count)]
        for child in self.children:
            self._spawn(child)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Ask every child to stop (``sig``); children then drain as single workers do."""
        self._stopping = True
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(sig)

    def step(self) -> int | None:
        """Reap and restart children once; the exit status when the supervisor is done, else ``None``."""
        now = time.monotonic()
        for child in self.children:
            proc = child.proc
            if proc is None:
                if not self._stopping and now >= child.restart_at:
                    child.restarts += 1
                    self._spawn(child)
                continue
            status = proc.poll()
            if status is None:
                continue
            child.proc = None
            if self._stopping:
                continue
            if status == CONFIG_ERROR_STATUS:
                log.error("worker process %d has a configuration error: stopping", child.index)
                self.stop()
                self.wait_all()
                return CONFIG_ERROR_STATUS
            ran = now - child.started
            child.backoff_s = BACKOFF_MIN_S if ran >= HEALTHY_AFTER_S else child.backoff_s
            child.restart_at = now + child.backoff_s
            log.error(
                "worker process %d (pid %d) exited with status %s after %.0f s: restarting in %.0f s "
                "(LiveKit re-dispatches its rooms to the other workers)",
                child.index,
                proc.pid,
                status,
                ran,
                child.backoff_s,
            )
            child.backoff_s = min(child.backoff_s * 2, BACKOFF_MAX_S)
        if self._stopping and all(c.proc is None for c in self.children):
            return 0
        return None

    def wait_all(self) -> None:
        """After :meth:`stop`: wait for the children to drain, then kill what is left."""
        deadline = time.monotonic() + self.drain_timeout_s + 15.0
        for child in self.children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker process %d did not stop in time: killing it", child.index)
                child.proc.kill()
                child.proc.wait(5)
            child.proc = None

    def run(self) -> int:
        """Start the children and keep them running until SIGTERM or SIGINT; the exit status."""

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("supervisor: %s: stopping %d worker processes", signal.Signals(signum).name, self.count)
            self.stop(signal.SIGTERM if signum == signal.SIGTERM else signal.SIGINT)

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            while True:
                status = self.step()
                if status is not None:
                    return status
                if self._stopping:
                    self.wait_all()
                    return 0
                time.sleep(self.poll_s)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the supervisor dies (Linux), so no worker is orphaned."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def supervise(count: int, *, metrics_port: int | None, drain_timeout_s: float) -> int:
    """Run this same command line as ``count`` supervised worker processes; the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = [sys.executable, *sys.orig_argv[1:]]
    print(f"llmrtc worker: supervising {count} worker processes", file=sys.stderr)
    return Supervisor(command, count, metrics_port=metrics_port, drain_timeout_s=drain_timeout_s).run()


__all__ = ["INDEX_ENV", "Supervisor", "supervise"]
