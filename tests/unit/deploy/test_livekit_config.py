"""livekit.yaml: only keys livekit-server documents, the embedded TURN set up for production, ports in step.

livekit-server parses its configuration strictly (an unknown key stops it), so every key path here is checked
against livekit_config_keys.txt, the key list of livekit-server's own config sample.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.deploy.files import (
    DEPLOY_DOC,
    ENV_EXAMPLE,
    LIVEKIT,
    compose_services,
    env_example_variables,
    load_yaml,
)

KEYS_FILE = Path(__file__).resolve().parent / "livekit_config_keys.txt"


def documented_keys() -> set[str]:
    keys = set()
    for line in KEYS_FILE.read_text().splitlines():
        key = line.split("#", 1)[0].strip()
        if key:
            keys.add(key)
    return keys


def key_paths(node: Any, prefix: str = "") -> set[str]:
    """Dotted key paths of a YAML document; ``[]`` for the items of a list of mappings."""
    paths: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            paths.add(path)
            paths |= key_paths(value, path)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, dict):
                paths |= key_paths(item, f"{prefix}[]")
    return paths


def undocumented(paths: set[str], known: set[str]) -> set[str]:
    out = set()
    for path in paths:
        wildcard = re.sub(r"\.[^.]+$", ".*", path)
        if path not in known and wildcard not in known:
            out.add(path)
    return out


def commented_yaml(text: str, start: str) -> dict[str, Any]:
    """The YAML block commented out under ``start`` (the example entries kept in livekit.yaml)."""
    lines = text.splitlines()
    begin = next(i for i, line in enumerate(lines) if line.strip() == f"# {start}")
    indent = len(lines[begin]) - len(lines[begin].lstrip())
    block = []
    for line in lines[begin:]:
        stripped = line.strip()
        if not stripped.startswith("#") or (len(line) - len(line.lstrip()) != indent):
            break
        block.append(line[indent:].removeprefix("#").removeprefix(" "))
    data = yaml.safe_load("\n".join(block))
    assert isinstance(data, dict)
    return data


def test_the_key_list_is_the_config_sample() -> None:
    keys = documented_keys()
    assert len(keys) > 100
    for key in ("port", "rtc.tcp_port", "turn.enabled", "turn.tls_port", "rtc.turn_servers[].host", "keys.*"):
        assert key in keys


def test_every_key_is_one_livekit_server_documents() -> None:
    config = load_yaml(LIVEKIT)
    assert undocumented(key_paths(config), documented_keys()) == set()


@pytest.mark.parametrize("bad", [{"turn": {"enable": True}}, {"rtc": {"turn_servers": [{"hostname": "x"}]}}])
def test_the_key_check_catches_a_misspelt_key(bad: dict[str, Any]) -> None:
    assert undocumented(key_paths(bad), documented_keys())


def test_the_commented_external_turn_examples_use_documented_keys() -> None:
    example = commented_yaml(LIVEKIT.read_text(), "turn_servers:")
    entries = example["turn_servers"]
    assert len(entries) == 2 and {e["protocol"] for e in entries} <= {"tls", "tcp", "udp"}
    assert undocumented(key_paths({"rtc": example}), documented_keys()) == set()


def test_embedded_turn_serves_tls_through_caddy_and_udp_directly() -> None:
    turn = load_yaml(LIVEKIT)["turn"]
    assert turn["enabled"] is True
    assert turn["external_tls"] is True  # Caddy terminates TLS on 443 and passes the stream to tls_port
    assert turn["udp_port"] == 3478
    assert "domain" not in turn, (
        "the domain comes from TURN_DOMAIN (LIVEKIT_TURN_DOMAIN in docker-compose.yml)"
    )
    env = compose_services()["livekit"]["environment"]
    assert "${TURN_DOMAIN" in env["LIVEKIT_TURN_DOMAIN"]
    # livekit-server maps LIVEKIT_<PATH> onto the config key <path>: only documented keys may be set this way.
    for var in env:
        if var.startswith("LIVEKIT_") and var != "LIVEKIT_KEYS":
            key = var.removeprefix("LIVEKIT_").lower().replace("_", ".", 1)
            assert key in documented_keys(), var


def test_no_secrets_in_livekit_yaml() -> None:
    config = load_yaml(LIVEKIT)
    assert "keys" not in config and "key_file" not in config
    assert "LIVEKIT_KEYS" in compose_services()["livekit"]["environment"]


def test_redis_is_reachable_from_the_host_network() -> None:
    config = load_yaml(LIVEKIT)
    services = compose_services()
    assert services["livekit"]["network_mode"] == "host"
    host, port = config["redis"]["address"].rsplit(":", 1)
    assert host == "127.0.0.1" and f"127.0.0.1:{port}:6379" in services["redis"]["ports"]


def test_the_deploy_guide_opens_every_port_livekit_listens_on() -> None:
    """A firewall rule for each public listener in livekit.yaml and Caddy's 80/443."""
    config = load_yaml(LIVEKIT)
    rtc = config["rtc"]
    doc = DEPLOY_DOC.read_text()
    wanted = [
        "443/tcp",
        "80/tcp",
        f"{rtc['tcp_port']}/tcp",
        f"{config['turn']['udp_port']}/udp",
        f"{rtc['port_range_start']}:{rtc['port_range_end']}/udp",
    ]
    for rule in wanted:
        assert f"ufw allow {rule}" in doc, rule


def test_public_livekit_url_defaults_to_the_livekit_domain() -> None:
    env = compose_services()["token-service"]["environment"]
    assert env["LIVEKIT_URL"] == "${PUBLIC_LIVEKIT_URL:-wss://${LIVEKIT_DOMAIN}}"
    assert {"LIVEKIT_DOMAIN", "TURN_DOMAIN", "APP_DOMAIN"} <= set(env_example_variables())


def test_env_example_describes_the_turn_ports_livekit_yaml_sets() -> None:
    turn = load_yaml(LIVEKIT)["turn"]
    line = next(x for x in ENV_EXAMPLE.read_text().splitlines() if x.startswith("TURN_DOMAIN="))
    assert f"TURN/UDP on {turn['udp_port']}" in line and "TURN/TLS on 443" in line
