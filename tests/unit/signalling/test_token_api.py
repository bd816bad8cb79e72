"""The token API: authentication, validation, least-privilege grants, TTL, dispatch, rate limit, CORS."""

from __future__ import annotations

import time
from collections.abc import Callable

import jwt
import pytest
from fastapi.testclient import TestClient
from livekit import api
from pydantic import ValidationError

from signalling.service.ratelimit import RateLimiter
from tests.unit.signalling.conftest import API_KEY, SECRET, make_settings

AUTH = {"X-API-Key": API_KEY}


def verify(token: str) -> api.access_token.Claims:
    return api.TokenVerifier("devkey", SECRET).verify(token)


def test_healthz_needs_no_key(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_token_requires_an_api_key(client: TestClient) -> None:
    res = client.post("/api/token", json={"room": "demo"})
    assert res.status_code == 401
    assert res.json()["error"]["code"] == "unauthorized"


def test_wrong_api_key_is_refused(client: TestClient) -> None:
    res = client.post("/api/token", json={"room": "demo"}, headers={"X-API-Key": "nope"})
    assert res.status_code == 401


def test_any_configured_key_works(client: TestClient) -> None:
    res = client.post("/api/token", json={"room": "demo"}, headers={"X-API-Key": "second-key"})
    assert res.status_code == 200


def test_open_mode_issues_without_key_and_is_off_by_default(
    client_factory: Callable[..., TestClient],
) -> None:
    assert make_settings().open_mode is False
    open_client = client_factory(TOKEN_SERVICE_OPEN_MODE=True, TOKEN_SERVICE_API_KEYS="")
    assert open_client.post("/api/token", json={"room": "demo"}).status_code == 200


def test_open_mode_is_announced(
    client_factory: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING"):
        client_factory(TOKEN_SERVICE_OPEN_MODE=True)
    assert any("OPEN MODE" in r.getMessage() for r in caplog.records)


def test_settings_refuse_no_keys_without_open_mode() -> None:
    with pytest.raises(ValidationError, match="TOKEN_SERVICE_API_KEYS"):
        make_settings(TOKEN_SERVICE_API_KEYS="")


def test_token_has_least_privilege_grants_ttl_and_agent_dispatch(client: TestClient) -> None:
    before = int(time.time())
    res = client.post(
        "/api/token", json={"room": "sales-1", "identity": "alice", "name": "Alice"}, headers=AUTH
    )
    assert res.status_code == 200
    body = res.json()
    assert body["url"] == "ws://livekit.test:7880"
    assert body["room"] == "sales-1" and body["identity"] == "alice" and body["expires_in"] == 600
    claims = verify(body["token"])
    grants = claims.video
    assert grants is not None
    assert grants.room_join is True and grants.room == "sales-1"
    assert grants.can_publish is True and grants.can_subscribe is True and grants.can_publish_data is True
    assert sorted(grants.can_publish_sources or []) == [
        "camera",
        "microphone",
        "screen_share",
        "screen_share_audio",
    ]
    assert not grants.room_admin and not grants.room_create and not grants.room_list and not grants.agent
    assert not grants.hidden and not grants.recorder and not grants.can_update_own_metadata
    assert claims.identity == "alice" and claims.name == "Alice"
    assert claims.room_config is not None
    assert [d.agent_name for d in claims.room_config.agents] == ["llmrtc-agent"]
    # The JWT's own expiry is the configured TTL.
    exp = jwt.decode(body["token"], SECRET, algorithms=["HS256"], options={"verify_aud": False})["exp"]
    assert before + 600 - 5 <= exp <= int(time.time()) + 600 + 5


def test_ttl_is_configurable(client_factory: Callable[..., TestClient]) -> None:
    res = client_factory(TOKEN_TTL_S=120).post("/api/token", json={"room": "r"}, headers=AUTH)
    assert res.json()["expires_in"] == 120


def test_no_agent_name_means_no_room_config(client_factory: Callable[..., TestClient]) -> None:
    res = client_factory(AGENT_NAME="").post("/api/token", json={"room": "r"}, headers=AUTH)
    claims = verify(res.json()["token"])
    assert claims.room_config is None or not claims.room_config.agents


def test_identity_is_generated_when_absent(client: TestClient) -> None:
    a = client.post("/api/token", json={"room": "r"}, headers=AUTH).json()["identity"]
    b = client.post("/api/token", json={"room": "r"}, headers=AUTH).json()["identity"]
    assert a.startswith("user-") and b.startswith("user-") and a != b


def test_token_signed_with_wrong_secret_fails_verification(client: TestClient) -> None:
    token = client.post("/api/token", json={"room": "r"}, headers=AUTH).json()["token"]
    with pytest.raises(jwt.InvalidSignatureError):
        api.TokenVerifier("devkey", "another-secret-another-secret-123").verify(token)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"room": ""}, "room"),
        ({"room": "has space"}, "room"),
        ({"room": "../etc"}, "room"),
        ({"room": "x" * 65}, "room"),
        ({"room": "ok", "identity": "agent-impostor"}, "identity"),
        ({"room": "ok", "identity": "AGENT-impostor"}, "identity"),
        ({"room": "ok", "identity": "bad\nname"}, "identity"),
        ({"room": "ok", "identity": "bell\x07"}, "identity"),
        ({"room": "ok", "identity": "i" * 129}, "identity"),
        ({"room": "ok", "identity": "   "}, "identity"),
        ({"room": "ok", "name": "tab\tname"}, "name"),
        ({"room": "ok", "name": "n" * 129}, "name"),
        ({"room": "ok", "metadata": "m" * 5000}, "metadata"),
    ],
)
def test_validation_rules(client: TestClient, payload: dict[str, str], field: str) -> None:
    res = client.post("/api/token", json=payload, headers=AUTH)
    assert res.status_code == 400, res.text
    assert res.json()["error"]["field"] == field


