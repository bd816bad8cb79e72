"""Seeing the worker run: one Prometheus registry per process and its HTTP endpoints.

Every job of a worker process records into :func:`process_metrics` (a
:class:`~llmrtc.metrics.PrometheusMetrics`; names as in :class:`~llmrtc.metrics.MetricNames`, e.g.
``llmrtc_turn_first_audio_ms`` for end of the user's speech to the agent's first audio). With
``METRICS_PORT`` set (``0``: an ephemeral port) the process serves, on a thread of its own so a busy job loop
never delays a scrape:

- ``GET /metrics``: the Prometheus text exposition;
- ``GET /healthz``: liveness (``200`` while the process serves);
- ``GET /readyz``: ``200`` once the worker registered with LiveKit, the VAD model is loaded and the
  providers were built; ``503`` (with the reasons) before that and while draining.

With ``WORKER_EXECUTOR=process`` every job runs in a process of its own: :func:`share_job_metrics` (called
by the CLI before livekit-agents is imported) puts ``prometheus_client`` in its multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, a private temporary directory), so each process's observations go to files
there and ``/metrics`` serves the sum over the worker and all its job processes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmrtc.metrics import MetricNames, PrometheusMetrics

log = logging.getLogger("llmrtc.worker.observability")

_LOCK = threading.Lock()
_METRICS: PrometheusMetrics | None = None


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def share_job_metrics() -> str | None:
    """Make every job process's metrics reach this process's ``/metrics`` (``WORKER_EXECUTOR=process``).

    Sets ``PROMETHEUS_MULTIPROC_DIR`` to a new private directory (unless already set), which the job
    processes inherit. Must run before ``prometheus_client`` is imported here (livekit-agents imports it);
    when it was, nothing changes and a warning says that job metrics stay in the job processes. Returns the
    directory it made (for :func:`end_job_metrics`), or ``None``.
    """
    if os.environ.get(MULTIPROC_ENV):
        return None
    if "prometheus_client" in sys.modules:
        log.warning(
            "prometheus_client was imported before the worker started: job-process metrics stay local"
        )
        return None
    path = tempfile.mkdtemp(prefix="llmrtc-metrics-")
    os.environ[MULTIPROC_ENV] = path
    return path


def end_job_metrics(path: str | None) -> None:
    """Remove the directory :func:`share_job_metrics` made."""
    if path:
        shutil.rmtree(path, ignore_errors=True)
        if os.environ.get(MULTIPROC_ENV) == path:
            del os.environ[MULTIPROC_ENV]


def render_metrics() -> bytes:
    """What ``/metrics`` serves: this process's registry, or in multiprocess mode the sum over every
    process of the worker (this one included)."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return process_metrics().render()
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    data: bytes = generate_latest(registry)
    return data


def process_metrics() -> PrometheusMetrics:
    """The process's one metrics registry (made on first use)."""
    global _METRICS
    with _LOCK:
        if _METRICS is None:
            _METRICS = PrometheusMetrics()
        return _METRICS


@dataclass
class Readiness:
    """What ``/readyz`` reports. Set by the worker as it starts and stops."""

    registered: bool = False
    vad_loaded: bool = False
    providers_built: bool = False
    draining: bool = False
    draining_probe: Callable[[], bool] | None = None
    """Asks the livekit-agents server whether it drains (set by :func:`worker.entrypoint.server_for`)."""
    problems: list[str] = field(default_factory=list)

    def reasons(self) -> list[str]:
        out = list(self.problems)
        if not self.registered:
            out.append("not registered with LiveKit")
        if not self.vad_loaded:
            out.append("VAD model not loaded")
        if not self.providers_built:
            out.append("providers not built")
        if self.draining or (self.draining_probe is not None and self.draining_probe()):
            out.append("draining")
        return out

    @property
    def ready(self) -> bool:
        return not self.reasons()


READINESS = Readiness()
"""This process's readiness."""

_ROOMS = 0
_HUMANS: dict[str, int] = {}


def room_opened() -> None:
    """A job joined its room (the rooms gauge)."""
    global _ROOMS
    with _LOCK:
        _ROOMS += 1
        rooms = _ROOMS
    process_metrics().gauge(MetricNames.WORKER_ROOMS, rooms)


def open_rooms() -> int:
    """The rooms this process's jobs have joined and not left."""
    with _LOCK:
        return _ROOMS


def room_closed(room: str) -> None:
    global _ROOMS
    with _LOCK:
        _ROOMS = max(0, _ROOMS - 1)
        rooms = _ROOMS
        _HUMANS.pop(room, None)
        humans = sum(_HUMANS.values())
    metrics = process_metrics()
    metrics.gauge(MetricNames.WORKER_ROOMS, rooms)
    metrics.gauge(MetricNames.WORKER_HUMANS, humans)


def humans_in_room(room: str, count: int) -> None:
    """The number of humans in ``room`` changed (the humans gauge is the sum over the process's rooms)."""
    with _LOCK:
        _HUMANS[room] = count
        humans = sum(_HUMANS.values())
    process_metrics().gauge(MetricNames.WORKER_HUMANS, humans)


class ObservabilityServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on a daemon thread with its own event loop."""

    def __init__(self, host: str = "0.0.0.0", port: int = 9100, readiness: Readiness = READINESS) -> None:
        self.host = host
        self.port = port
        self.readiness = readiness
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: Any = None
        self._error: BaseException | None = None

    def start(self, timeout_s: float = 10.0) -> int:
        """Start serving; returns the bound port. Raises ``OSError`` when the port cannot be bound."""
        self._thread = threading.Thread(target=self._main, name="llmrtc-observability", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout_s):
            raise OSError(f"the metrics server did not start within {timeout_s:g} s")
        if self._error is not None:
            raise OSError(f"cannot serve metrics on {self.host}:{self.port}: {self._error}")
        log.info("metrics and health on http://%s:%d/{metrics,healthz,readyz}", self.host, self.port)
        return self.port

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._started.set()
            return
        self._started.set()
        loop.run_forever()

    async def _serve(self) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    async def _metrics(self, request: Any) -> Any:
        from aiohttp import web

        body = render_metrics()
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def _healthz(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response({"status": "alive"})

    async def _readyz(self, request: Any) -> Any:
        from aiohttp import web

        reasons = self.readiness.reasons()
        if reasons:
            return web.json_response({"status": "not_ready", "reasons": reasons}, status=503)
        return web.json_response({"status": "ready"})

    def stop(self) -> None:
        loop = self._loop
        if loop is None or not loop.is_running():
            return

        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        if self._thread is not None:
            self._thread.join(timeout=5)


__all__ = [
    "READINESS",
    "ObservabilityServer",
    "Readiness",
    "end_job_metrics",
    "humans_in_room",
    "process_metrics",
    "render_metrics",
    "room_closed",
    "room_opened",
    "share_job_metrics",
]
