"""Small HTTP helpers shared by the providers that talk plain HTTP through aiohttp (Ollama, Piper, Whisper).

Owns nothing global: each provider holds its own :class:`SessionHolder`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from llmrtc.errors import ProviderError, ProviderResponseError
from llmrtc.providers._errors import connection_error, error_from_status, timeout_error
from llmrtc.providers._validate import check_content_type, wrong_answer

log = logging.getLogger("llmrtc.providers.http")


def join_url(base: str, path: str) -> str:
    """``base`` and ``path`` joined with exactly one slash."""
    return base.rstrip("/") + "/" + path.lstrip("/")


class SessionHolder:
    """A lazily created :class:`aiohttp.ClientSession` owned by one provider."""

    def __init__(
        self,
        timeout_s: float | None,
        headers: dict[str, str] | None = None,
        *,
        connect_timeout_s: float | None = None,
    ) -> None:
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s if connect_timeout_s is not None else timeout_s
        self._headers = dict(headers or {})
        self._session: aiohttp.ClientSession | None = None

    @property
    def timeout_s(self) -> float | None:
        return self._timeout_s

    def get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=self._connect_timeout_s, sock_read=self._timeout_s
            )
            self._session = aiohttp.ClientSession(timeout=timeout, headers=self._headers)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


def _message_from_body(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data.get("message")))
        if isinstance(err, dict):
            return str(err.get("message") or err)
        if err is not None:
            return str(err)
    return text


async def raise_for_status(provider: str, response: aiohttp.ClientResponse) -> None:
    """Raise the mapped :class:`ProviderError` when ``response`` is not a 2xx."""
    if response.status < 400:
        return
    try:
        body = await response.read()
    except (aiohttp.ClientError, TimeoutError):
        body = b""
    raise error_from_status(
        provider, response.status, _message_from_body(body), response.headers.get("Retry-After")
    )


def map_transport_error(provider: str, exc: BaseException, timeout_s: float | None = None) -> ProviderError:
    """The :class:`ProviderError` for an aiohttp / socket failure (timeouts and dropped connections)."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, (TimeoutError, aiohttp.ServerTimeoutError)):
        return timeout_error(provider, timeout_s)
    if isinstance(exc, aiohttp.ContentTypeError):
        return ProviderResponseError(f"unexpected response: {exc}", provider=provider)
    return connection_error(provider, exc)


#: Exceptions that mean the transport failed (map them with :func:`map_transport_error`).
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError, OSError)


async def ndjson_objects(provider: str, response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """Parse a newline-delimited JSON body as it arrives; the body must be declared as (ND)JSON (or not at all)
    and every line must be a JSON object."""
    check_content_type(provider, response.headers.get("Content-Type"), "ndjson")
    buffer = b""
    async for piece in response.content.iter_any():
        buffer += piece
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            obj = _parse_ndjson_line(provider, line)
            if obj is not None:
                yield obj
    obj = _parse_ndjson_line(provider, buffer)
    if obj is not None:
        yield obj


def _parse_ndjson_line(provider: str, line: bytes) -> dict[str, Any] | None:
    line = line.strip()
    if not line:
        return None
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise wrong_answer(provider, "newline-delimited JSON", detail=repr(line[:200])) from exc
    if not isinstance(obj, dict):
        raise wrong_answer(provider, "newline-delimited JSON objects", detail=repr(line[:200]))
    return obj


__all__ = [
    "TRANSPORT_ERRORS",
    "SessionHolder",
    "join_url",
    "map_transport_error",
    "ndjson_objects",
    "raise_for_status",
]
