"""Shared test configuration."""

from __future__ import annotations

import os

import pytest

# Every worker a test starts inherits this: a test machine is busy with the test itself (servers, humans,
# several workers), which is not the worker's load; tests about the load set their own
# (tests/unit/worker/test_load.py covers the machine's share).
os.environ.setdefault("WORKER_LOAD_MACHINE", "false")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``live`` talk to real vendors: run them only when LLMRTC_LIVE_TESTS=1."""
    if os.environ.get("LLMRTC_LIVE_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="live vendor test: set LLMRTC_LIVE_TESTS=1 and the vendor's key")
    for item in items:
        if "live" in item.keywords:
            item.add_marker(skip)


def require(condition: object, reason: str) -> None:
    """Skip when a system tool the test needs is missing on a developer's machine; fail in CI.

    CI (``CI=true``) installs every tool the suite needs, so a missing one there is a broken install, not a
    reason to pass silently.
    """
    if condition:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must provide this: {reason}", pytrace=False)
    pytest.skip(reason)
