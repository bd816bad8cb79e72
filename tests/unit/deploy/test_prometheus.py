"""Prometheus: the compose scrape config passes promtool, and every dashboard query works on a real Prometheus.

A local exporter records observations through ``llmrtc.metrics.PrometheusMetrics`` (the adapter the worker's
``/metrics`` uses) under the standard ``MetricNames``; Debian's ``prometheus`` scrapes it; then every panel's
query must return data and bench/render_dashboard.py must draw them all.
"""

from __future__ import annotations

import importlib.util
import random
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

from llmrtc.metrics import MetricNames, PrometheusMetrics
from tests.conftest import require
from tests.unit.deploy.dashboard import (
    EXPORTED_FAMILIES,
    dashboard_metric_names,
    load_dashboard,
    metric_family,
    scrape_sample_names,
)
from tests.unit.deploy.files import DEPLOY, ROOT


def load_renderer() -> ModuleType:
    """bench/render_dashboard.py (bench/ is not a package)."""
    if "render_dashboard" in sys.modules:
        return sys.modules["render_dashboard"]
    spec = importlib.util.spec_from_file_location("render_dashboard", ROOT / "bench" / "render_dashboard.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["render_dashboard"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def record_a_second_of_work(metrics: PrometheusMetrics, rng: random.Random) -> None:
    """What a busy worker records: turns with their timings, usage, an error, load and VAD lag."""
    for _ in range(3):
        metrics.timing(MetricNames.STT_DURATION, rng.uniform(150, 400), {"provider": "openai"})
        metrics.timing(MetricNames.LLM_TTFT, rng.uniform(200, 600), {"provider": "openai"})
        metrics.timing(MetricNames.TTS_TTFB, rng.uniform(80, 250), {"provider": "openai"})
        metrics.timing(MetricNames.TURN_FIRST_AUDIO, rng.uniform(500, 1400))
        metrics.timing(MetricNames.TURN_DURATION, rng.uniform(2000, 6000))
        metrics.increment(MetricNames.TURNS)
        metrics.increment(
            MetricNames.LLM_TOKENS, rng.randint(200, 400), {"direction": "input", "provider": "openai"}
        )
        metrics.increment(
            MetricNames.LLM_TOKENS, rng.randint(20, 60), {"direction": "output", "provider": "openai"}
        )
        metrics.increment(MetricNames.TTS_CHARACTERS, rng.randint(40, 160), {"provider": "openai"})
        metrics.increment(MetricNames.STT_AUDIO_SECONDS, rng.uniform(1, 4), {"provider": "openai"})
        metrics.timing(MetricNames.VAD_LAG, rng.uniform(1, 20))
        metrics.increment(MetricNames.VAD_WINDOWS, rng.randint(5, 31), {"result": "evaluated"})
        metrics.increment(MetricNames.VAD_WINDOWS, rng.randint(0, 26), {"result": "skipped"})
    metrics.increment(MetricNames.INTERRUPTIONS)
    metrics.increment(MetricNames.ERRORS, 1, {"component": "llm", "code": "timeout"})
    metrics.increment(MetricNames.WORKER_SHED, 1, {"what": "job"})
    metrics.gauge(MetricNames.WORKER_ROOMS, rng.randint(3, 6))
    metrics.gauge(MetricNames.WORKER_HUMANS, rng.randint(5, 12))
    metrics.gauge(MetricNames.WORKER_LOAD, rng.uniform(0.2, 0.6))


@pytest.fixture
def exporter() -> Iterator[tuple[str, PrometheusMetrics]]:
    """A /metrics endpoint fed with a worker's observations every 200 ms, on an ephemeral port."""
    metrics = PrometheusMetrics()
    rng = random.Random(15)
    record_a_second_of_work(metrics, rng)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = metrics.render()
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    stop = threading.Event()

    def feed() -> None:
        while not stop.wait(0.2):
            record_a_second_of_work(metrics, rng)

    threads = [
        threading.Thread(target=server.serve_forever, daemon=True),
        threading.Thread(target=feed, daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", metrics
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


def test_promtool_accepts_the_compose_prometheus_config() -> None:
    promtool = shutil.which("promtool")
    require(promtool, "promtool (apt-get install prometheus)")
    assert promtool
    run = subprocess.run(
        [promtool, "check", "config", str(DEPLOY / "prometheus.yml")], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_exporter_serves_every_family_the_dashboard_reads(
    exporter: tuple[str, PrometheusMetrics],
) -> None:
    address, _ = exporter
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    names = scrape_sample_names(text)
    assert dashboard_metric_names() <= names, dashboard_metric_names() - names
    assert {metric_family(n) for n in names} >= EXPORTED_FAMILIES


@pytest.mark.slow  # a real Prometheus start, a few scrapes and a matplotlib render: 6-15 s on a busy machine
def test_every_dashboard_query_returns_data_and_renders(
    exporter: tuple[str, PrometheusMetrics], tmp_path: Path
) -> None:
    require(shutil.which("prometheus"), "prometheus (apt-get install prometheus)")
    renderer = load_renderer()
    address, _ = exporter
    with renderer.local_prometheus(tmp_path / "prom", [address], scrape_interval="1s") as base:
        deadline = time.monotonic() + 30
        while True:  # rate() needs a few scrapes
            result = renderer.api_get(
                base, "/api/v1/query", {"query": "count_over_time(llmrtc_turns_total[1m])"}
            )
            if result["result"] and float(result["result"][0]["value"][1]) >= 3:
                break
            assert time.monotonic() < deadline, "prometheus did not scrape the exporter"
            time.sleep(0.5)
        end = time.time()
        dashboard = load_dashboard()
        data = renderer.collect(dashboard, base, end - 20, end, 1.0, rate_interval="5s")
        assert renderer.recorded_range(base) is not None
    empty = [d.panel["title"] for d in data if d.panel["type"] != "row" and not d.series]
    assert empty == []
    by_title = {d.panel["title"]: d for d in data}
    first_audio = {s.legend: s.values[-1] for s in by_title["Time to first audio"].series}
    assert set(first_audio) == {"p50", "p95"} and 500 <= first_audio["p50"] <= first_audio["p95"] <= 1500
    assert {s.legend for s in by_title["Errors by code"].series} == {"llm timeout"}
    assert {s.legend for s in by_title["LLM tokens"].series} == {"input", "output"}
    out = tmp_path / "dashboard.png"
    renderer.render(data, out, title="llmrtc", subtitle="test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 50_000


def test_substitute_replaces_grafana_variables_and_refuses_unknown_ones() -> None:
    renderer = load_renderer()
    expr = 'sum(rate(x_total{instance=~"$instance"}[$__rate_interval]))'
    assert renderer.substitute(expr, {"instance": ".*"}, "1m") == 'sum(rate(x_total{instance=~".*"}[1m]))'
    with pytest.raises(ValueError, match="instance"):
        renderer.substitute(expr, {}, "1m")
