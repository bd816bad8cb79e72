"""deploy/ice_servers.py: the reference's ICE_SERVERS and Metered credentials as livekit.yaml entries.

Metered is stood in for by a local HTTP server answering its Get Credential API in Metered's documented format.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from llmrtc.errors import ConfigError
from tests.unit.deploy.files import DEPLOY
from tests.unit.deploy.test_livekit_config import documented_keys, key_paths, undocumented


def load_tool() -> ModuleType:
    if "ice_servers" in sys.modules:
        return sys.modules["ice_servers"]
    spec = importlib.util.spec_from_file_location("ice_servers", DEPLOY / "ice_servers.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["ice_servers"] = module
    spec.loader.exec_module(module)
    return module


# The reference README's example value of ICE_SERVERS.
REFERENCE_EXAMPLE = [
    {"urls": "stun:stun.example.com:3478"},
    {"urls": "turn:turn.example.com:3478", "username": "user", "credential": "pass"},
]

METERED_ANSWER = [
    {"urls": "stun:eu.relay.example:80"},
    {"urls": "turn:eu.relay.example:80", "username": "u1", "credential": "p1"},
    {"urls": "turn:eu.relay.example:80?transport=tcp", "username": "u1", "credential": "p1"},
    {"urls": "turn:eu.relay.example:443", "username": "u1", "credential": "p1"},
    {"urls": "turns:eu.relay.example:443?transport=tcp", "username": "u1", "credential": "p1"},
]


@pytest.fixture
def metered() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Metered's credential API: GET /api/v1/turn/credentials?apiKey=...[&region=...]."""
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            seen.append({"path": url.path, **query})
            if url.path != "/api/v1/turn/credentials":
                status, body = 404, {"error": "not found"}
            elif query.get("apiKey") != "good-key":
                status, body = 401, {"error": "Invalid API Key"}
            else:
                status, body = 200, METERED_ANSWER
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_the_reference_example_maps_to_one_stun_and_one_turn_server() -> None:
    config = load_tool().convert(REFERENCE_EXAMPLE).as_rtc()
    assert config == {
        "stun_servers": ["stun.example.com:3478"],
        "turn_servers": [
            {
                "host": "turn.example.com",
                "port": 3478,
                "protocol": "udp",
                "username": "user",
                "credential": "pass",
            }
        ],
    }


def test_metered_credentials_become_udp_tcp_and_tls_entries(
    metered: tuple[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base, seen = metered
    monkeypatch.setenv("METERED_APP_NAME", "demo")
    monkeypatch.setenv("METERED_API_KEY", "good-key")
    monkeypatch.setenv("METERED_REGION", "europe")
    assert load_tool().main(["--metered", "--metered-base-url", base]) == 0
    assert seen == [{"path": "/api/v1/turn/credentials", "apiKey": "good-key", "region": "europe"}]
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["stun_servers"] == ["eu.relay.example:80"]
    assert [(t["port"], t["protocol"]) for t in out["turn_servers"]] == [
        (80, "udp"),
        (80, "tcp"),
        (443, "udp"),
        (443, "tls"),
    ]
    assert {(t["username"], t["credential"]) for t in out["turn_servers"]} == {("u1", "p1")}
    # What it prints is valid under rtc: in livekit.yaml.
    assert undocumented(key_paths({"rtc": out}), documented_keys()) == set()


def test_a_refused_metered_key_is_a_clear_error(metered: tuple[str, list[dict[str, Any]]]) -> None:
    base, _ = metered
    with pytest.raises(ConfigError, match=r"HTTP 401.*Invalid API Key"):
        load_tool().fetch_metered("demo", "bad-key", base_url=base)


@pytest.mark.parametrize(
    ("servers", "message"),
    [
        ({"urls": "turn:x"}, "JSON array"),
        ([{"username": "u"}], "needs 'urls'"),
        ([{"urls": "http://x"}], "not a stun:, turn: or turns: URL"),
        ([{"urls": "turn:x:3478"}], "needs a username and a credential"),
        ([{"urls": "turn:x:3478?transport=sctp", "username": "u", "credential": "p"}], "neither udp nor tcp"),
        ([{"urls": "turn:x:99999", "username": "u", "credential": "p"}], "out of range"),
    ],
)
def test_bad_ice_servers_are_refused_with_the_reason(servers: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_tool().convert(servers)


def test_urls_lists_default_ports_and_ipv6() -> None:
    config = load_tool().convert(
        [
            {"urls": ["turns:turn.example.com", "turn:[2001:db8::1]"], "username": "u", "credential": "p"},
            {"urls": ["stun:[2001:db8::2]", "stun:stun.example.com"]},
        ]
    )
    assert [(t.host, t.port, t.protocol) for t in config.turn_servers] == [
        ("turn.example.com", 5349, "tls"),
        ("2001:db8::1", 3478, "udp"),
    ]
    assert config.stun_servers == ["[2001:db8::2]:3478", "stun.example.com:3478"]


def test_the_cli_reports_bad_json_and_missing_metered_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tool = load_tool()
    assert tool.main(["--ice-servers", "[not json"]) == 2
    assert "not JSON" in capsys.readouterr().err
    monkeypatch.delenv("METERED_APP_NAME", raising=False)
    assert tool.main(["--metered"]) == 2
    assert "METERED_APP_NAME" in capsys.readouterr().err
