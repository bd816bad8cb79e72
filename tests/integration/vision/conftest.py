"""A development server per test and official-SDK participants joining it (with attributes)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from livekit import api, rtc

from signalling.devserver.server import DevServer

API_KEY = "devkey"
API_SECRET = "vision-test-secret-of-32-bytes!!!!"
ROOM = "vision"

Joiner = Callable[..., Awaitable[rtc.Room]]


def token(identity: str, *, name: str = "", attributes: dict[str, str] | None = None) -> str:
    grant = api.VideoGrants(room_join=True, room=ROOM, can_update_own_metadata=True)
    access = (
        api.AccessToken(API_KEY, API_SECRET)
        .with_identity(identity)
        .with_name(name or identity)
        .with_ttl(datetime.timedelta(minutes=10))
        .with_grants(grant)
    )
    if attributes:
        access = access.with_attributes(attributes)
    return access.to_jwt()


@pytest.fixture
async def server() -> AsyncIterator[DevServer]:
    srv = DevServer(api_key=API_KEY, api_secret=API_SECRET)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def join(server: DevServer) -> AsyncIterator[Joiner]:
    """``await join("alice", name="Alice", attributes={...})``: an SDK participant; all leave at teardown."""
    rooms: list[rtc.Room] = []

    async def _join(identity: str, *, name: str = "", attributes: dict[str, str] | None = None) -> rtc.Room:
        room = rtc.Room()
        rooms.append(room)
        await asyncio.wait_for(
            room.connect(server.url, token(identity, name=name, attributes=attributes), rtc.RoomOptions()), 30
        )
        return room

    yield _join
    for room in rooms:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(room.disconnect(), 10)
    logging.getLogger(__name__).debug("left %d rooms", len(rooms))


async def wait_for(predicate: Callable[[], bool], within: float = 20.0, what: str = "condition") -> None:
    """Poll ``predicate`` until true (generous: the test machine is shared)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
