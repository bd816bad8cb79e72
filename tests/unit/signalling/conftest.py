"""Fixtures for the token service tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from signalling.service import TokenServiceSettings, create_app

API_KEY = "test-key-1"
SECRET = "a-test-secret-that-is-long-enough-32"


def make_settings(**overrides: Any) -> TokenServiceSettings:
    values: dict[str, Any] = {
        "LIVEKIT_URL": "ws://livekit.test:7880",
        "LIVEKIT_API_KEY": "devkey",
        "LIVEKIT_API_SECRET": SECRET,
        "TOKEN_SERVICE_API_KEYS": f"{API_KEY},second-key",
        "WEB_STATIC_DIR": None,
    }
    values.update(overrides)
    return TokenServiceSettings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def client_factory() -> Callable[..., TestClient]:
    def factory(**overrides: Any) -> TestClient:
        return TestClient(create_app(make_settings(**overrides)))

    return factory


@pytest.fixture
def client(client_factory: Callable[..., TestClient]) -> TestClient:
    return client_factory()
