"""Retries with backoff for provider calls.

Only :class:`ProviderError` with ``retryable=True`` is retried; ``retry_after`` from the vendor (the
``Retry-After`` header) wins over the computed backoff. A stream is retried only while it has yielded
nothing: once a chunk reached the caller, a failure is surfaced, never replayed.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from llmrtc.errors import ProviderError

T = TypeVar("T")
log = logging.getLogger("llmrtc.providers.retry")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry.

    ``max_attempts`` counts the first try: 3 means one call and up to two retries.
    The delay before retry ``n`` (1-based) is ``min(max_delay, base_delay * 2**(n-1))`` with +/- ``jitter``.
    """

    max_attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    jitter: float = 0.2
    max_retry_after: float = 30.0

    def delay_for(self, retry_number: int, error: ProviderError | None = None) -> float:
        if error is not None and error.retry_after is not None:
            return max(0.0, min(float(error.retry_after), self.max_retry_after))
        delay: float = min(self.max_delay, self.base_delay * 2.0 ** (retry_number - 1))
        if self.jitter:
            delay *= 1 + random.uniform(-self.jitter, self.jitter)
        return max(0.0, delay)


NO_RETRY = RetryPolicy(max_attempts=1)


async def call_with_retries(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    on_retry: Callable[[int, ProviderError, float], None] | None = None,
) -> T:
    """Await ``fn()`` until it succeeds, fails with a non-retryable error, or attempts run out."""
    attempt = 1
    while True:
        try:
            return await fn()
        except ProviderError as exc:
            if not exc.retryable or attempt >= policy.max_attempts:
                raise
            delay = policy.delay_for(attempt, exc)
            _log_retry(exc, attempt, delay, on_retry)
            await asyncio.sleep(delay)
            attempt += 1


async def stream_with_retries(
    open_stream: Callable[[], AsyncIterator[T]],
    policy: RetryPolicy,
    *,
    on_retry: Callable[[int, ProviderError, float], None] | None = None,
) -> AsyncIterator[T]:
    """Iterate ``open_stream()``, retrying retryable failures that happen before the first item."""
    attempt = 1
    while True:
        yielded = False
        stream = open_stream()
        try:
            async for item in stream:
                yielded = True
                yield item
            return
        except ProviderError as exc:
            if yielded or not exc.retryable or attempt >= policy.max_attempts:
                raise
            delay = policy.delay_for(attempt, exc)
            _log_retry(exc, attempt, delay, on_retry)
            await asyncio.sleep(delay)
            attempt += 1
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()


def _log_retry(
    exc: ProviderError,
    attempt: int,
    delay: float,
    on_retry: Callable[[int, ProviderError, float], None] | None,
) -> None:
    log.warning(
        "provider call failed, retrying",
        extra={"provider": exc.provider, "code": exc.code, "attempt": attempt, "delay_s": round(delay, 3)},
    )
    if on_retry is not None:
        on_retry(attempt, exc, delay)


__all__ = ["NO_RETRY", "RetryPolicy", "call_with_retries", "stream_with_retries"]
