"""The development server: an aiohttp application speaking enough of LiveKit's protocol for the official SDKs.

Use::

    server = DevServer(port=0)            # host="127.0.0.1", api_key="devkey", api_secret="secret"
    server.app.router.add_get(...)        # extend *before* start(): part 2 adds /agent and /twirp/... here
    await server.start()
    server.url                            # ws://127.0.0.1:<port>  (LIVEKIT_URL for the SDKs)
    server.http_url                       # http://127.0.0.1:<port> (Twirp API base URL)
    server.rooms                          # RoomManager: rooms, participants, data, lifecycle listeners
    await server.stop()

Routes registered by this part: ``GET /rtc``, ``/rtc/v1`` (WebSocket signalling), ``/rtc/validate``,
``/rtc/v1/validate`` (with CORS), and ``GET /`` ("OK", like livekit-server). Other parts extend ``server.app``
directly or pass ``routes=[callable(app, server)]`` to the constructor; ``build_app()`` builds the same
application for a given :class:`RoomManager` and :class:`Authenticator`. Shared objects are stored in the app:
``app["devserver"]`` (the DevServer, when built by it), ``app["devserver_rooms"]``, ``app["devserver_auth"]``.

WebRTC media goes over aiortc on the machine's non-loopback addresses (libwebrtc ignores loopback), with no
ICE servers; audio (Opus) and video (VP8/H264) are forwarded without transcoding.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections.abc import Callable, Iterable

from aiohttp import web

from signalling.devserver.auth import Authenticator
from signalling.devserver.media import (
    install_pass_through,
    tolerate_late_consent_answers,
    uninstall_pass_through,
)
from signalling.devserver.rooms import DEFAULT_DEPARTURE_TIMEOUT, DEFAULT_EMPTY_TIMEOUT, RoomManager
from signalling.devserver.signal import CORS_HEADERS, SignalContext, add_signal_routes
from signalling.devserver.twirp import add_server_api

logger = logging.getLogger(__name__)

RouteHook = Callable[[web.Application, "DevServer"], None]


async def _health(request: web.Request) -> web.Response:
    return web.Response(text="OK", headers=CORS_HEADERS)


def build_app(rooms: RoomManager, auth: Authenticator) -> web.Application:
    """The aiohttp application with the signalling routes; add more routes before it starts."""
    app = web.Application()
    with warnings.catch_warnings():  # string keys: other parts look the shared objects up by name
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        app["devserver_rooms"] = rooms
        app["devserver_auth"] = auth
    ctx = SignalContext(rooms=rooms, auth=auth)
    add_signal_routes(app, ctx)
    app.router.add_get("/", _health)
    return app


class DevServer:
    """A LiveKit-compatible development server (single node, no TURN, no simulcast)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str = "devkey",
        api_secret: str = "secret",
        *,
        empty_timeout: int = DEFAULT_EMPTY_TIMEOUT,
        departure_timeout: int = DEFAULT_DEPARTURE_TIMEOUT,
        routes: Iterable[RouteHook] = (),
    ) -> None:
        self.host = host
        self.api_key = api_key
        self.api_secret = api_secret
        self._requested_port = port
        self._port: int | None = None
        self.rooms = RoomManager(
            default_empty_timeout=empty_timeout, default_departure_timeout=departure_timeout
        )
        self.auth = Authenticator(api_key, api_secret)
        self.app = build_app(self.rooms, self.auth)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", web.NotAppKeyWarning)
            self.app["devserver"] = self
        # part 2 (agents.py, twirp.py): agent workers on /agent and the Twirp server API on /twirp/...
        add_server_api(self.app, self)
        for hook in routes:
            hook(self.app, self)
        self._runner: web.AppRunner | None = None
        self._installed = False

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("DevServer is not started")
        return self._port

    @property
    def _public_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host

    @property
    def url(self) -> str:
        """WebSocket URL for the SDKs (``LIVEKIT_URL``)."""
        return f"ws://{self._public_host}:{self.port}"

    @property
    def http_url(self) -> str:
        """HTTP base URL (Twirp API, validate)."""
        return f"http://{self._public_host}:{self.port}"

    @property
    def signal_context(self) -> SignalContext:
        """Shared state of the signal handlers (connected sessions)."""
        ctx: SignalContext = self.app["devserver_signal"]
        return ctx

    async def start(self) -> None:
        """Bind and start serving."""
        if self._runner is not None:
            return
        install_pass_through()
        tolerate_late_consent_answers()
        self._installed = True
        self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._requested_port, reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self._port = sockets[0].getsockname()[1] if sockets else self._requested_port
        logger.info("devserver listening on %s (api key %s)", self.url, self.api_key)

    async def stop(self) -> None:
        """Drop every connection (clients see the server go away) and stop serving."""
        if self._runner is None:
            return
        sessions = list(self.signal_context.sessions)
        for session in sessions:
            with contextlib.suppress(Exception):
                await session.shutdown()
        await asyncio.sleep(0)
        await self.rooms.close_all()
        await self._runner.cleanup()
        self._runner = None
        if self._installed:
            uninstall_pass_through()
            self._installed = False
        logger.info("devserver stopped")

    async def __aenter__(self) -> DevServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
