"""What the WebSocket providers share: failure mapping, audio feeding with keep-alives, WAV to 16 kHz PCM.

Deepgram, Cartesia and OpenAI realtime all hold one socket per call, send on one task and read on another;
their sockets fail with ``websockets`` exceptions (a refused handshake, a close with a code) or with their
SDK's wrapping of those. :func:`socket_error` turns any of them into the right :mod:`llmrtc.errors` class.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import numpy as np

from llmrtc.errors import (
    AuthenticationError,
    InvalidRequestError,
    ProviderError,
)
from llmrtc.providers._errors import connection_error, error_from_status, timeout_error

log = logging.getLogger("llmrtc.providers.realtime")
T = TypeVar("T")

STT_RATE = 16000
"""The rate of the PCM16 mono audio ``transcribe_stream`` takes."""


def close_error(provider: str, code: int | None, reason: str) -> ProviderError:
    """The error for a socket the service closed with ``code`` and ``reason`` before the answer ended.

    1008 (policy) naming a key or auth is an auth failure, else an invalid request like 1003/1007/1009;
    1013 and rate-limit reasons are a 429; 1011/1012/1014 and a dropped connection (1006) are retryable.
    """
    reason = (reason or "").strip() or f"closed with code {code}"
    lowered = reason.lower()
    if code in (1008, 4001, 4003) and any(w in lowered for w in ("key", "auth", "credential", "unauthori")):
        log.warning("socket refused the credentials", extra={"provider": provider, "ws_code": code})
        return AuthenticationError(f"authentication failed: {reason}", provider=provider)
    if code == 1013 or "rate limit" in lowered or "too many" in lowered:
        return error_from_status(provider, 429, reason)
    if code in (1003, 1007, 1008, 1009, 4000, 4008):
        log.warning("socket closed: invalid request", extra={"provider": provider, "ws_code": code})
        return InvalidRequestError(f"invalid request: {reason}", provider=provider)
    if code in (1011, 1012, 1014):
        return error_from_status(provider, 500, reason)
    return connection_error(provider, f"socket closed ({code}): {reason}")


def socket_error(provider: str, exc: BaseException, timeout_s: float | None = None) -> ProviderError:
    """The :class:`ProviderError` for a ``websockets`` failure (handshake refused, socket closed, timeout)."""
    if isinstance(exc, ProviderError):
        return exc
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

    legacy_status = getattr(exc, "status_code", None)  # websockets.legacy InvalidStatusCode
    if isinstance(exc, InvalidStatus):
        response = exc.response
        body = response.body.decode("utf-8", "replace") if response.body else ""
        return error_from_status(
            provider,
            response.status_code,
            body or response.reason_phrase,
            response.headers.get("Retry-After"),
        )
    if isinstance(legacy_status, int) and isinstance(exc, InvalidHandshake):
        return error_from_status(provider, legacy_status, str(exc))
    if isinstance(exc, ConnectionClosed):
        frame = exc.rcvd
        if frame is None:
            return connection_error(provider, "the connection dropped without a close frame")
        return close_error(provider, frame.code, frame.reason)
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return timeout_error(provider, timeout_s)
    return connection_error(provider, exc)


def is_closed_ok(exc: BaseException) -> bool:
    """``exc`` is the service closing the socket normally (1000/1001)."""
    from websockets.exceptions import ConnectionClosedOK

    return isinstance(exc, ConnectionClosedOK)


async def pump(
    items: AsyncIterable[Any],
    send: Callable[[Any], Awaitable[None]],
    *,
    idle_s: float | None = None,
    on_idle: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Send every item of ``items``; while the source is silent for ``idle_s``, call ``on_idle`` (a keep-alive)."""
    iterator = aiter(items)
    while True:
        pending: asyncio.Future[Any] = asyncio.ensure_future(anext(iterator))
        try:
            while True:
                done, _ = await asyncio.wait({pending}, timeout=idle_s)
                if done:
                    break
                if on_idle is not None:
                    await on_idle()
        finally:
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await pending
        try:
            item = pending.result()
        except StopAsyncIteration:
            return
        await send(item)


async def receive_or_sender_failure(
    recv: Callable[[], Awaitable[Any]], sender: asyncio.Task[None], timeout_s: float | None
) -> Any:
    """The next message; while ``sender`` still runs the service may rightly be silent, once it has
    finished each message must come within ``timeout_s``. A failed sender's exception is raised instead."""
    receiving = asyncio.ensure_future(recv())
    try:
        done, _ = await asyncio.wait({receiving, sender}, return_when=asyncio.FIRST_COMPLETED)
        if receiving not in done:
            if sender.exception() is not None:
                raise sender.exception()  # type: ignore[misc]
            done, _ = await asyncio.wait({receiving}, timeout=timeout_s)
        if receiving not in done:
            raise TimeoutError
        return receiving.result()
    finally:
        if not receiving.done():
            receiving.cancel()
            with contextlib.suppress(BaseException):
                await receiving


SENDER_DONE = object()
"""What :meth:`Receiver.next` returns when the sender finished while waiting (no message yet)."""


class Receiver:
    """Reads a socket while a sender task feeds it, keeping one pending receive across calls."""

    def __init__(
        self, recv: Callable[[], Awaitable[Any]], sender: asyncio.Task[None], timeout_s: float | None
    ):
        self._recv = recv
        self._sender = sender
        self._timeout_s = timeout_s
        self._pending: asyncio.Future[Any] | None = None
        self._sender_seen = False

    async def next(self) -> Any:
        """The next message, or :data:`SENDER_DONE` once when the sender finishes first. Once the sender
        is done each message must come within ``timeout_s`` (``TimeoutError``); its failure is raised."""
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._recv())
        waiting: set[asyncio.Future[Any]] = {self._pending}
        if not self._sender_seen:
            waiting.add(self._sender)
        timeout = self._timeout_s if self._sender_seen else None
        done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if self._pending in done:
            pending, self._pending = self._pending, None
            return pending.result()
        if self._sender in done:
            self._sender_seen = True
            if not self._sender.cancelled() and self._sender.exception() is not None:
                raise self._sender.exception()  # type: ignore[misc]
            return SENDER_DONE
        raise TimeoutError

    async def aclose(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending


async def stop_task(task: asyncio.Task[None]) -> BaseException | None:
    """Cancel ``task`` if it still runs and wait for it; its failure (not a cancel) is returned, marked seen."""
    if not task.done():
        task.cancel()
    with contextlib.suppress(BaseException):
        await asyncio.wait({task})
    if task.cancelled():
        return None
    return task.exception()


def wav_to_stt_pcm(wav: bytes) -> bytes:
    """A 16-bit WAV of any rate and channel count as PCM16 mono at :data:`STT_RATE`."""
    from llmrtc.audio.codec import resample_pcm16
    from llmrtc.audio.wav import wav_to_pcm16

    pcm, rate, channels = wav_to_pcm16(wav)
    if channels > 1:
        samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % (2 * channels)], dtype="<i2")
        pcm = samples.reshape(-1, channels).mean(axis=1).astype("<i2").tobytes()
    return resample_pcm16(pcm, rate, STT_RATE) if rate != STT_RATE else pcm


async def one_piece(data: T) -> AsyncIterator[T]:
    """``data`` as a one-item async stream."""
    yield data


__all__ = [
    "SENDER_DONE",
    "STT_RATE",
    "Receiver",
    "close_error",
    "is_closed_ok",
    "one_piece",
    "pump",
    "receive_or_sender_failure",
    "socket_error",
    "stop_task",
    "wav_to_stt_pcm",
]
