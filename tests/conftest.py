"""Shared test configuration."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``live`` talk to real vendors: run them only when LLMRTC_LIVE_TESTS=1."""
    if os.environ.get("LLMRTC_LIVE_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="live vendor test: set LLMRTC_LIVE_TESTS=1 and the vendor's key")
    for item in items:
        if "live" in item.keywords:
            item.add_marker(skip)
