"""Fixtures shared by the provider tests: fast retry policies and started fake servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar

import pytest

from llmrtc.providers.resilience import RetryPolicy
from tests.providers.fakes.openai import FakeOpenAI

T = TypeVar("T")


@pytest.fixture
def fast_retry() -> RetryPolicy:
    """Three attempts with 10 ms backoff and no jitter, so retry tests stay fast and deterministic."""
    return RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05, jitter=0.0, max_retry_after=0.2)


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI(api_key="sk-test")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class Closer:
    """Collects providers a test opens and closes them at teardown (so no client outlives its loop)."""

    def __init__(self) -> None:
        self._items: list[Any] = []

    def __call__(self, provider: T) -> T:
        self._items.append(provider)
        return provider

    async def aclose(self) -> None:
        for item in reversed(self._items):
            await item.aclose()


@pytest.fixture
async def closing() -> AsyncIterator[Closer]:
    closer = Closer()
    try:
        yield closer
    finally:
        await closer.aclose()
