"""Helpers the provider tests share: a fast retry policy, a sample tool, stream collection, fake lifetimes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol, TypeVar

import numpy as np
import pytest

from llmrtc.providers.base import LLMProvider
from llmrtc.providers.resilience import RetryPolicy
from llmrtc.types import LLMChunk, LLMRequest, ToolDefinition

FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05)
"""Three attempts with 10 ms backoff: retry tests stay fast."""

WEATHER = ToolDefinition(
    name="get_weather",
    description="Weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


class _Server(Protocol):
    base_url: str

    async def start(self) -> str: ...

    async def close(self) -> None: ...


S = TypeVar("S", bound=_Server)
E = TypeVar("E", bound=BaseException)


@asynccontextmanager
async def serving(server: S) -> AsyncIterator[S]:
    """Start a wire fake on its ephemeral port for the block; shut it down after."""
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def closed_base_url(server: _Server) -> str:
    """The ``base_url`` a fake served at, once it is shut down: connections there are refused."""
    async with serving(server):
        url = server.base_url
    return url


def dominant_hz(pcm: bytes, rate: int) -> float:
    """The strongest frequency in PCM16 mono ``pcm`` at ``rate`` (Hann-windowed FFT peak)."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


async def collect(provider: LLMProvider, request: LLMRequest) -> list[LLMChunk]:
    """Every chunk of ``provider.stream(request)``."""
    return [chunk async for chunk in provider.stream(request)]


async def stream_until_error(
    provider: LLMProvider, request: LLMRequest, error: type[E]
) -> tuple[list[str], pytest.ExceptionInfo[E]]:
    """Stream ``request`` until it fails with ``error`` (the test fails otherwise); returns the text pieces
    received before the failure and the failure."""
    received: list[str] = []
    with pytest.raises(error) as info:
        async for chunk in provider.stream(request):
            received.append(chunk.content)
    return received, info
