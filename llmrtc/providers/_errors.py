"""Shared mapping from a vendor's HTTP status (and transport failures) to :mod:`llmrtc.errors`.

Every provider module, whatever its SDK, ends up with an HTTP status, a message and maybe a ``Retry-After``
header; :func:`error_from_status` turns those into the one right error class with ``retryable`` set right.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from llmrtc.errors import (
    AuthenticationError,
    InvalidRequestError,
    ProviderConnectionError,
    ProviderError,
    ProviderServerError,
    ProviderTimeoutError,
    RateLimitError,
)

log = logging.getLogger("llmrtc.providers")

#: Statuses worth retrying besides 429 and 5xx: request timeout and conflict/lock contention.
_RETRYABLE_4XX = {408, 409, 425}


def parse_retry_after(value: str | float | int | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` (or ``retry-after-ms``) header value.

    Accepts delta-seconds (``"2"``, ``"1.5"``) and HTTP dates; returns ``None`` when absent or unparseable.
    """
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return max(0.0, float(value))
    text = value.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def error_from_status(
    provider: str,
    status: int,
    message: str,
    retry_after_header: str | float | int | None = None,
) -> ProviderError:
    """The :class:`ProviderError` subclass for an HTTP ``status`` answered by ``provider``.

    401/403 -> :class:`AuthenticationError` (never retried); 429 -> :class:`RateLimitError` with
    ``retry_after`` from the header; 408 -> :class:`ProviderTimeoutError`; other 4xx ->
    :class:`InvalidRequestError`; 5xx -> :class:`ProviderServerError` (retried, honouring ``Retry-After``).
    """
    msg = (message or "").strip() or f"HTTP {status}"
    if len(msg) > 500:
        msg = msg[:500] + "..."
    retry_after = parse_retry_after(retry_after_header)
    err: ProviderError
    if status in (401, 403):
        err = AuthenticationError(
            f"authentication failed: {msg}", provider=provider, status_code=status, retryable=False
        )
    elif status == 429:
        err = RateLimitError(
            f"rate limited: {msg}", provider=provider, status_code=status, retry_after=retry_after
        )
    elif status == 408:
        err = ProviderTimeoutError(f"request timed out: {msg}", provider=provider, status_code=status)
    elif status >= 500:
        err = ProviderServerError(
            f"server error: {msg}", provider=provider, status_code=status, retry_after=retry_after
        )
    elif status in _RETRYABLE_4XX:
        err = ProviderServerError(
            msg, provider=provider, status_code=status, retryable=True, retry_after=retry_after
        )
    elif 400 <= status < 500:
        err = InvalidRequestError(f"invalid request: {msg}", provider=provider, status_code=status)
    else:
        err = ProviderError(f"unexpected HTTP status: {msg}", provider=provider, status_code=status)
    log.warning(
        "provider error",
        extra={"provider": provider, "status": status, "code": err.code, "retryable": err.retryable},
    )
    return err


#: In-band error ``type``/``code`` words (OpenAI, OpenRouter, Anthropic, Gemini statuses) and the HTTP
#: status each stands for. First match wins, so the specific words come before the general ones.
_ERROR_WORD_STATUS: tuple[tuple[str, int], ...] = (
    ("insufficient_quota", 402),
    ("billing", 402),
    ("context_length", 400),
    ("rate_limit", 429),
    ("resource_exhausted", 429),
    ("too_many", 429),
    ("overloaded", 529),
    ("unavailable", 503),
    ("timeout", 504),
    ("deadline", 504),
    ("server_error", 500),
    ("api_error", 500),
    ("internal", 500),
    ("authentication", 401),
    ("invalid_api_key", 401),
    ("unauthenticated", 401),
    ("permission", 403),
    ("not_found", 404),
    ("invalid", 400),
    ("request_too_large", 413),
)


def status_for_error_payload(error: object) -> int:
    """The HTTP status an in-band error object (``{"message", "type", "code", "status"}``) stands for.

    A numeric ``code``/``status`` (OpenRouter sends the upstream status) wins; then the words of ``type``,
    ``code`` and ``status``; an error that says nothing about itself counts as a server error (500).
    """
    if isinstance(error, dict):
        for key in ("code", "status", "status_code"):
            value = error.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599:
                return value
            if isinstance(value, str) and value.isdigit() and 400 <= int(value) <= 599:
                return int(value)
        words = " ".join(str(error.get(key) or "") for key in ("type", "code", "status")).lower()
        for word, status in _ERROR_WORD_STATUS:
            if word in words:
                return status
    return 500


def error_from_payload(provider: str, error: object, retry_after: str | float | None = None) -> ProviderError:
    """The typed :class:`ProviderError` for an error object a vendor sent in a successful answer (an
    ``{"error": {...}}`` event inside a 200 stream, or a 200 JSON body that is an error)."""
    if isinstance(error, dict):
        message = str(error.get("message") or error.get("type") or error.get("code") or "error")
        retry_after = retry_after if retry_after is not None else error.get("retry_after")
    else:
        message = str(error or "error")
    status = status_for_error_payload(error)
    return error_from_status(provider, status, f"error in the answer: {message}", retry_after)


def connection_error(provider: str, exc: BaseException | str) -> ProviderConnectionError:
    """A retryable :class:`ProviderConnectionError` for a failed or dropped connection."""
    detail = exc if isinstance(exc, str) else (str(exc) or type(exc).__name__)
    log.warning("provider connection failed", extra={"provider": provider, "detail": detail})
    return ProviderConnectionError(f"connection failed: {detail}", provider=provider)


def truncated_stream(provider: str, end: str) -> ProviderConnectionError:
    """A retryable :class:`ProviderConnectionError` for a stream that stopped before ``end`` (the vendor's
    end-of-answer marker) arrived."""
    log.warning("stream ended before %s", end, extra={"provider": provider})
    return ProviderConnectionError(f"the stream ended before {end}", provider=provider)


def timeout_error(provider: str, timeout_s: float | None = None) -> ProviderTimeoutError:
    """A retryable :class:`ProviderTimeoutError`."""
    after = f" after {timeout_s:g}s" if timeout_s else ""
    log.warning("provider timed out", extra={"provider": provider, "timeout_s": timeout_s})
    return ProviderTimeoutError(f"request timed out{after}", provider=provider)


@contextmanager
def mapped_errors(map_error: Callable[[BaseException], ProviderError]) -> Iterator[None]:
    """Re-raise any failure in the block as the vendor's ``map_error`` maps it; a :class:`ProviderError`
    (already mapped, or raised on purpose) passes unchanged."""
    try:
        yield
    except ProviderError:
        raise
    except Exception as exc:
        raise map_error(exc) from exc


__all__ = [
    "connection_error",
    "error_from_payload",
    "error_from_status",
    "mapped_errors",
    "parse_retry_after",
    "status_for_error_payload",
    "timeout_error",
    "truncated_stream",
]
