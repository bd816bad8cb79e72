"""One ElevenLabs multi-context WebSocket (``/v1/text-to-speech/{voice}/multi-stream-input``) shared by turns.

Each turn speaks on its own context (``context_id``): text pieces, ``flush``, then ``close_context``, after
which the service answers ``{"isFinal": true, "contextId": ...}`` and the socket stays open for the next
turn. Between turns the next context is initialised ahead of time and kept alive with the vendor's documented
``{"text": "", "context_id": ...}`` message every ``keepalive_s``, which also keeps the connection alive (the
service closes an idle one after ``inactivity_timeout`` seconds). A reader task routes messages to their
context. Every socket failure (a failed send, a close frame, a dropped connection) becomes an
:mod:`llmrtc.errors` error, classified by close code and reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from llmrtc.errors import (
    AuthenticationError,
    InvalidRequestError,
    ProviderConnectionError,
    ProviderError,
    ProviderResponseError,
    ProviderServerError,
)
from llmrtc.providers._errors import connection_error, error_from_status, timeout_error

log = logging.getLogger("llmrtc.providers.elevenlabs")

PROVIDER = "elevenlabs"
_IDS = itertools.count(1)

Item = dict[str, Any] | ProviderError
"""What a context receives: a message from the service, or the error that ended the socket."""


# ---------------------------------------------------------------------------------------------- close codes


def close_error(code: int | None, reason: str) -> ProviderError:
    """The error for a close frame (or an error message) with ``code`` and ``reason``.

    1008 is the service's code for many things: refused credentials (not retried), a transient "something
    went wrong" and the inactivity timeout (both retried), exhausted quota and invalid settings (not retried).
    Anything unrecognised is taken as transient, never as the caller's fault.
    """
    text = (reason or "").strip() or f"closed with code {code}"
    lowered = text.lower()
    err: ProviderError
    if code in (None, 1000, 1001, 1005, 1006):
        err = ProviderConnectionError(f"the realtime socket closed ({code}): {text}", provider=PROVIDER)
    elif any(word in lowered for word in ("api key", "api_key", "unauthori", "authenticat", "permission")):
        err = AuthenticationError(f"authentication failed: {text}", provider=PROVIDER, retryable=False)
    elif any(word in lowered for word in ("timeout", "not received", "inactiv", "idle")):
        err = ProviderConnectionError(f"the realtime socket timed out idle: {text}", provider=PROVIDER)
    elif any(word in lowered for word in ("quota", "credits", "payment")):
        err = InvalidRequestError(f"quota exhausted: {text}", provider=PROVIDER)
    elif code == 1013 or any(word in lowered for word in ("rate", "too many", "concurrent", "max_active")):
        err = error_from_status(PROVIDER, 429, text)
    elif code == 1007 or any(
        word in lowered for word in ("invalid", "not found", "unsupported", "malformed")
    ):
        err = InvalidRequestError(f"invalid request: {text}", provider=PROVIDER)
    else:  # 1008 "something went wrong", 1011 internal error, 1012/1014 restarts: transient
        err = ProviderServerError(f"the service failed: {text}", provider=PROVIDER)
    log.warning(
        "realtime socket failed",
        extra={"provider": PROVIDER, "ws_code": code, "code": err.code, "retryable": err.retryable},
    )
    return err


def message_error(message: dict[str, Any]) -> ProviderError:
    """The error an error message from the service stands for (``{"message", "error", "code"}``)."""
    text = " ".join(str(message.get(key) or "") for key in ("error", "message")).strip() or str(message)
    code = message.get("code")
    return close_error(int(code) if isinstance(code, int) else 1011, text)


def map_socket_error(exc: BaseException) -> ProviderError:
    """The :mod:`llmrtc.errors` error for anything ``websockets`` raised (or a transport failure)."""
    if isinstance(exc, ProviderError):
        return exc
    from websockets import exceptions as wse

    if isinstance(exc, wse.InvalidStatus):
        response = exc.response
        body = response.body.decode("utf-8", "replace") if response.body else ""
        return error_from_status(
            PROVIDER, response.status_code, _detail_message(body), response.headers.get("Retry-After")
        )
    if isinstance(exc, wse.ConnectionClosed):
        frame = exc.rcvd or exc.sent
        if frame is None:
            return connection_error(PROVIDER, "the realtime socket dropped without a close frame")
        return close_error(frame.code, frame.reason)
    if isinstance(exc, TimeoutError):
        return timeout_error(PROVIDER)
    if isinstance(exc, wse.WebSocketException | OSError):
        return connection_error(PROVIDER, exc)
    return ProviderError(f"unexpected realtime failure: {type(exc).__name__}: {exc}", provider=PROVIDER)


def _detail_message(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body
    detail = data.get("detail", data) if isinstance(data, dict) else data
    if isinstance(detail, dict):
        status, message = detail.get("status"), detail.get("message")
        return f"{status}: {message}" if status and message else str(message or status or detail)
    return str(detail)


# ---------------------------------------------------------------------------------------------- the socket


@dataclass
class Context:
    """One turn's context on the socket: its id and what arrives for it."""

    id: str
    queue: asyncio.Queue[Item] = field(default_factory=asyncio.Queue)


