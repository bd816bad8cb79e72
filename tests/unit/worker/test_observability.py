"""The worker's /healthz, /readyz and /metrics: ready only after registration, model load and providers;
not ready while draining; the scrape is the process's registry."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from llmrtc.metrics import MetricNames
from worker.observability import ObservabilityServer, Readiness, process_metrics


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def test_ready_only_after_registration_model_and_providers_and_not_while_draining() -> None:
    readiness = Readiness()
    draining = False
    readiness.draining_probe = lambda: draining
    server = ObservabilityServer("127.0.0.1", 0, readiness)
    port = server.start()
    try:
        assert get(port, "/healthz") == (200, json.dumps({"status": "alive"}))
        status, body = get(port, "/readyz")
        assert status == 503
        assert set(json.loads(body)["reasons"]) == {
            "not registered with LiveKit",
            "VAD model not loaded",
            "providers not built",
        }
        readiness.vad_loaded = True
        readiness.providers_built = True
        status, body = get(port, "/readyz")
        assert status == 503 and json.loads(body)["reasons"] == ["not registered with LiveKit"]
        readiness.registered = True
        assert get(port, "/readyz")[0] == 200
        draining = True  # SIGTERM in start mode: livekit-agents drains
        status, body = get(port, "/readyz")
        assert status == 503 and json.loads(body)["reasons"] == ["draining"]
        assert get(port, "/healthz")[0] == 200, "alive while draining"
    finally:
        server.stop()


def test_metrics_serve_the_process_registry() -> None:
    process_metrics().timing(MetricNames.TURN_FIRST_AUDIO, 420.0)
    server = ObservabilityServer("127.0.0.1", 0, Readiness())
    port = server.start()
    try:
        status, text = get(port, "/metrics")
        assert status == 200 and "llmrtc_turn_first_audio_ms_count" in text
    finally:
        server.stop()


def test_a_taken_port_is_an_error_at_start() -> None:
    first = ObservabilityServer("127.0.0.1", 0, Readiness())
    port = first.start()
    try:
        second = ObservabilityServer("127.0.0.1", port, Readiness())
        try:
            second.start()
        except OSError as exc:
            assert str(port) in str(exc)
        else:
            raise AssertionError("binding a taken port must fail")
    finally:
        first.stop()
