"""One TLS context per process for every provider's HTTPS client.

Building an :class:`ssl.SSLContext` loads the CA bundle, which takes tens to hundreds of milliseconds of CPU;
done per client, on a room's event loop, it stalls that room's audio. Every provider client takes this one
context instead (a context is safe to share across threads and event loops); the worker builds it once, in
its prewarm, before any room starts.
"""

from __future__ import annotations

import functools
import ssl


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """The process's client TLS context (certifi's CA bundle when installed, else the system's)."""
    try:
        import certifi

        cafile: str | None = certifi.where()
    except ImportError:  # pragma: no cover - certifi comes with the HTTP clients
        cafile = None
    return ssl.create_default_context(cafile=cafile)


__all__ = ["shared_ssl_context"]
