"""RedisSessionStore against a real redis-server: round trip, TTL, compare-and-set, a Redis that went away."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llmrtc.errors import SessionConflictError, SessionStoreError
from llmrtc.sessions import RedisSessionStore, SessionState, create_session_store
from llmrtc.types import Message, ToolCallRequest, VisionAttachment
from tests.unit.sessions.redis_server import RedisServer, _free_port, start_redis

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def rich_state(session_id: str = "room-42") -> SessionState:
    call = ToolCallRequest(call_id="call_1", name="get_weather", arguments={"city": "Zürich", "days": [1, 2]})
    return SessionState(
        session_id=session_id,
        history=[
            Message.system("Bob joined the room"),
            Message.user(
                "what's this, and the weather?",
                name="Alice",
                attachments=[VisionAttachment.from_bytes(PNG, "image/png", source="camera", timestamp_ms=17)],
            ),
            Message.assistant("Let me check.", tool_calls=[call]),
            Message.tool('{"temp_c": 21}', tool_call_id="call_1", tool_name="get_weather"),
            Message.assistant("It is 21 degrees — and that is a logo.", interrupted=True),
        ],
        playbook={"current_stage_id": "triage", "turn_count": 3, "context": {"intent": "weather"}},
        metadata={"participants": ["Alice", "Bob"], "worker": "w-1"},
    )


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisSessionStore]:
    s = RedisSessionStore(redis_url, ttl_s=1800)
    try:
        yield s
    finally:
        await s.aclose()


async def test_round_trip_with_tool_calls_and_attachments(store: RedisSessionStore) -> None:
    original = rich_state()
    assert await store.load(original.session_id) is None
    await store.save(original)
    assert original.version == 1
    loaded = await store.load(original.session_id)
    assert loaded is not None
    assert loaded.model_dump() == original.model_dump()
    assert loaded.history[1].attachments[0].to_bytes() == PNG
    assert loaded.history[2].tool_calls[0].arguments == {"city": "Zürich", "days": [1, 2]}
    assert loaded.history[4].interrupted is True


async def test_value_is_json_under_the_prefix_with_a_ttl(redis_server: RedisServer, redis_url: str) -> None:
    store = RedisSessionStore(redis_url, ttl_s=1800, prefix="test:sess:")
    try:
        await store.save(rich_state("room-ttl"))
        await store.save(store_state := (await store.load("room-ttl")) or rich_state())
        assert store_state.version == 2
        with redis_server.client() as client:
            raw = client.get("test:sess:room-ttl")
            pttl = client.pttl("test:sess:room-ttl")
        assert raw is not None and raw.startswith(b'{"version":2,')
        assert json.loads(raw)["session_id"] == "room-ttl"
        assert 1_790_000 < pttl <= 1_800_000
        remaining = await store.ttl("room-ttl")
        assert remaining is not None and 1790 < remaining <= 1800
        assert await store.ttl("nope") is None
    finally:
        await store.aclose()


async def test_keys_expire_and_touch_extends(redis_server: RedisServer, redis_url: str) -> None:
    short = RedisSessionStore(redis_url, ttl_s=0.3)
    store = RedisSessionStore(redis_url, ttl_s=60)
    try:
        await short.save(rich_state("short"))
        assert await short.load("short") is not None
        deadline = time.monotonic() + 10
        while await short.load("short") is not None:  # Redis drops it ~0.3 s after the save
            assert time.monotonic() < deadline, "the session never expired"
            await asyncio.sleep(0.05)
        assert await short.touch("short") is False

        await store.save(rich_state("touched"))
        with redis_server.client() as client:
            client.pexpire(store.key("touched"), 5_000)  # as if most of the TTL had passed
            assert await store.touch("touched") is True
            assert client.pttl(store.key("touched")) > 55_000
            assert client.get(store.key("touched")) is not None  # touch keeps the value
    finally:
        await short.aclose()
        await store.aclose()


async def test_a_stale_writer_is_refused_and_the_newer_state_kept(redis_url: str) -> None:
    worker_a = RedisSessionStore(redis_url)
    worker_b = RedisSessionStore(redis_url)
    try:
        await worker_a.save(rich_state("room"))
        a = await worker_a.load("room")
        b = await worker_b.load("room")
        assert a is not None and b is not None and a.version == b.version == 1
        a.history.append(Message.user("newer", name="Alice"))
        await worker_a.save(a)
        b.history.append(Message.user("stale", name="Bob"))
        with pytest.raises(SessionConflictError) as info:
            await worker_b.save(b)
        assert (info.value.expected_version, info.value.stored_version) == (1, 2)
        assert b.version == 1  # unchanged by a refused save
        kept = await worker_b.load("room")
        assert kept is not None and kept.history[-1].content == "newer"
        # the rule's remedy: reload and apply the change again
        kept.history.append(Message.user("stale", name="Bob"))
        await worker_b.save(kept)
        assert kept.version == 3
        # or overwrite deliberately
        await worker_a.save(a, force=True)
        final = await worker_b.load("room")
        assert final is not None and final.version == 4 and final.history[-1].content == "newer"
    finally:
        await worker_a.aclose()
        await worker_b.aclose()


async def test_concurrent_saves_from_the_same_version_let_exactly_one_win(redis_url: str) -> None:
    stores = [RedisSessionStore(redis_url) for _ in range(8)]
    try:
        await stores[0].save(rich_state("race"))
        copies = [await s.load("race") for s in stores]
        for i, c in enumerate(copies):
            assert c is not None
            c.metadata["writer"] = i
        results = await asyncio.gather(
            *(s.save(c) for s, c in zip(stores, copies, strict=True) if c is not None), return_exceptions=True
        )
        winners = [r for r in results if isinstance(r, SessionState)]
        losers = [r for r in results if isinstance(r, SessionConflictError)]
        assert len(winners) == 1 and len(losers) == 7, results
        stored = await stores[0].load("race")
        assert stored is not None and stored.version == 2
        assert stored.metadata["writer"] == winners[0].metadata["writer"]
    finally:
        for s in stores:
            await s.aclose()


async def test_a_corrupt_value_is_a_typed_error_and_a_fresh_save_replaces_it(
    redis_server: RedisServer, store: RedisSessionStore
) -> None:
    with redis_server.client() as client:
        client.set(store.key("bad"), b"not json at all")
        client.set(store.key("other"), rich_state("someone-else").model_dump_json())
    with pytest.raises(SessionStoreError) as info:
        await store.load("bad")
    assert info.value.code == "session_corrupt"
    with pytest.raises(SessionStoreError, match="belongs to"):
        await store.load("other")
    fresh = await store.save(rich_state("bad"))  # an unreadable value counts as version 0
    assert fresh.version == 1
    assert (await store.load("bad")) is not None


async def test_a_redis_that_went_away_raises_session_store_error(tmp_path: Path) -> None:
    server = start_redis(tmp_path)
    store = create_session_store(server.url)
    try:
        await store.save(rich_state("room"))
        server.stop()
        t0 = time.monotonic()
        with pytest.raises(SessionStoreError) as info:
            await store.load("room")
        assert info.value.code == "session_store_unavailable" and "room" in info.value.message
        with pytest.raises(SessionStoreError):
            await store.save(rich_state("room"))
        with pytest.raises(SessionStoreError):
            await store.touch("room")
        with pytest.raises(SessionStoreError):
            await store.delete("room")
        assert time.monotonic() - t0 < 20  # bounded by timeout_s, never a hang
    finally:
        server.stop()
        await store.aclose()
        await store.aclose()  # idempotent


async def test_an_unreachable_redis_at_start_and_a_closed_store(caplog: pytest.LogCaptureFixture) -> None:
    store = RedisSessionStore(f"redis://127.0.0.1:{_free_port()}/0", timeout_s=1)
    with pytest.raises(SessionStoreError) as info:
        await store.load("room-x")
    assert info.value.code == "session_store_unavailable"
    assert any("room-x" in r.getMessage() and r.name == "llmrtc.sessions" for r in caplog.records)
    await store.aclose()
    with pytest.raises(SessionStoreError) as closed:
        await store.load("room-x")
    assert closed.value.code == "session_store_closed"


async def test_delete(store: RedisSessionStore) -> None:
    await store.save(rich_state("gone"))
    assert await store.delete("gone") is True
    assert await store.delete("gone") is False
    assert await store.load("gone") is None
