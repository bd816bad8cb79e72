"""Retries with backoff for provider calls, and the conversation-sized limits every provider starts from.

Only :class:`ProviderError` with ``retryable=True`` is retried; ``retry_after`` from the vendor (the
``Retry-After`` header, or the body where the vendor puts it there) wins over the computed backoff. A stream
is retried only while it has yielded nothing: once a chunk reached the caller, a failure is surfaced, never
replayed. This is the framework's one retry layer: the orchestrators do not retry provider calls again.

Every network provider takes ``timeout_s`` (per request and per read of a stream, so long streams are fine),
``connect_timeout_s`` and ``max_retries`` (retries after the first try) with the defaults below; the registry
sets them from ``PROVIDER_TIMEOUT_S``, ``PROVIDER_CONNECT_TIMEOUT_S`` and ``PROVIDER_MAX_RETRIES``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from llmrtc.errors import ConfigError, ProviderError

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

DEFAULT_TIMEOUT_S = 15.0
"""Seconds a request may wait for its answer, and a stream for its next piece."""
DEFAULT_CONNECT_TIMEOUT_S = 5.0
"""Seconds to open a connection."""
DEFAULT_MAX_RETRIES = 2
"""Retries after the first try (so three attempts at most)."""


def retry_policy(retry: RetryPolicy | None = None, max_retries: int | None = None) -> RetryPolicy:
    """The policy a provider uses: ``retry`` (or the default backoff) with ``max_retries`` retries when given,
    else :data:`DEFAULT_MAX_RETRIES` unless ``retry`` says otherwise."""
    if max_retries is not None and max_retries < 0:
        raise ConfigError(f"max_retries must be 0 or more, got {max_retries}")
    policy = retry or RetryPolicy(max_attempts=DEFAULT_MAX_RETRIES + 1)
    return policy if max_retries is None else replace(policy, max_attempts=max_retries + 1)


def check_timeouts(timeout_s: float, connect_timeout_s: float) -> None:
    """Raise :class:`ConfigError` unless both limits are positive."""
    if not timeout_s > 0 or not connect_timeout_s > 0:
        raise ConfigError(
            f"timeouts must be positive seconds, got timeout_s={timeout_s}, connect_timeout_s={connect_timeout_s}"
        )


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


async def read_within(
    source: AsyncIterator[T], timeout_s: float, on_timeout: Callable[[], ProviderError]
) -> AsyncIterator[T]:
    """``source``'s items, each of which must come within ``timeout_s`` (else ``on_timeout()`` is raised):
    a per-read limit for clients that only offer a total one."""
    iterator = source.__aiter__()
    try:
        while True:
            try:
                async with asyncio.timeout(timeout_s):
                    item = await iterator.__anext__()
            except StopAsyncIteration:
                return
            except TimeoutError as exc:
                raise on_timeout() from exc
            yield item
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


async def within(awaitable: Awaitable[T], timeout_s: float, on_timeout: Callable[[], ProviderError]) -> T:
    """``await awaitable``, raising ``on_timeout()`` if it takes longer than ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            return await awaitable
    except TimeoutError as exc:
        raise on_timeout() from exc


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


__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT_S",
    "NO_RETRY",
    "RetryPolicy",
    "call_with_retries",
    "check_timeouts",
    "read_within",
    "retry_policy",
    "stream_with_retries",
    "within",
]
