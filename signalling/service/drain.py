"""Graceful drain: on shutdown, refuse new requests, let the ones in flight finish (bounded), then exit."""

from __future__ import annotations

import asyncio
import json
import logging

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("signalling.service")

#: Probes answered while draining: liveness stays up, readiness says "not ready".
HEALTH_PATHS = frozenset({"/healthz", "/readyz"})


class Drain:
    """Counts requests in flight and knows whether the service is draining."""

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self._idle: asyncio.Event | None = None

    def begin(self) -> None:
        """Stop taking new requests (they get 503); readiness turns false."""
        if not self.draining:
            self.draining = True
            log.info("draining: %d request(s) in flight, new requests are refused", self.in_flight)

    def enter(self) -> None:
        self.in_flight += 1
        if self._idle is not None:
            self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self._idle is not None:
            self._idle.set()

    async def wait_idle(self, within_s: float) -> bool:
        """Wait until no request is in flight; False if ``within_s`` seconds passed first."""
        if self.in_flight == 0:
            return True
        if self._idle is None:
            self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), within_s)
        except TimeoutError:
            return self.in_flight == 0
        return True


class DrainMiddleware:
    """ASGI middleware: tracks in-flight HTTP requests and refuses new ones while draining."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.drain.draining and scope.get("path") not in HEALTH_PATHS:
            body = json.dumps(
                {"error": {"code": "shutting_down", "message": "the service is shutting down; retry shortly"}}
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"retry-after", b"1"),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        self.drain.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.drain.leave()
