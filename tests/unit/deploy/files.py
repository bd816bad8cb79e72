"""Paths and small readers shared by the deployment tests."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
SCHEMAS = Path(__file__).resolve().parent / "schemas"
COMPOSE = ROOT / "docker-compose.yml"
LIVEKIT = ROOT / "livekit.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$")


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


def load_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    assert isinstance(data, dict), path
    return data


def compose_services() -> dict[str, dict[str, Any]]:
    services = load_yaml(COMPOSE)["services"]
    assert isinstance(services, dict)
    return services


def duration_s(text: str) -> float:
    """A Compose duration (``1m30s``, ``90s``, ``500ms``) in seconds."""
    match = _DURATION.match(str(text).strip())
    if not match or not any(match.groups()):
        raise ValueError(f"not a compose duration: {text!r}")
    h, m, s, ms = (int(g) if g else 0 for g in match.groups())
    return h * 3600 + m * 60 + s + ms / 1000


def interpolation_default(value: str, var: str) -> str | None:
    """The default of ``${VAR:-default}`` (or ``${VAR-default}``) inside a compose value."""
    match = re.search(r"\$\{" + re.escape(var) + r":?-([^}]*)\}", value)
    return match.group(1) if match else None


def compose_variables(text: str) -> set[str]:
    """Every variable a compose file interpolates (``${VAR}``, ``${VAR:-x}``, ``${VAR:?msg}``, nested ones)."""
    return set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))


def env_example_variables() -> dict[str, str]:
    """The variables .env.example lists (set or commented out) with their example values."""
    out: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"^#?\s*([A-Z_][A-Z0-9_]*)=(\S*)", line)
        if match:
            out[match.group(1)] = match.group(2)
    return out