def test_malformed_body_is_a_clean_422(client: TestClient) -> None:
    res = client.post(
        "/api/token", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert res.status_code == 422
    assert res.json()["error"]["code"] == "invalid_request"
    res = client.post("/api/token", json={"identity": "x"}, headers=AUTH)
    assert res.status_code == 422


def test_rate_limit_per_caller(client_factory: Callable[..., TestClient]) -> None:
    client = client_factory(TOKEN_RATE_LIMIT_BURST=3, TOKEN_RATE_LIMIT_PER_MINUTE=1)
    codes = [client.post("/api/token", json={"room": "r"}, headers=AUTH).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = client.post("/api/token", json={"room": "r"}, headers=AUTH)
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) >= 1
    # Another caller has its own bucket.
    assert (
        client.post("/api/token", json={"room": "r"}, headers={"X-API-Key": "second-key"}).status_code == 200
    )


def test_rate_limiter_refills() -> None:
    limiter = RateLimiter(per_minute=60, burst=1)
    assert limiter.check("a", now=0.0) == 0.0
    assert limiter.check("a", now=0.1) > 0
    assert limiter.check("a", now=1.2) == 0.0


def test_cors_allow_list(client_factory: Callable[..., TestClient]) -> None:
    client = client_factory(CORS_ORIGINS="https://app.example.com")
    pre = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-api-key",
    }
    ok = client.options("/api/token", headers={"Origin": "https://app.example.com", **pre})
    assert ok.headers.get("access-control-allow-origin") == "https://app.example.com"
    bad = client.options("/api/token", headers={"Origin": "https://evil.example.com", **pre})
    assert bad.headers.get("access-control-allow-origin") is None


def test_admin_endpoints_need_a_key_even_in_open_mode(client_factory: Callable[..., TestClient]) -> None:
    client = client_factory(TOKEN_SERVICE_OPEN_MODE=True)
    assert client.get("/api/admin/rooms").status_code == 401
    assert client.get("/api/admin/rooms/demo/participants").status_code == 401


def test_admin_reports_unreachable_livekit_as_502(client_factory: Callable[..., TestClient]) -> None:
    client = client_factory(LIVEKIT_URL="ws://127.0.0.1:9")
    res = client.get("/api/admin/rooms", headers=AUTH)
    assert res.status_code == 502
    assert res.json()["error"]["code"] == "livekit_unavailable"


def test_secrets_never_in_responses_or_schema(client: TestClient) -> None:
    res = client.post("/api/token", json={"room": "r"}, headers=AUTH)
    schema = client.get("/openapi.json").text
    for secret in (SECRET, API_KEY):
        assert secret not in res.text.replace(res.json()["token"], "")
        assert secret not in schema
