"""deploy/k8s: every manifest valid against the Kubernetes JSON schemas, probes and drain wired as agreed.

The schemas ship inside the ``kubernetes-validate`` package (test extra), so this runs offline. Validation is
strict: an unknown field fails, as ``kubectl apply --validate=strict`` would.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.unit.deploy.files import K8S, env_example_variables

KUBERNETES_VERSION = "1.33"


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") != "Kustomization":
                out.append((path, doc))
    return out


def by_kind(kind: str, name: str) -> dict[str, Any]:
    found = [doc for _, doc in manifests() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name)
    return found[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def config_data() -> dict[str, str]:
    data: dict[str, str] = by_kind("ConfigMap", "llmrtc-config")["data"]
    return data


@pytest.mark.parametrize(("path", "doc"), manifests(), ids=lambda v: v.name if isinstance(v, Path) else "")
def test_manifest_is_valid_against_the_kubernetes_schema(path: Path, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: container(d).update(readinessProbes={}),  # misspelt field
        lambda d: d["spec"].update(terminationGracePeriodSeconds=90),  # right field, wrong level
        lambda d: container(d)["ports"][0].update(containerPort="9100"),  # wrong type
    ],
)
def test_the_schema_check_catches_mistakes(mutate: Any) -> None:
    broken = copy.deepcopy(by_kind("Deployment", "worker"))
    mutate(broken)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_everything_lives_in_one_namespace() -> None:
    namespace = by_kind("Namespace", "llmrtc")["metadata"]["name"]
    for _, doc in manifests():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, doc["metadata"]["name"]


def test_worker_grace_period_outlasts_the_drain() -> None:
    worker = by_kind("Deployment", "worker")
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    drain = float(config_data()["DRAIN_TIMEOUT_S"])
    assert grace >= drain + 15, (grace, drain)
    strategy = worker["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0, "a deploy must add a worker before draining one"


def test_worker_probes_use_the_metrics_port_endpoints() -> None:
    worker = container(by_kind("Deployment", "worker"))
    port = int(config_data()["METRICS_PORT"])
    named = {p["name"]: p["containerPort"] for p in worker["ports"]}
    assert named["metrics"] == port
    assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert worker["startupProbe"]["httpGet"]["path"] == "/healthz"
    annotations = by_kind("Deployment", "worker")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port) and annotations["prometheus.io/path"] == "/metrics"


def test_token_service_probes_and_service_match_its_port() -> None:
    deployment = by_kind("Deployment", "token-service")
    svc = container(deployment)
    assert svc["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert svc["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert {p["name"]: p["containerPort"] for p in svc["ports"]} == {"http": 8080}
    assert "--port" in svc["command"] and svc["command"][svc["command"].index("--port") + 1] == "8080"
    service = by_kind("Service", "token-service")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    ingress = by_kind("Ingress", "token-service")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "token-service", "port": {"name": "http"}}


def test_selectors_match_their_pods() -> None:
    for _, doc in manifests():
        if doc["kind"] == "Deployment":
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items()
    pdb = by_kind("PodDisruptionBudget", "worker")
    assert pdb["spec"]["selector"] == by_kind("Deployment", "worker")["spec"]["selector"]
    hpa = by_kind("HorizontalPodAutoscaler", "worker")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "worker"


def test_config_references_resolve() -> None:
    redis = by_kind("Service", "redis")
    store = config_data()["SESSION_STORE_URL"]
    assert store == f"redis://{redis['metadata']['name']}:{redis['spec']['ports'][0]['port']}/0"
    secret = by_kind("Secret", "llmrtc-secrets")
    for name in ("worker", "token-service"):
        c = container(by_kind("Deployment", name))
        refs = {next(iter(ref.values()))["name"] for ref in c["envFrom"]}
        assert refs == {"llmrtc-config", secret["metadata"]["name"]}
        for env in c.get("env", []):
            if "valueFrom" in env:
                assert env["valueFrom"]["configMapKeyRef"]["key"] in config_data()
    assert {"LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "TOKEN_SERVICE_API_KEYS"} <= set(secret["stringData"])


def test_config_map_is_in_step_with_env_example() -> None:
    example = env_example_variables()
    data = config_data()
    assert set(data) <= set(example), set(data) - set(example)
    for key in ("DRAIN_TIMEOUT_S", "AGENT_NAME"):
        assert data[key] == example[key], key
