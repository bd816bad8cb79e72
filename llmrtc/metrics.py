"""Metrics adapters: one small protocol (counters, timings, gauges) and four implementations.

Metric names follow the reference SDK (``llmrtc.stt.duration_ms``, ``llmrtc.llm.ttft_ms``, ...) and are
listed in :class:`MetricNames`. Tags are small string maps (``{"provider": "openai"}``); never put ids of
unbounded cardinality (session ids, turn ids) into tags.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TextIO, runtime_checkable

Tags = Mapping[str, str]

log = logging.getLogger("llmrtc.metrics")


class MetricNames:
    """The standard metric names (all prefixed with ``llmrtc.``)."""

    STT_DURATION = "llmrtc.stt.duration_ms"
    LLM_TTFT = "llmrtc.llm.ttft_ms"
    LLM_DURATION = "llmrtc.llm.duration_ms"
    TTS_DURATION = "llmrtc.tts.duration_ms"
    TTS_TTFB = "llmrtc.tts.ttfb_ms"
    TURN_DURATION = "llmrtc.turn.duration_ms"
    TURN_FIRST_AUDIO = "llmrtc.turn.first_audio_ms"
    TURNS = "llmrtc.turns"
    INTERRUPTIONS = "llmrtc.turn.interruptions"
    SESSION_DURATION = "llmrtc.session.duration_ms"
    ERRORS = "llmrtc.errors"
    CONNECTIONS_ACTIVE = "llmrtc.connections.active"
    # tools
    TOOL_DURATION = "llmrtc.tool.duration_ms"
    TOOL_CALLS = "llmrtc.tool.calls"
    TOOL_ERRORS = "llmrtc.tool.errors"
    # playbooks
    STAGE_DURATION = "llmrtc.playbook.stage.duration_ms"
    STAGE_TRANSITIONS = "llmrtc.playbook.transitions"
    STAGE_TURNS = "llmrtc.playbook.stage.turns"
    CURRENT_STAGE = "llmrtc.playbook.stage.current"
    PLAYBOOK_COMPLETIONS = "llmrtc.playbook.completions"
    # usage (per turn, tagged by provider)
    LLM_TOKENS = "llmrtc.llm.tokens"
    """Counter, tag ``direction`` = ``input`` | ``output``."""
    TTS_CHARACTERS = "llmrtc.tts.characters"
    STT_AUDIO_SECONDS = "llmrtc.stt.audio_seconds"
    # the worker (one process, all its rooms)
    WORKER_ROOMS = "llmrtc.worker.rooms"
    """Gauge: rooms this worker process holds."""
    WORKER_HUMANS = "llmrtc.worker.humans"
    """Gauge: humans in those rooms."""
    WORKER_LOAD = "llmrtc.worker.load"
    """Gauge: the load reported to LiveKit (0..1)."""
    WORKER_SHED = "llmrtc.worker.shed"
    """Counter: jobs refused or turns announced as not served because the worker was full (tag ``what``)."""
    VAD_LAG = "llmrtc.vad.lag_ms"
    """Timing: how far the VAD runs behind the audio it was given."""
    VAD_WINDOWS = "llmrtc.vad.windows"
    """Counter: 32 ms windows the VAD judged; tag ``result``: ``evaluated`` (by Silero) or ``skipped``
    (below the silence floor, ``VAD_SILENCE_FLOOR_DBFS``)."""
    VISION_FRAMES = "llmrtc.vision.frames"
    """Counter: frames sent to the LLM or the vision provider (tag ``mode``)."""


@runtime_checkable
class MetricsAdapter(Protocol):
    """Where metrics go. Implementations must be cheap and must not raise."""

    def increment(self, name: str, value: float = 1, tags: Tags | None = None) -> None: ...

    def timing(self, name: str, ms: float, tags: Tags | None = None) -> None: ...

    def gauge(self, name: str, value: float, tags: Tags | None = None) -> None: ...


class NullMetrics:
    """Discards everything (the default)."""

    def increment(self, name: str, value: float = 1, tags: Tags | None = None) -> None:
        return None

    def timing(self, name: str, ms: float, tags: Tags | None = None) -> None:
        return None

    def gauge(self, name: str, value: float, tags: Tags | None = None) -> None:
        return None


def _tag_key(tags: Tags | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in (tags or {}).items()))


@dataclass(frozen=True, slots=True)
class MetricRecord:
    """One recorded observation (kept by :class:`InMemoryMetrics`)."""

    kind: str
    name: str
    value: float
    tags: tuple[tuple[str, str], ...]


class InMemoryMetrics:
    """Keeps every observation in memory: for tests and for exposing numbers from a debug endpoint."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: list[MetricRecord] = []
        self._counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def increment(self, name: str, value: float = 1, tags: Tags | None = None) -> None:
        key = (name, _tag_key(tags))
        with self._lock:
            self._counters[key] = self._counters.get(key, 0.0) + value
            self.records.append(MetricRecord("counter", name, float(value), key[1]))

    def timing(self, name: str, ms: float, tags: Tags | None = None) -> None:
        with self._lock:
            self.records.append(MetricRecord("timing", name, float(ms), _tag_key(tags)))

    def gauge(self, name: str, value: float, tags: Tags | None = None) -> None:
        key = (name, _tag_key(tags))
        with self._lock:
            self._gauges[key] = float(value)
            self.records.append(MetricRecord("gauge", name, float(value), key[1]))

    def counter(self, name: str, tags: Tags | None = None) -> float:
        """The counter's total; with ``tags``, only observations carrying at least those tags."""
        want = set(_tag_key(tags))
        with self._lock:
            return sum(v for (n, t), v in self._counters.items() if n == name and want <= set(t))

    def timings(self, name: str, tags: Tags | None = None) -> list[float]:
        """Every timing recorded under ``name`` (filtered by ``tags`` like :meth:`counter`)."""
        want = set(_tag_key(tags))
        with self._lock:
            return [
                r.value for r in self.records if r.kind == "timing" and r.name == name and want <= set(r.tags)
            ]

    def gauge_value(self, name: str, tags: Tags | None = None) -> float | None:
        """The last value of a gauge with exactly these tags, or ``None``."""
        with self._lock:
            return self._gauges.get((name, _tag_key(tags)))

    def names(self) -> set[str]:
        with self._lock:
            return {r.name for r in self.records}

    def reset(self) -> None:
        with self._lock:
            self.records.clear()
            self._counters.clear()
            self._gauges.clear()