class ElevenLabsSocket:
    """An open multi-context connection; ``key`` is what it was opened for (voice, model, output format)."""

    def __init__(self, ws: Any, key: tuple[str, ...], *, keepalive_s: float) -> None:
        self.ws = ws
        self.key = key
        self.keepalive_s = keepalive_s
        self.keepalives_sent = 0
        self._contexts: dict[str, Context] = {}
        self._last_sent: dict[str, float] = {}
        self._idle: tuple[str, str] | None = None  # (context id, its init message as JSON)
        self._error: ProviderError | None = None
        self._reader = asyncio.create_task(self._read(), name="elevenlabs-ws-read")
        self._keeper = asyncio.create_task(self._keep_alive(), name="elevenlabs-ws-keepalive")

    @classmethod
    async def open(
        cls, url: str, api_key: str, key: tuple[str, ...], *, connect_timeout_s: float, keepalive_s: float
    ) -> ElevenLabsSocket:
        """Connect (the key travels in the ``xi-api-key`` header); failures are mapped."""
        from websockets.asyncio.client import connect

        from llmrtc.providers._tls import shared_ssl_context

        tls: Any = {"ssl": shared_ssl_context()} if url.startswith("wss:") else {}
        try:
            ws = await connect(
                url,
                additional_headers={"xi-api-key": api_key},
                open_timeout=connect_timeout_s,
                max_size=None,
                **tls,
            )
        except Exception as exc:
            raise map_socket_error(exc) from exc
        log.info("realtime socket open", extra={"provider": PROVIDER})
        return cls(ws, key, keepalive_s=keepalive_s)

    @property
    def usable(self) -> bool:
        """Open and not failed: a turn may start on it."""
        return self._error is None and not self._reader.done()

    async def send(self, message: dict[str, Any]) -> None:
        """Send one message; a closed or failing socket raises its mapped error."""
        if self._error is not None:
            raise self._error
        try:
            await self.ws.send(json.dumps(message))
        except Exception as exc:
            err = map_socket_error(exc)
            self._fail(err)
            raise err from exc
        context_id = message.get("context_id")
        if isinstance(context_id, str):
            self._last_sent[context_id] = time.monotonic()

    async def open_context(self, init: dict[str, Any]) -> Context:
        """A context for a turn, initialised with ``init`` (voice settings and such). The context prepared
        while idle is taken when it was initialised the same way."""
        wanted = json.dumps(init, sort_keys=True)
        idle, self._idle = self._idle, None
        if idle is not None and idle[1] == wanted:
            context = Context(idle[0])
        else:
            if idle is not None:
                await self.close_context(idle[0])
            context = Context(f"turn-{next(_IDS)}")
            await self.send({"text": " ", "context_id": context.id, **init})
        self._contexts[context.id] = context
        return context

    async def prepare_idle(self, init: dict[str, Any]) -> None:
        """Initialise the next turn's context now and keep it (and so the socket) alive until it is used."""
        if self._idle is not None or not self.usable:
            return
        context_id = f"turn-{next(_IDS)}"
        try:
            await self.send({"text": " ", "context_id": context_id, **init})
        except ProviderError:
            return  # the next turn reconnects
        self._idle = (context_id, json.dumps(init, sort_keys=True))

    async def close_context(self, context_id: str) -> None:
        """Ask the service to end a context (best effort: a failed socket is replaced by the next turn)."""
        with contextlib.suppress(ProviderError):
            await self.send({"context_id": context_id, "close_context": True})

    def release(self, context: Context) -> None:
        """Stop routing messages to ``context``."""
        self._contexts.pop(context.id, None)
        self._last_sent.pop(context.id, None)

    async def aclose(self) -> None:
        """Close every context and the connection."""
        self._keeper.cancel()
        if self.usable:
            with contextlib.suppress(Exception):
                await self.ws.send(json.dumps({"close_socket": True}))
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, self._keeper, return_exceptions=True)
        self._fail(ProviderConnectionError("the realtime socket was closed", provider=PROVIDER))

    # ------------------------------------------------------------------------------------------ tasks

    def _fail(self, err: ProviderError) -> None:
        if self._error is None:
            self._error = err
        for context in self._contexts.values():
            context.queue.put_nowait(self._error)

    async def _read(self) -> None:
        pending: ProviderError | None = None  # an error message the service sends before it closes
        try:
            async for raw in self.ws:
                try:
                    message = json.loads(raw)
                except (ValueError, UnicodeDecodeError):
                    message = None
                if not isinstance(message, dict):
                    self._fail(ProviderResponseError("unreadable realtime message", provider=PROVIDER))
                    return
                context_id = message.get("contextId", message.get("context_id"))
                context = self._contexts.get(context_id) if isinstance(context_id, str) else None
                if context is not None:
                    context.queue.put_nowait(message)
                elif message.get("error") or (message.get("message") and not message.get("audio")):
                    pending = message_error(message)
                    for live in self._contexts.values():
                        live.queue.put_nowait(pending)
            frame = self.ws.close_code
            if pending is None and frame not in (None, 1000, 1001):
                pending = close_error(frame, self.ws.close_reason or "")
            self._fail(pending or ProviderConnectionError("the realtime socket closed", provider=PROVIDER))
        except Exception as exc:
            self._fail(pending or map_socket_error(exc))
        finally:
            if self._idle is not None and self._error is not None:
                log.info(
                    "idle realtime socket closed; the next turn reconnects", extra={"provider": PROVIDER}
                )

    async def _keep_alive(self) -> None:
        """The vendor's keep-alive (an empty text) for every context quiet for ``keepalive_s``."""
        while True:
            await asyncio.sleep(self.keepalive_s / 4)
            if not self.usable:
                return
            now = time.monotonic()
            ids = list(self._contexts) + ([self._idle[0]] if self._idle is not None else [])
            for context_id in ids:
                if now - self._last_sent.get(context_id, now) >= self.keepalive_s:
                    try:
                        await self.send({"text": "", "context_id": context_id})
                    except ProviderError:
                        return
                    self.keepalives_sent += 1


__all__ = ["PROVIDER", "Context", "ElevenLabsSocket", "close_error", "map_socket_error", "message_error"]
