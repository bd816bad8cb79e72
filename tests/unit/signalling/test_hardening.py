"""Token service hardening: the key before the body, capped bodies, room names, whose X-Forwarded-For to
believe, throttled failed authentications, one error shape, readiness and drain, blank settings."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from signalling.service import TokenServiceSettings, create_app
from signalling.service.clientaddr import client_address
from signalling.service.drain import Drain
from tests.unit.signalling.conftest import API_KEY, make_settings

AUTH = {"X-API-Key": API_KEY}
HUGE = 100 * 1024 * 1024


async def _asgi_post(app: Any, headers: dict[str, str], chunks: list[bytes]) -> tuple[int, bytes, int]:
    """POST /api/token straight into the ASGI app; returns (status, body, how many body chunks it read)."""
    read = 0
    pending = list(chunks)

    async def receive() -> dict[str, Any]:
        nonlocal read
        if not pending:
            await asyncio.sleep(3600)  # the client sends nothing more
        read += 1
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/token",
        "raw_path": b"/api/token",
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("203.0.113.7", 5000),
        "server": ("127.0.0.1", 8080),
    }
    await asyncio.wait_for(app(scope, receive, send), 5)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body, read


async def test_the_key_is_checked_before_a_byte_of_the_body_is_read() -> None:
    app = create_app(make_settings())
    chunk = b"x" * 65536
    status, body, read = await _asgi_post(
        app, {"content-type": "application/json", "content-length": str(HUGE)}, [chunk] * 4
    )
    assert status == 401 and b'"unauthorized"' in body
    assert read == 0, "the body was read although the caller has no key"


async def test_an_oversized_body_is_refused_unread() -> None:
    app = create_app(make_settings())
    headers = {**AUTH, "content-type": "application/json"}
    status, body, read = await _asgi_post(app, {**headers, "content-length": str(HUGE)}, [b"{}"])
    assert status == 413 and b'"body_too_large"' in body and read == 0
    # no Content-Length (a chunked upload): reading stops at the cap
    status, body, read = await _asgi_post(app, headers, [b"x" * 8192] * 50)
    assert status == 413 and read <= 3


def test_a_body_within_the_cap_still_works(client: TestClient) -> None:
    assert (
        client.post("/api/token", json={"room": "demo", "metadata": "m" * 4000}, headers=AUTH).status_code
        == 200
    )


@pytest.mark.parametrize("room", ["demo\n", "demo\r\n", "\ndemo"])
def test_room_names_with_a_newline_are_refused(client: TestClient, room: str) -> None:
    res = client.post("/api/token", json={"room": room}, headers=AUTH)
    assert res.status_code == 400 and res.json()["error"]["field"] == "room"


def test_x_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    proxies = [ip_network("10.0.0.0/8")]
    assert client_address("198.51.100.9", "1.2.3.4", []) == "198.51.100.9"
    assert client_address("198.51.100.9", "1.2.3.4", proxies) == "198.51.100.9"  # not a proxy of ours
    assert client_address("10.0.0.5", "1.2.3.4", proxies) == "1.2.3.4"
    # what the client wrote itself sits left of what our proxies appended: never used
    assert client_address("10.0.0.5", "6.6.6.6, 1.2.3.4, 10.0.0.9", proxies) == "1.2.3.4"
    assert client_address("10.0.0.5", "junk", proxies) == "10.0.0.5"
    assert client_address(None, None, proxies) == "unknown"


def test_x_forwarded_for_does_not_buy_a_new_open_mode_bucket(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(TOKEN_SERVICE_OPEN_MODE=True, TOKEN_SERVICE_API_KEYS="", TOKEN_RATE_LIMIT_BURST=2)
    codes = [
        client.post("/api/token", json={"room": "r"}, headers={"X-Forwarded-For": f"1.2.3.{i}"}).status_code
        for i in range(4)
    ]
    assert codes == [200, 200, 429, 429]


def test_trusted_proxy_clients_get_their_own_buckets() -> None:
    settings = make_settings(
        TOKEN_SERVICE_OPEN_MODE=True, TOKEN_RATE_LIMIT_BURST=1, TOKEN_TRUSTED_PROXIES="127.0.0.0/8"
    )
    client = TestClient(create_app(settings), client=("127.0.0.1", 4000))
    first = client.post("/api/token", json={"room": "r"}, headers={"X-Forwarded-For": "1.2.3.4"})
    again = client.post("/api/token", json={"room": "r"}, headers={"X-Forwarded-For": "1.2.3.4"})
    other = client.post("/api/token", json={"room": "r"}, headers={"X-Forwarded-For": "5.6.7.8"})
    assert (first.status_code, again.status_code, other.status_code) == (200, 429, 200)


def test_failed_authentications_are_throttled(client_factory: Callable[..., TestClient]) -> None:
    client = client_factory(TOKEN_AUTH_FAILURE_BURST=3, TOKEN_AUTH_FAILURES_PER_MINUTE=1)
    codes = [
        client.post("/api/token", json={"room": "r"}, headers={"X-API-Key": f"guess-{i}"}).status_code
        for i in range(5)
    ]
    assert codes == [401, 401, 401, 429, 429]
    throttled = client.get("/api/admin/rooms", headers={"X-API-Key": "guess-admin"})
    assert throttled.status_code == 429 and throttled.json()["error"]["code"] == "too_many_failures"
    assert int(throttled.headers["Retry-After"]) >= 1
    # the right key is not locked out by someone else's guesses
    assert client.post("/api/token", json={"room": "r"}, headers=AUTH).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        (
            "post",
            "/api/token",
            {"content": b"\xff\xfe{}", "headers": {"Content-Type": "application/json"}},
            422,
        ),
        ("post", "/api/token", {"content": b"[1, 2]", "headers": {"Content-Type": "application/json"}}, 422),
        # nested deeper than the JSON parser's recursion limit: this one used to escape as {"detail": ...}
        ("post", "/api/token", {"content": b"[" * 5000 + b"]" * 5000}, 422),
        ("post", "/api/token", {"content": b"", "headers": {"Content-Type": "application/json"}}, 422),
        ("post", "/api/token", {"content": b"room=x", "headers": {"Content-Type": "text/plain"}}, 422),
        ("post", "/api/token", {"json": {"room": 5}}, 422),
        ("post", "/api/token", {"content": b"{}", "headers": {"Content-Length": "abc"}}, 400),
        ("get", "/api/token", {}, 405),
        ("get", "/no/such/path", {}, 404),
    ],
)
def test_every_error_has_the_documented_shape(
    client: TestClient, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    headers = {**AUTH, **kwargs.pop("headers", {})}
    res = getattr(client, method)(path, headers=headers, **kwargs)
    assert res.status_code == status, res.text
    error = res.json()["error"]
    assert set(error) <= {"code", "message", "field"} and error["code"] and error["message"]


def test_readiness_and_drain(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    drain: Drain = client.app.state.drain  # type: ignore[attr-defined]
    drain.begin()
    assert client.get("/healthz").status_code == 200  # alive while draining
    not_ready = client.get("/readyz")
    assert not_ready.status_code == 503 and not_ready.json()["error"]["code"] == "shutting_down"
    refused = client.post("/api/token", json={"room": "r"}, headers=AUTH)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
    assert refused.headers["Retry-After"] == "1"


async def test_drain_waits_for_requests_in_flight_bounded() -> None:
    drain = Drain()
    drain.enter()
    assert await drain.wait_idle(0.05) is False
    asyncio.get_running_loop().call_later(0.05, drain.leave)
    assert await drain.wait_idle(2) is True


def test_blank_environment_values_mean_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("WEB_STATIC_DIR", "LIVEKIT_URL", "LIVEKIT_API_URL", "TOKEN_TTL_S", "TOKEN_TRUSTED_PROXIES"):
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("TOKEN_SERVICE_OPEN_MODE", "true")
    defaults = TokenServiceSettings(_env_file=None)  # type: ignore[call-arg]
    assert defaults.static_dir is not None and (defaults.static_dir / "index.html").parent.name == "static"
    assert defaults.static_dir != Path(".")
    assert defaults.livekit_url == "ws://localhost:7880" and defaults.livekit_api_url is None
    assert defaults.token_ttl_s == 600 and defaults.trusted_proxies == []
    for name in ("WEB_STATIC_DIR", "LIVEKIT_URL", "LIVEKIT_API_URL", "TOKEN_TTL_S", "TOKEN_TRUSTED_PROXIES"):
        monkeypatch.delenv(name)
    env_file = tmp_path / ".env"
    env_file.write_text(
        "LIVEKIT_URL=\nWEB_STATIC_DIR=\nLIVEKIT_API_URL=         # a comment, as in .env.example\n"
    )
    from_file = TokenServiceSettings(_env_file=env_file)  # type: ignore[call-arg]
    assert from_file.livekit_url == "ws://localhost:7880" and from_file.static_dir == defaults.static_dir
    assert from_file.livekit_api_url is None


def test_missing_web_client_is_logged(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    with caplog.at_level("WARNING", logger="signalling.service"):
        create_app(make_settings(WEB_STATIC_DIR=str(tmp_path)))
    assert any("no web client" in r.getMessage() for r in caplog.records)
