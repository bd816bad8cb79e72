"""InMemorySessionStore: round trip, versions (compare-and-set), TTL with an injected clock, the factory."""

from __future__ import annotations

import pytest

from llmrtc.errors import ConfigError, SessionConflictError, SessionStoreError
from llmrtc.sessions import (
    InMemorySessionStore,
    RedisSessionStore,
    SessionState,
    SessionStore,
    create_session_store,
)
from llmrtc.types import Message


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def state(session_id: str = "room-1", *texts: str) -> SessionState:
    return SessionState(session_id=session_id, history=[Message.user(t, name="Alice") for t in texts])


async def test_round_trip_returns_an_independent_copy() -> None:
    store = InMemorySessionStore()
    assert isinstance(store, SessionStore)
    assert await store.load("room-1") is None
    saved = await store.save(state("room-1", "hello"))
    assert saved.version == 1
    loaded = await store.load("room-1")
    assert loaded is not None and loaded is not saved
    assert loaded.history == [Message.user("hello", name="Alice")] and loaded.version == 1
    loaded.history.append(Message.assistant("hi"))
    again = await store.load("room-1")
    assert again is not None and len(again.history) == 1


async def test_save_updates_version_and_timestamp_in_place() -> None:
    store = InMemorySessionStore()
    s = state("r", "a")
    s.updated_at = 0.0
    assert (await store.save(s)) is s
    assert s.version == 1 and s.updated_at > 0
    s.history.append(Message.assistant("b"))
    await store.save(s)
    assert s.version == 2
    loaded = await store.load("r")
    assert loaded is not None and loaded.version == 2 and len(loaded.history) == 2


async def test_a_stale_writer_gets_a_conflict_and_the_newer_state_survives() -> None:
    store = InMemorySessionStore()
    await store.save(state("r", "one"))
    a = await store.load("r")
    b = await store.load("r")
    assert a is not None and b is not None
    a.history.append(Message.assistant("from a"))
    await store.save(a)
    b.history.append(Message.assistant("from b"))
    with pytest.raises(SessionConflictError) as info:
        await store.save(b)
    assert (info.value.expected_version, info.value.stored_version) == (1, 2)
    assert info.value.code == "session_conflict" and isinstance(info.value, SessionStoreError)
    kept = await store.load("r")
    assert kept is not None and kept.history[-1].content == "from a"
    # forced overwrite is deliberate, and gets a version above the stored one
    await store.save(b, force=True)
    assert b.version == 3
    kept = await store.load("r")
    assert kept is not None and kept.history[-1].content == "from b"


async def test_a_new_state_conflicts_with_an_existing_session() -> None:
    store = InMemorySessionStore()
    await store.save(state("r", "first worker"))
    with pytest.raises(SessionConflictError):
        await store.save(state("r", "second worker that did not load"))


async def test_ttl_expiry_and_touch() -> None:
    clock = Clock()
    store = InMemorySessionStore(ttl_s=10, clock=clock)
    await store.save(state("r", "x"))
    clock.now += 9.9
    assert await store.load("r") is not None
    assert await store.touch("r") is True  # expires at +19.9 now
    clock.now += 9.9
    assert await store.load("r") is not None
    clock.now += 0.1
    assert await store.load("r") is None
    assert await store.touch("r") is False
    assert len(store) == 0


async def test_saving_after_expiry_writes_without_conflict() -> None:
    clock = Clock()
    store = InMemorySessionStore(ttl_s=5, clock=clock)
    s = await store.save(state("r", "x"))
    other = await store.load("r")
    assert other is not None
    await store.save(other)  # stored version 2 now; s is stale at 1
    clock.now += 5
    await store.save(s)  # the newer state expired: nothing left to lose
    assert s.version == 2


async def test_expired_entries_are_swept_on_save() -> None:
    clock = Clock()
    store = InMemorySessionStore(ttl_s=1, clock=clock)
    for i in range(5):
        await store.save(state(f"r{i}", "x"))
    clock.now += 2
    await store.save(state("fresh", "y"))
    assert len(store._items) == 1


async def test_delete() -> None:
    store = InMemorySessionStore()
    await store.save(state("r", "x"))
    assert await store.delete("r") is True
    assert await store.delete("r") is False
    assert await store.load("r") is None
    await store.save(state("r", "fresh start after delete"))


async def test_bad_arguments_are_typed_errors() -> None:
    with pytest.raises(ConfigError):
        InMemorySessionStore(ttl_s=0)
    with pytest.raises(SessionStoreError) as info:
        await InMemorySessionStore().load("")
    assert info.value.code == "session_invalid_id"
    with pytest.raises(ValueError):
        SessionState(session_id="")


def test_factory() -> None:
    for spec in (None, "", "memory", " MEMORY ", "memory://"):
        assert isinstance(create_session_store(spec), InMemorySessionStore)
    store = create_session_store("redis://127.0.0.1:1/0", ttl_s=60, prefix="t:")
    assert isinstance(store, RedisSessionStore) and store.ttl_s == 60 and store.key("a") == "t:a"
    assert isinstance(create_session_store("rediss://example:6380"), RedisSessionStore)
    with pytest.raises(ConfigError, match="SESSION_STORE_URL"):
        create_session_store("postgres://db/x")
    with pytest.raises(ConfigError):
        create_session_store("localhost:6379")
    with pytest.raises(ConfigError, match="invalid Redis URL"):
        create_session_store("redis://localhost:notaport/0")