class ConsoleMetrics:
    """Writes one line per observation to a stream (stderr by default); for debugging."""

    def __init__(self, stream: TextIO | None = None, prefix: str = "[metrics]") -> None:
        self._stream = stream
        self._prefix = prefix

    def _write(self, kind: str, name: str, value: float, tags: Tags | None) -> None:
        tag_text = " ".join(f"{k}={v}" for k, v in _tag_key(tags))
        line = f"{self._prefix} {kind} {name}={value:g}" + (f" {tag_text}" if tag_text else "")
        try:
            print(line, file=self._stream or sys.stderr, flush=True)
        except (OSError, ValueError):  # closed stream: metrics must never break the caller
            log.debug("console metrics stream unavailable")

    def increment(self, name: str, value: float = 1, tags: Tags | None = None) -> None:
        self._write("count", name, value, tags)

    def timing(self, name: str, ms: float, tags: Tags | None = None) -> None:
        self._write("timing", name, ms, tags)

    def gauge(self, name: str, value: float, tags: Tags | None = None) -> None:
        self._write("gauge", name, value, tags)


_PROM_INVALID = re.compile(r"[^a-zA-Z0-9_:]")
DEFAULT_MS_BUCKETS = (5, 10, 25, 50, 100, 250, 500, 750, 1000, 1500, 2500, 5000, 10000, 30000, 60000)


