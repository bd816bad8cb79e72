"""docker-compose.yml: valid against the Compose specification, healthy start order, drain-aware shutdown.

No Docker engine runs here, so the file is validated with the Compose specification's JSON Schema
(schemas/compose-spec.json) and its wiring is checked against the files it mounts and the ports they name.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from typing import Any

import jsonschema
import pytest

from tests.unit.deploy.files import (
    COMPOSE,
    DEPLOY,
    ROOT,
    SCHEMAS,
    compose_services,
    compose_variables,
    duration_s,
    env_example_variables,
    interpolation_default,
    load_json,
    load_yaml,
)


def compose_validator() -> jsonschema.Draft7Validator:
    schema = load_json(SCHEMAS / "compose-spec.json")
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def schema_errors(document: dict[str, Any]) -> list[str]:
    return [f"{e.json_path}: {e.message}" for e in compose_validator().iter_errors(document)]


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    assert schema_errors(load_yaml(COMPOSE)) == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("services", "worker", "stop_grace_timeout"), "90s"),  # a misspelt key
        (("services", "worker", "healthcheck", "retry"), 3),  # not a healthcheck key
        (("services", "worker", "depends_on", "redis", "condition"), "service_ready"),
        (("services", "grafana", "ports"), "3000:3000"),  # a string where a list belongs
    ],
)
def test_the_schema_check_catches_mistakes(path: tuple[str, ...], value: object) -> None:
    broken = copy.deepcopy(load_yaml(COMPOSE))
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert schema_errors(broken), f"{'.'.join(path)}={value!r} passed the schema"


def test_the_whole_stack_is_there() -> None:
    services = compose_services()
    assert set(services) >= {"caddy", "livekit", "redis", "token-service", "worker", "prometheus", "grafana"}
    assert str(services["livekit"]["image"]).startswith("livekit/livekit-server:v")
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        assert svc.get("restart") == "unless-stopped", name


def test_every_service_has_a_healthcheck() -> None:
    for name, svc in compose_services().items():
        check = svc.get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert duration_s(check["interval"]) > 0 and duration_s(check["timeout"]) < duration_s(
            check["interval"]
        )


@pytest.mark.parametrize(
    ("service", "port", "path"),
    [("worker", 9100, "/readyz"), ("token-service", 8080, "/readyz"), ("livekit", 7880, "/")],
)
def test_healthchecks_use_the_service_endpoints(service: str, port: int, path: str) -> None:
    command = " ".join(compose_services()[service]["healthcheck"]["test"])
    assert f"127.0.0.1:{port}{path}" in command.replace("'", " ").replace('"', " ") + " ", command


def test_start_order_waits_for_healthy_dependencies() -> None:
    services = compose_services()
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on must name conditions"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert spec == {"condition": "service_healthy"}, f"{name} -> {dep}: {spec}"
            assert services[dep].get("healthcheck"), f"{name} waits for {dep}, which has no healthcheck"
    assert set(services["worker"]["depends_on"]) == {"livekit", "redis"}
    assert set(services["token-service"]["depends_on"]) == {"livekit"}
    assert set(services["livekit"]["depends_on"]) == {"redis"}
    assert set(services["grafana"]["depends_on"]) == {"prometheus"}


def test_workers_get_more_time_to_stop_than_their_drain_timeout() -> None:
    worker = compose_services()["worker"]
    drain = interpolation_default(str(worker["environment"]["DRAIN_TIMEOUT_S"]), "DRAIN_TIMEOUT_S")
    assert drain is not None
    assert float(drain) == float(env_example_variables()["DRAIN_TIMEOUT_S"])
    grace = duration_s(worker["stop_grace_period"])
    # The margin covers the hand-over after the drain timeout and the process exit.
    assert grace >= float(drain) + 15, (grace, drain)
    assert worker.get("init") is True, "a PID-1 init forwards SIGTERM and reaps children"
    assert duration_s(compose_services()["token-service"]["stop_grace_period"]) >= 10


def test_workers_expose_metrics_where_prometheus_scrapes_them() -> None:
    services = compose_services()
    worker = services["worker"]
    port = int(worker["environment"]["METRICS_PORT"])
    assert str(port) in [str(p) for p in worker["expose"]]
    prometheus = load_yaml(DEPLOY / "prometheus.yml")
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    sd = jobs["llmrtc-worker"]["dns_sd_configs"][0]
    assert sd["names"] == ["worker"] and sd["type"] == "A" and sd["port"] == port
    assert jobs["llmrtc-token-service"]["static_configs"][0]["targets"] == ["token-service:8080"]
    livekit_port = load_yaml(ROOT / "livekit.yaml")["prometheus"]["port"]
    assert jobs["livekit"]["static_configs"][0]["targets"] == [f"host.docker.internal:{livekit_port}"]


def test_mounted_files_exist() -> None:
    for name, svc in compose_services().items():
        for volume in svc.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_grafana_is_provisioned_with_the_dashboard_and_its_data_source() -> None:
    grafana = compose_services()["grafana"]
    mounts = {str(v).split(":")[0]: str(v).split(":")[1] for v in grafana["volumes"]}
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboard_in = mounts["./deploy/grafana/llmrtc-dashboard.json"]
    providers = load_yaml(DEPLOY / "grafana/provisioning/dashboards/llmrtc.yml")["providers"]
    assert any(dashboard_in.startswith(p["options"]["path"].rstrip("/") + "/") for p in providers)
    sources = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")["datasources"]
    assert sources[0]["url"] == "http://prometheus:9090" and sources[0]["type"] == "prometheus"
    dashboard = load_json(DEPLOY / "grafana/llmrtc-dashboard.json")
    uids = {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p}
    assert uids == {sources[0]["uid"]}


def test_only_caddy_is_public() -> None:
    """Redis, the token service, Prometheus and Grafana publish on the loopback only; Caddy fronts them."""
    services = compose_services()
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} publicly"
    assert services["caddy"]["network_mode"] == "host"
    assert services["livekit"]["network_mode"] == "host"


def test_caddy_routes_each_domain_to_its_listener() -> None:
    caddy = load_yaml(DEPLOY / "caddy/caddy.yaml")
    livekit = load_yaml(ROOT / "livekit.yaml")
    server = caddy["apps"]["http"]["servers"]["main"]
    assert server["listen"] == [":443"]
    # TURN/TLS: taken off by TLS server name before HTTP, TLS terminated, the stream to turn.tls_port.
    layer4, tls = server["listener_wrappers"]
    assert layer4["wrapper"] == "layer4" and tls == {"wrapper": "tls"}
    (turn_route,) = layer4["routes"]
    assert turn_route["match"] == [{"tls": {"sni": ["#{ $TURN_DOMAIN }"]}}]
    assert [h["handler"] for h in turn_route["handle"]] == ["tls", "proxy"]
    assert turn_route["handle"][1]["upstreams"] == [{"dial": [f"localhost:{livekit['turn']['tls_port']}"]}]
    assert caddy["apps"]["tls"]["certificates"]["automate"] == ["#{ $TURN_DOMAIN }"]
    # LiveKit signalling and the token service through the HTTP reverse proxy (X-Forwarded-For).
    by_host = {
        r["match"][0]["host"][0]: r["handle"][0]["upstreams"][0]["dial"]
        for r in server["routes"]
        if r["handle"][0]["handler"] == "reverse_proxy"
    }
    assert by_host == {
        "#{ $LIVEKIT_DOMAIN }": f"localhost:{livekit['port']}",
        "#{ $APP_DOMAIN }": "localhost:8080",
    }
    assert "127.0.0.1:8080:8080" in compose_services()["token-service"]["ports"]
    # Caddy reads the domains from its environment, which compose must pass.
    env = compose_services()["caddy"]["environment"]
    for var in ("LIVEKIT_DOMAIN", "TURN_DOMAIN", "APP_DOMAIN", "ACME_EMAIL"):
        assert var in env


def test_caddy_template_variables_are_all_passed() -> None:
    lines = (DEPLOY / "caddy/caddy.yaml").read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("# "))  # not the comments
    used = set(re.findall(r"#\{[^}]*\$([A-Z_][A-Z0-9_]*)", text))
    assert used == set(compose_services()["caddy"]["environment"])


def test_the_token_service_believes_forwarded_addresses_only_from_the_compose_network() -> None:
    env = compose_services()["token-service"]["environment"]
    networks = [ipaddress.ip_network(n) for n in env["TOKEN_TRUSTED_PROXIES"].split(",")]
    assert all(n.is_private for n in networks)
    assert any(ipaddress.ip_address("172.17.0.1") in n for n in networks)  # Docker's first bridge gateway


def test_every_compose_variable_is_in_env_example() -> None:
    used = compose_variables(COMPOSE.read_text())
    assert used - set(env_example_variables()) == set()
