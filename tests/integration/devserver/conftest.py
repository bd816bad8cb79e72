"""Fixtures for the development-server compatibility suite: a server per test, SDK clients, tokens."""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from livekit import api, rtc

from signalling.devserver.server import DevServer

API_KEY = "devkey"
API_SECRET = "devserver-test-secret-of-32-bytes!!"
ROOM = "compat"

logging.getLogger("aioice").setLevel(logging.WARNING)
logging.getLogger("aiortc").setLevel(logging.WARNING)


def make_token(
    identity: str,
    *,
    room: str = ROOM,
    secret: str = API_SECRET,
    ttl: datetime.timedelta = datetime.timedelta(minutes=10),
    name: str = "",
    metadata: str = "",
    attributes: dict[str, str] | None = None,
    **grants: Any,
) -> str:
    """A join token for ``identity``; ``grants`` override ``VideoGrants`` fields."""
    video = {"room_join": True, "room": room, "can_update_own_metadata": True, **grants}
    token = (
        api.AccessToken(API_KEY, secret)
        .with_identity(identity)
        .with_name(name or identity)
        .with_metadata(metadata)
        .with_ttl(ttl)
        .with_grants(api.VideoGrants(**video))
    )
    if attributes:
        token = token.with_attributes(attributes)
    return token.to_jwt()


@pytest.fixture
async def server() -> AsyncIterator[DevServer]:
    srv = DevServer(api_key=API_KEY, api_secret=API_SECRET)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture(params=["v1", "v0"])
def mode(request: pytest.FixtureRequest) -> str:
    """``v1``: one peer connection (/rtc/v1, the SDK default); ``v0``: two (/rtc)."""
    return str(request.param)


Joiner = Callable[..., Awaitable[rtc.Room]]


@pytest.fixture
async def join(server: DevServer, mode: str) -> AsyncIterator[Joiner]:
    """``await join("alice", auto_subscribe=True, **grants)`` connects an SDK client; all leave at teardown."""
    rooms: list[rtc.Room] = []

    async def _join(
        identity: str, *, auto_subscribe: bool = True, token: str | None = None, **grants: Any
    ) -> rtc.Room:
        room = rtc.Room()
        options = rtc.RoomOptions(auto_subscribe=auto_subscribe, single_peer_connection=mode == "v1")
        rooms.append(room)
        await asyncio.wait_for(room.connect(server.url, token or make_token(identity, **grants), options), 30)
        sessions = [s for s in server.signal_context.sessions if s.participant.identity == identity]
        assert [s.single_pc for s in sessions] == [mode == "v1"], "the SDK did not use the requested path"
        return room

    yield _join
    for room in rooms:
        try:
            await asyncio.wait_for(room.disconnect(), 10)
        except Exception:
            logging.getLogger(__name__).warning("disconnect failed", exc_info=True)


async def wait_for(predicate: Callable[[], bool], within: float = 15.0, what: str = "condition") -> None:
    """Poll ``predicate`` until true (generous timeout: the test machine is shared and loaded)."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
