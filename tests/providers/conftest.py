"""Fixtures shared by the provider tests: fast retry policies and started fake servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar

import pytest

from llmrtc.providers.resilience import RetryPolicy
from tests.providers.fakes.ollama import FakeOllama
from tests.providers.fakes.openai import FakeOpenAI
from tests.providers.fakes.piper import FakePiper
from tests.providers.helpers import serving

T = TypeVar("T")


@pytest.fixture
def fast_retry() -> RetryPolicy:
    """Three attempts with 10 ms backoff and no jitter, so retry tests stay fast and deterministic."""
    return RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05, jitter=0.0, max_retry_after=0.2)


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    async with serving(FakeOpenAI(api_key="sk-test")) as server:
        yield server


@pytest.fixture
async def fake_ollama() -> AsyncIterator[FakeOllama]:
    async with serving(FakeOllama()) as server:
        yield server


@pytest.fixture
async def fake_piper() -> AsyncIterator[FakePiper]:
    async with serving(FakePiper()) as server:
        yield server


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
