"""A real ``redis-server`` per test module (see :mod:`tests.unit.sessions.redis_server`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.sessions.redis_server import RedisServer, start_redis


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared server's URL, emptied before the test."""
    with redis_server.client() as client:
        client.flushall()
    return redis_server.url
