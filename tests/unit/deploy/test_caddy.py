"""deploy/caddy/caddy.yaml: its templates fill in, and Caddy itself accepts the result.

The compose image (livekit/caddyl4) adds the layer4 module and a YAML adapter with ``#{ ... }`` templates to
Caddy. Debian's ``caddy`` has neither, so this fills the templates in the same way, leaves out the layer4
listener wrapper (its routes are checked in test_compose.py) and runs ``caddy validate`` on the rest: the HTTP
server, its reverse proxies and the TLS automation.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require
from tests.unit.deploy.files import DEPLOY

CADDY_YAML = DEPLOY / "caddy" / "caddy.yaml"
ENV = {
    "LIVEKIT_DOMAIN": "livekit.example.com",
    "TURN_DOMAIN": "turn.example.com",
    "APP_DOMAIN": "app.example.com",
    "ACME_EMAIL": "ops@example.com",
}
_EXPR = re.compile(r"#\{(.*?)\}")


def fill(text: str, env: dict[str, str]) -> str:
    """The two template forms the file uses: ``#{ $VAR }`` and ``#{ if $VAR }`` ... ``#{ end }``."""
    for expr in _EXPR.findall(text):
        assert re.fullmatch(r" (\$[A-Z_]+|if \$[A-Z_]+|end) ", expr), f"unsupported template #{{{expr}}}"
    text = re.sub(
        r"#\{ if \$(\w+) \}\n(.*?)#\{ end \}\n",
        lambda m: m.group(2) if env[m.group(1)] else "",
        text,
        flags=re.S,
    )
    return re.sub(r"#\{ \$(\w+) \}", lambda m: env[m.group(1)], text)


def without_layer4(config: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(config)
    server = out["apps"]["http"]["servers"]["main"]
    wrappers = [w for w in server.pop("listener_wrappers") if w["wrapper"] != "layer4"]
    if wrappers != [{"wrapper": "tls"}]:  # tls alone is Caddy's default
        server["listener_wrappers"] = wrappers
    return out


def caddy_validate(config: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    caddy = shutil.which("caddy")
    require(caddy, "caddy (apt-get install caddy)")
    assert caddy
    path = tmp_path / "caddy.json"
    path.write_text(json.dumps(config))
    return subprocess.run(
        [caddy, "validate", "--config", str(path)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("email", ["ops@example.com", ""])
def test_caddy_accepts_the_configuration(email: str, tmp_path: Path) -> None:
    config = yaml.safe_load(fill(CADDY_YAML.read_text(), ENV | {"ACME_EMAIL": email}))
    assert ("automation" in config["apps"]["tls"]) is bool(email)
    run = caddy_validate(without_layer4(config), tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr


def test_caddy_validate_catches_a_mistake(tmp_path: Path) -> None:
    config = without_layer4(yaml.safe_load(fill(CADDY_YAML.read_text(), ENV)))
    config["apps"]["http"]["servers"]["main"]["routes"][0]["handle"][0]["handler"] = "reverse_proxi"
    assert caddy_validate(config, tmp_path).returncode != 0
