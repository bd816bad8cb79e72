"""Turn the reference SDK's ICE server settings into livekit.yaml's ``rtc.turn_servers`` and ``rtc.stun_servers``.

LiveKit hands ICE servers to every client from its own configuration, so the reference's ``ICE_SERVERS`` (a JSON
array of ``RTCIceServer``) and ``METERED_APP_NAME`` / ``METERED_API_KEY`` / ``METERED_REGION`` (Metered's
credential API) become entries of livekit.yaml. This prints them as YAML to paste under ``rtc:``::

    python deploy/ice_servers.py --ice-servers "$ICE_SERVERS"
    python deploy/ice_servers.py --metered      # reads METERED_APP_NAME, METERED_API_KEY, METERED_REGION

Each ``turn:`` URL becomes one turn server (``?transport=tcp``: protocol tcp, otherwise udp), each ``turns:`` URL
one with protocol tls, each ``stun:`` URL a ``host:port`` STUN server. docs/deploy.md "External TURN servers".
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from llmrtc.errors import ConfigError

log = logging.getLogger("llmrtc.deploy.ice_servers")

DEFAULT_PORTS = {"stun": 3478, "turn": 3478, "turns": 5349}
_URL = re.compile(
    r"^(?P<scheme>stuns?|turns?):(?P<host>\[[0-9A-Fa-f:.]+\]|[^:?\[\]]+)(?::(?P<port>\d{1,5}))?(?:\?(?P<query>.*))?$"
)


@dataclass(frozen=True)
class TurnServer:
    """One entry of livekit.yaml's ``rtc.turn_servers``."""

    host: str
    port: int
    protocol: str  # udp | tcp | tls
    username: str
    credential: str

    def as_config(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "protocol": self.protocol,
            "username": self.username,
            "credential": self.credential,
        }


@dataclass(frozen=True)
class LiveKitIceConfig:
    turn_servers: list[TurnServer]
    stun_servers: list[str]

    def as_rtc(self) -> dict[str, Any]:
        rtc: dict[str, Any] = {}
        if self.stun_servers:
            rtc["stun_servers"] = list(self.stun_servers)
        if self.turn_servers:
            rtc["turn_servers"] = [t.as_config() for t in self.turn_servers]
        return rtc


def _bad(message: str) -> ConfigError:
    log.warning("ice servers rejected: %s", message)
    return ConfigError(message)


def convert(ice_servers: Any) -> LiveKitIceConfig:
    """``RTCIceServer`` objects (``urls``, ``username``, ``credential``) as LiveKit ICE configuration."""
    if not isinstance(ice_servers, list):
        raise _bad("ICE servers must be a JSON array of {urls, username, credential} objects")
    turn: list[TurnServer] = []
    stun: list[str] = []
    for index, server in enumerate(ice_servers):
        if not isinstance(server, dict) or "urls" not in server:
            raise _bad(f"ICE server #{index + 1} needs 'urls'")
        urls = server["urls"] if isinstance(server["urls"], list) else [server["urls"]]
        for url in urls:
            match = _URL.match(str(url).strip())
            if not match:
                raise _bad(f"ICE server #{index + 1}: {url!r} is not a stun:, turn: or turns: URL")
            scheme, host = match.group("scheme"), match.group("host").strip("[]")
            port = int(match.group("port") or DEFAULT_PORTS.get(scheme, 3478))
            if not 0 < port < 65536:
                raise _bad(f"ICE server #{index + 1}: port {port} is out of range")
            query = urllib.parse.parse_qs(match.group("query") or "")
            transport = (query.get("transport") or ["udp"])[0].lower()
            if transport not in ("udp", "tcp"):
                raise _bad(f"ICE server #{index + 1}: transport {transport!r} is neither udp nor tcp")
            if scheme.startswith("stun"):
                entry = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                if entry not in stun:
                    stun.append(entry)
                continue
            username, credential = server.get("username"), server.get("credential")
            if not username or not credential:
                raise _bad(f"ICE server #{index + 1}: {url} needs a username and a credential")
            protocol = "tls" if scheme == "turns" else transport
            candidate = TurnServer(host, port, protocol, str(username), str(credential))
            if candidate not in turn:
                turn.append(candidate)
    return LiveKitIceConfig(turn, stun)


def fetch_metered(app_name: str, api_key: str, region: str = "", *, base_url: str | None = None) -> Any:
    """The ICE servers array of a Metered TURN credential (its Get Credential API)."""
    if not re.fullmatch(r"[A-Za-z0-9-]+", app_name or ""):
        raise _bad("METERED_APP_NAME must be the app name shown in Metered's dashboard (letters, digits, -)")
    if not api_key:
        raise _bad("METERED_API_KEY must be the apiKey of a TURN credential")
    base = (base_url or f"https://{app_name}.metered.live").rstrip("/")
    params = {"apiKey": api_key} | ({"region": region} if region else {})
    url = f"{base}/api/v1/turn/credentials?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:200]
        raise _bad(f"Metered refused the credential request (HTTP {exc.code}): {detail}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise _bad(f"Metered could not be reached or answered garbage: {exc}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ice-servers", help="JSON array of RTCIceServer (the reference's ICE_SERVERS)")
    source.add_argument("--metered", action="store_true", help="fetch from Metered (METERED_* variables)")
    parser.add_argument("--metered-base-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        if args.metered:
            raw = fetch_metered(
                os.environ.get("METERED_APP_NAME", ""),
                os.environ.get("METERED_API_KEY", ""),
                os.environ.get("METERED_REGION", ""),
                base_url=args.metered_base_url,
            )
        else:
            try:
                raw = json.loads(args.ice_servers)
            except json.JSONDecodeError as exc:
                raise _bad(f"--ice-servers is not JSON: {exc}") from exc
        config = convert(raw)
    except ConfigError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    print("# paste under rtc: in livekit.yaml")
    print(yaml.safe_dump(config.as_rtc(), sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
