"""Running the token service under uvicorn with a graceful drain on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import socket
from types import FrameType

import uvicorn
from fastapi import FastAPI

from signalling.service.drain import Drain

log = logging.getLogger("signalling.service")


class DrainingServer(uvicorn.Server):
    """A uvicorn server that drains before it stops.

    The first SIGTERM (or SIGINT) turns readiness off and refuses new requests with 503, waits for the
    requests in flight to finish (at most ``drain_timeout_s``), then stops and exits with status 0. A second
    signal stops at once.
    """

    def __init__(self, config: uvicorn.Config, drain: Drain, drain_timeout_s: float) -> None:
        super().__init__(config)
        self.drain = drain
        self.drain_timeout_s = drain_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain.draining or self._loop is None:
            log.info("second %s: stopping now", signal.Signals(sig).name)
            self.should_exit = True
            self.force_exit = self.drain.draining
            return
        log.info("%s: draining (at most %.0f s)", signal.Signals(sig).name, self.drain_timeout_s)
        self.drain.begin()
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._drain_task = asyncio.get_running_loop().create_task(self._drain_then_stop())

    async def _drain_then_stop(self) -> None:
        if await self.drain.wait_idle(self.drain_timeout_s):
            log.info("drained: no request in flight; stopping")
        else:
            log.warning(
                "drain timeout after %.0f s: stopping with %d request(s) still in flight",
                self.drain_timeout_s,
                self.drain.in_flight,
            )
        self.should_exit = True


def run(app: FastAPI, *, host: str, port: int, log_level: str, drain_timeout_s: float) -> None:
    """Serve ``app`` until SIGTERM/SIGINT, then drain and return.

    ``proxy_headers`` is off: uvicorn would otherwise take the client address from ``X-Forwarded-For`` of any
    local connection; the service decides itself whom to believe (``TOKEN_TRUSTED_PROXIES``).
    """
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=max(1, math.ceil(drain_timeout_s)),
    )
    drain: Drain = app.state.drain
    DrainingServer(config, drain, drain_timeout_s).run()
