"""Cartesia text to speech over its WebSocket, with word timestamps and context continuation.

One socket per provider (opened with the official ``cartesia`` SDK's ``tts.websocket_connect``, reopened when
it drops) carries every speak call; each call is one Cartesia *context*. :meth:`CartesiaTTSProvider.
speak_text_stream` feeds the text of one answer into its context piece by piece as the LLM produces it
(``"continue": true``; an empty transcript with ``"continue": false`` ends it), so the voice keeps one prosody
across the pieces and audio starts before the answer is complete. Audio is asked for as raw ``pcm_s16le`` at
:attr:`sample_rate`; ``add_timestamps`` word timings (seconds from the start of the context, i.e. from the
first sample of the call) ride on the next audio chunk as :class:`WordTiming`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from typing import TYPE_CHECKING, Any

from llmrtc.errors import ConfigError, ProviderError, ProviderResponseError
from llmrtc.providers._errors import connection_error, error_from_status, timeout_error
from llmrtc.providers._realtime import (
    is_closed_ok,
    one_piece,
    receive_or_sender_failure,
    socket_error,
    stop_task,
)
from llmrtc.providers.base import TTSCapabilities, TTSProvider
from llmrtc.providers.resilience import NO_RETRY, RetryPolicy, call_with_retries, stream_with_retries
from llmrtc.types import TTSChunk, TTSConfig, WordTiming

if TYPE_CHECKING:
    from cartesia import AsyncCartesia

log = logging.getLogger("llmrtc.providers.cartesia")

PROVIDER = "cartesia"
DEFAULT_BASE_URL = "https://api.cartesia.ai"
DEFAULT_VOICE = "6ccbfb76-1fc6-48f7-b71d-91ac6298247b"


def map_error(exc: BaseException, timeout_s: float | None = None) -> ProviderError:
    """Any Cartesia SDK or socket failure as an :mod:`llmrtc.errors` error."""
    if isinstance(exc, ProviderError):
        return exc
    if is_closed_ok(exc):
        return connection_error(PROVIDER, "the service closed the socket before the speech ended")
    return socket_error(PROVIDER, exc, timeout_s)


def _event_error(event: Any) -> ProviderError:
    status = getattr(event, "status_code", None) or 500
    title = getattr(event, "title", None) or getattr(event, "error_code", None) or "error"
    message = getattr(event, "message", None) or getattr(event, "error", None) or ""
    return error_from_status(PROVIDER, int(status), f"{title}: {message}".strip(": "))


class _Socket:
    """One open Cartesia socket; a reader task routes each message to the queue of its context."""

    def __init__(self, manager: Any, connection: Any) -> None:
        self.manager = manager
        self.connection = connection
        self.queues: dict[str, asyncio.Queue[Any]] = {}
        self.failure: ProviderError | None = None
        self.reader = asyncio.create_task(self._read(), name="cartesia-read")

    async def _read(self) -> None:
        try:
            while True:
                event = await self.connection.recv()
                queue = self.queues.get(getattr(event, "context_id", None) or "")
                if queue is not None:
                    queue.put_nowait(event)
                elif getattr(event, "type", None) == "error":
                    # An error without a (known) context concerns every call on this socket.
                    for queue in self.queues.values():
                        queue.put_nowait(_event_error(event))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failure = map_error(exc)
            for queue in self.queues.values():
                queue.put_nowait(self.failure)

    @property
    def usable(self) -> bool:
        return self.failure is None and not self.reader.done()

    def open_context(self) -> tuple[str, asyncio.Queue[Any]]:
        context_id = uuid.uuid4().hex
        queue: asyncio.Queue[Any] = asyncio.Queue()
        if self.failure is not None:
            queue.put_nowait(self.failure)
        self.queues[context_id] = queue
        return context_id, queue

    async def aclose(self) -> None:
        await stop_task(self.reader)
        try:
            await self.manager.__aexit__(None, None, None)
        except Exception as exc:  # closing a dead socket is not worth a failure
            log.debug("closing the socket failed: %s", exc, extra={"provider": PROVIDER})


class CartesiaTTSProvider(TTSProvider):
    """Cartesia Sonic voices on one long-lived WebSocket: input streaming and word timestamps."""

    name = PROVIDER
    capabilities = TTSCapabilities(streaming=True, input_streaming=True, word_timestamps=True)

    def __init__(
        self,
        api_key: str | None = None,
        voice_id: str = DEFAULT_VOICE,
        model_id: str = "sonic-3",
        language: str | None = "en",
        sample_rate: int = 24000,
        base_url: str | None = None,
        ws_base_url: str | None = None,
        add_timestamps: bool = True,
        max_buffer_delay_ms: int | None = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.api_key = api_key or os.environ.get("CARTESIA_API_KEY")
        if not self.api_key:
            raise ConfigError("Cartesia needs an API key: pass api_key or set CARTESIA_API_KEY")
        self.voice_id = voice_id
        self.model_id = model_id
        self.language = language
        self.sample_rate = sample_rate
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        if ws_base_url is None:  # the socket lives on the same host: http -> ws, https -> wss
            ws_base_url = "ws" + self.base_url[4:] if self.base_url.startswith("http") else self.base_url
        self.ws_base_url = ws_base_url.rstrip("/")
        self.add_timestamps = add_timestamps
        self.max_buffer_delay_ms = max_buffer_delay_ms
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self._client: AsyncCartesia | None = None
        self._socket: _Socket | None = None
        self._opening = asyncio.Lock()

    def _sdk(self) -> AsyncCartesia:
        if self._client is None:
            try:
                from cartesia import AsyncCartesia
            except ImportError as exc:  # pragma: no cover - depends on the installed extras
                raise ConfigError(
                    "Cartesia needs the 'cartesia' extra: pip install 'llmrtc[cartesia]'"
                ) from exc
            self._client = AsyncCartesia(
                api_key=self.api_key,
                base_url=self.base_url,
                websocket_base_url=self.ws_base_url,
                timeout=self.timeout_s,
                max_retries=0,
            )
        return self._client

    async def _connected(self, retry: RetryPolicy) -> _Socket:
        async with self._opening:
            if self._socket is not None and self._socket.usable:
                return self._socket
            if self._socket is not None:
                await self._socket.aclose()
                self._socket = None
            self._socket = await call_with_retries(self._open, retry)
            return self._socket

    async def _open(self) -> _Socket:
        manager = self._sdk().tts.websocket_connect(websocket_connection_options={"max_size": None})
        try:
            connection = await asyncio.wait_for(manager.__aenter__(), self.timeout_s)
        except Exception as exc:
            raise map_error(exc, self.timeout_s) from exc
        return _Socket(manager, connection)

    async def aclose(self) -> None:
        if self._socket is not None:
            await self._socket.aclose()
            self._socket = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _request(
        self, context_id: str, transcript: str, more: bool, config: TTSConfig | None
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "context_id": context_id,
            "model_id": (config.model if config else None) or self.model_id,
            "transcript": transcript,
            "voice": {"mode": "id", "id": (config.voice if config else None) or self.voice_id},
            "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": self.sample_rate},
            "continue": more,
            "add_timestamps": self.add_timestamps,
        }
        if self.language:
            request["language"] = self.language
        if config is not None and config.speed is not None:
            request["generation_config"] = {"speed": max(0.6, min(1.5, config.speed))}
        if self.max_buffer_delay_ms is not None:
            request["max_buffer_delay_ms"] = self.max_buffer_delay_ms
        return request

    async def speak_stream(self, text: str, config: TTSConfig | None = None) -> AsyncIterator[TTSChunk]:
        """Synthesize ``text`` in one context; retried (on a fresh socket) until audio has arrived."""
        if not text.strip():
            return

        def attempt() -> AsyncIterator[TTSChunk]:
            return self._speak(one_piece(text), config, NO_RETRY)

        async for chunk in stream_with_retries(attempt, self.retry):
            yield chunk

    async def speak_text_stream(
        self, texts: AsyncIterable[str], config: TTSConfig | None = None
    ) -> AsyncIterator[TTSChunk]:
        """Speak the pieces of one answer as they arrive, continuing one context; audio starts early.

        Only opening the socket is retried: text already consumed cannot be replayed.
        """
        async for chunk in self._speak(texts, config, self.retry):
            yield chunk

    async def _speak(
        self, texts: AsyncIterable[str], config: TTSConfig | None, open_retry: RetryPolicy
    ) -> AsyncIterator[TTSChunk]:
        socket = await self._connected(open_retry)
        context_id, queue = socket.open_context()
        sender = asyncio.create_task(self._send(socket, context_id, texts, config), name="cartesia-send")
        words: list[WordTiming] = []
        done = False
        try:
            while not done:
                try:
                    event = await receive_or_sender_failure(queue.get, sender, self.timeout_s)
                except TimeoutError as exc:
                    raise timeout_error(PROVIDER, self.timeout_s) from exc
                if isinstance(event, ProviderError):
                    raise event
                kind = getattr(event, "type", None)
                if kind == "chunk":
                    pcm = _audio(event)
                    if pcm or words:
                        yield TTSChunk(pcm=pcm, sample_rate=self.sample_rate, words=tuple(words))
                        words = []
                elif kind == "timestamps" and event.word_timestamps is not None:
                    stamps = event.word_timestamps
                    words.extend(
                        WordTiming(text=w, start_s=float(s), end_s=float(e))
                        for w, s, e in zip(stamps.words, stamps.start, stamps.end, strict=False)
                    )
                elif kind == "error":
                    raise _event_error(event)
                done = kind == "done" or bool(getattr(event, "done", False))
            if words:
                yield TTSChunk(pcm=b"", sample_rate=self.sample_rate, words=tuple(words))
        finally:
            failure = await stop_task(sender)
            socket.queues.pop(context_id, None)
            if not done and socket.usable:
                await self._cancel(socket, context_id)
        if failure is not None:
            raise failure

    async def _send(
        self, socket: _Socket, context_id: str, texts: AsyncIterable[str], config: TTSConfig | None
    ) -> None:
        async for text in texts:
            if text:
                await self._send_one(socket, self._request(context_id, text, True, config))
        await self._send_one(socket, self._request(context_id, "", False, config))

    async def _send_one(self, socket: _Socket, request: dict[str, Any]) -> None:
        if socket.failure is not None:
            raise socket.failure
        try:
            await socket.connection.send(request)
        except Exception as exc:
            raise map_error(exc, self.timeout_s) from exc

    async def _cancel(self, socket: _Socket, context_id: str) -> None:
        """Tell the service to stop generating a context nobody listens to any more (barge-in)."""
        try:
            await socket.connection.send({"context_id": context_id, "cancel": True})
        except Exception as exc:
            log.debug("cancelling a context failed: %s", exc, extra={"provider": PROVIDER})


def _audio(event: Any) -> bytes:
    data = getattr(event, "data", None) or ""
    try:
        pcm = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProviderResponseError(f"audio is not base64: {exc}", provider=PROVIDER) from exc
    if len(pcm) % 2:
        raise ProviderResponseError("a pcm_s16le chunk ended inside a sample", provider=PROVIDER)
    return pcm


__all__ = ["CartesiaTTSProvider", "map_error"]
