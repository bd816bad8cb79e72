"""Rate-limited warnings: what a client can trigger at will must not fill the server's log."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Window:
    started: float
    count: int = 0
    suppressed: int = 0


class RateLimitedLog:
    """Logs at most ``burst`` lines per key in each ``window_s``; the rest are counted, and the count is
    reported (one line) with the first message of a later window."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 3,
        window_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 64,
    ) -> None:
        self._logger = logger
        self.burst = burst
        self.window_s = window_s
        self._clock = clock
        self._max_keys = max_keys
        self._windows: dict[str, _Window] = {}

    def log(self, level: int, key: str, msg: str, *args: object, exc_info: bool = False) -> bool:
        """Log ``msg % args`` at ``level`` unless ``key`` is over its budget; returns whether it was logged."""
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now - window.started >= self.window_s:
            suppressed = window.suppressed if window is not None else 0
            if window is None and len(self._windows) >= self._max_keys:
                self._windows.pop(next(iter(self._windows)))
            window = self._windows[key] = _Window(started=now)
            if suppressed:
                self._logger.log(level, "%d more %r warnings were suppressed", suppressed, key)
        window.count += 1
        if window.count > self.burst:
            window.suppressed += 1
            return False
        self._logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def warning(self, key: str, msg: str, *args: object) -> bool:
        """:meth:`log` at WARNING, one line (no traceback)."""
        return self.log(logging.WARNING, key, msg, *args)
