"""The token service's /metrics: requests by route and status, latency; not in the OpenAPI schema."""

from __future__ import annotations

from fastapi.testclient import TestClient

from signalling.service.app import create_app
from signalling.service.config import TokenServiceSettings


def test_metrics_count_requests_by_route_and_status() -> None:
    settings = TokenServiceSettings(
        _env_file=None,  # type: ignore[call-arg]
        LIVEKIT_API_KEY="devkey",
        LIVEKIT_API_SECRET="secret-for-metrics-test-0123456789",
        TOKEN_SERVICE_API_KEYS="k1",
    )
    client = TestClient(create_app(settings))
    assert client.post("/api/token", json={"room": "r1"}, headers={"X-API-Key": "k1"}).status_code == 200
    assert client.post("/api/token", json={"room": "r1"}).status_code == 401
    client.get("/no/such/path/1")
    client.get("/no/such/path/2")
    text = client.get("/metrics").text
    assert 'llmrtc_token_service_requests_total{route="/api/token",status="200"} 1.0' in text
    assert 'llmrtc_token_service_requests_total{route="/api/token",status="401"} 1.0' in text
    assert 'llmrtc_token_service_requests_total{route="other",status="404"} 2.0' in text
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]