class PrometheusMetrics:
    """Exports to ``prometheus_client`` (extra ``prometheus``).

    Names become Prometheus names (``llmrtc.stt.duration_ms`` -> ``llmrtc_stt_duration_ms``); counters get
    the ``_total`` suffix, timings are histograms in milliseconds, tags become labels. The label names of a
    metric are fixed by its first observation: later missing labels are exported empty, extra ones dropped.
    Uses its own ``CollectorRegistry`` unless one is given; :meth:`render` gives the text exposition.
    """

    def __init__(self, registry: Any = None, *, buckets: tuple[float, ...] = DEFAULT_MS_BUCKETS) -> None:
        try:
            import prometheus_client
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            from llmrtc.errors import ConfigError

            raise ConfigError(
                "PrometheusMetrics needs prometheus-client: pip install 'llmrtc[prometheus]'"
            ) from exc
        self._prom = prometheus_client
        self.registry = registry if registry is not None else prometheus_client.CollectorRegistry()
        self._buckets = buckets
        self._metrics: dict[str, tuple[Any, tuple[str, ...], str]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def prometheus_name(name: str) -> str:
        out = _PROM_INVALID.sub("_", name)
        return out if not out[:1].isdigit() else f"_{out}"

    def _get(self, kind: str, name: str, tags: Tags | None) -> Any:
        pname = self.prometheus_name(name)
        with self._lock:
            entry = self._metrics.get(pname)
            if entry is None:
                labels = tuple(self.prometheus_name(k) for k, _ in _tag_key(tags))
                doc = f"{name} ({kind})"
                if kind == "counter":
                    metric: Any = self._prom.Counter(pname, doc, labels, registry=self.registry)
                elif kind == "timing":
                    metric = self._prom.Histogram(
                        pname, doc, labels, registry=self.registry, buckets=self._buckets
                    )
                else:
                    metric = self._prom.Gauge(pname, doc, labels, registry=self.registry)
                entry = (metric, labels, kind)
                self._metrics[pname] = entry
        metric, labels, known = entry
        if known != kind:
            raise ValueError(f"{name} is already a {known} metric, not a {kind}")
        if not labels:
            return metric
        given = {self.prometheus_name(k): str(v) for k, v in (tags or {}).items()}
        return metric.labels(**{label: given.get(label, "") for label in labels})

    def _safe(self, kind: str, name: str, value: float, tags: Tags | None) -> None:
        try:
            metric = self._get(kind, name, tags)
            if kind == "counter":
                metric.inc(value)
            elif kind == "timing":
                metric.observe(value)
            else:
                metric.set(value)
        except (ValueError, TypeError) as exc:  # e.g. a name reused with another kind
            log.warning("prometheus metric %s not recorded: %s", name, exc)

    def increment(self, name: str, value: float = 1, tags: Tags | None = None) -> None:
        self._safe("counter", name, value, tags)

    def timing(self, name: str, ms: float, tags: Tags | None = None) -> None:
        self._safe("timing", name, ms, tags)

    def gauge(self, name: str, value: float, tags: Tags | None = None) -> None:
        self._safe("gauge", name, value, tags)

    def render(self) -> bytes:
        """The registry in the Prometheus text format (for a ``/metrics`` endpoint)."""
        data: bytes = self._prom.generate_latest(self.registry)
        return data


class SafeMetrics:
    """Wraps any adapter so that a failing adapter is logged, never raised into a turn."""

    def __init__(self, inner: MetricsAdapter | None) -> None:
        self.inner: MetricsAdapter = inner if inner is not None else NullMetrics()

    def increment(self, name: str, value: float = 1, tags: Tags | None = None) -> None:
        try:
            self.inner.increment(name, value, tags)
        except Exception:
            log.exception("metrics adapter failed on increment(%s)", name)

    def timing(self, name: str, ms: float, tags: Tags | None = None) -> None:
        try:
            self.inner.timing(name, ms, tags)
        except Exception:
            log.exception("metrics adapter failed on timing(%s)", name)

    def gauge(self, name: str, value: float, tags: Tags | None = None) -> None:
        try:
            self.inner.gauge(name, value, tags)
        except Exception:
            log.exception("metrics adapter failed on gauge(%s)", name)


def safe_metrics(metrics: MetricsAdapter | None) -> SafeMetrics:
    """``metrics`` wrapped in :class:`SafeMetrics` (idempotent)."""
    return metrics if isinstance(metrics, SafeMetrics) else SafeMetrics(metrics)


__all__ = [
    "ConsoleMetrics",
    "InMemoryMetrics",
    "MetricNames",
    "MetricRecord",
    "MetricsAdapter",
    "NullMetrics",
    "PrometheusMetrics",
    "SafeMetrics",
    "Tags",
    "safe_metrics",
]
