"""A model loaded on first use, in a worker thread, once (the in-process STT and TTS engines share this)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class LoadedOnce(Generic[T]):
    """Runs ``load`` in a thread on the first :meth:`get`; concurrent first callers share that one load."""

    def __init__(self, load: Callable[[], T]) -> None:
        self._load = load
        self._value: T | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> T:
        if self._value is not None:
            return self._value
        async with self._lock:
            if self._value is None:
                self._value = await asyncio.to_thread(self._load)
        return self._value

    def drop(self) -> None:
        """Forget the loaded value (the next :meth:`get` loads again)."""
        self._value = None
