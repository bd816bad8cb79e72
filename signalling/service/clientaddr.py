"""The address a request really comes from: ``X-Forwarded-For`` is believed only from configured proxies."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

Network = IPv4Network | IPv6Network


def _parse(value: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(value.strip())
    except ValueError:
        return None


def _trusted(addr: IPv4Address | IPv6Address | None, proxies: Sequence[Network]) -> bool:
    return addr is not None and any(addr in net for net in proxies)


def client_address(peer: str | None, forwarded_for: str | None, proxies: Sequence[Network]) -> str:
    """The client's address: the connection's peer, unless the peer is a trusted proxy.

    Behind trusted proxies, ``X-Forwarded-For`` is read from the right (each proxy appends the address it got
    the request from); the first address that is not a trusted proxy is the client. Anything a client writes
    into the header itself sits to the left of that and is never used. Without trusted proxies (the default)
    the header is ignored, so it cannot buy a caller a fresh rate-limit bucket.
    """
    host = peer or "unknown"
    if not forwarded_for or not _trusted(_parse(host), proxies):
        return host
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        addr = _parse(hop)
        if addr is None:
            return host  # a malformed hop: trust nothing beyond the proxy we know
        if not _trusted(addr, proxies):
            return str(addr)
    return str(_parse(hops[0])) if hops else host
