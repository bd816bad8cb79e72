"""Conversation session persistence: a room's conversation outlives the worker that ran it.

LiveKit re-dispatches a room whose worker died to another worker; with several workers that one must pick
up the history. A :class:`SessionStore` keeps one :class:`SessionState` per session (the room name) for
``ttl_s`` seconds after its last save or touch (default 30 minutes).

- :class:`InMemorySessionStore`: one process (the default; a restarted worker starts fresh).
- :class:`RedisSessionStore`: shared by every worker (``SESSION_STORE_URL=redis://host:6379/0``).
- :func:`create_session_store` picks one from a URL.

**Concurrency rule (optimistic, compare-and-set).** Every stored state has a ``version``, assigned by the
store. :meth:`SessionStore.save` writes only when the stored version still equals ``state.version`` (the
version the caller loaded; ``0`` for a new session) or when nothing is stored; it then stores
``version + 1`` and updates ``state.version`` and ``state.updated_at`` in place. When another writer saved
in between, nothing is written and :class:`~llmrtc.errors.SessionConflictError` says which version is
stored: the caller reloads (or saves with ``force=True`` to overwrite on purpose). A save therefore never
loses a newer state silently.

Failures of the store (Redis down, timeouts, a stored value that is not a session) raise
:class:`~llmrtc.errors.SessionStoreError` after a log line; callers treat them as "start fresh".
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmrtc.errors import ConfigError, SessionConflictError, SessionStoreError
from llmrtc.types import Message

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from llmrtc.playbooks.state import PlaybookState

log = logging.getLogger("llmrtc.sessions")

DEFAULT_TTL_S = 1800.0
DEFAULT_PREFIX = "llmrtc:session:"


class SessionState(BaseModel):
    """The persisted state of one conversation (one room).

    ``history`` is the orchestrator's history (without the system prompt); ``playbook`` is the playbook
    engine's state (see :func:`playbook_snapshot`), opaque to the store; ``metadata`` is free JSON for the
    worker. ``version`` and ``updated_at`` (Unix seconds) are set by the store on each save.
    """

    model_config = ConfigDict(extra="forbid")

    version: int = Field(default=0, ge=0)
    """Store-assigned; keep the field first: the Redis store reads it from the start of the JSON value."""
    session_id: str = Field(min_length=1)
    history: list[Message] = Field(default_factory=list)
    playbook: dict[str, Any] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    updated_at: float = Field(default_factory=time.time)


@runtime_checkable
class SessionStore(Protocol):
    """Where session states live between workers. Every method raises :class:`SessionStoreError` on failure."""

    async def load(self, session_id: str) -> SessionState | None:
        """The stored state, or ``None`` when there is none (never saved, deleted or expired)."""
        ...

    async def save(self, state: SessionState, *, force: bool = False) -> SessionState:
        """Store ``state`` (compare-and-set on ``state.version``, see the module docs); returns ``state``."""
        ...

    async def delete(self, session_id: str) -> bool:
        """Forget a session; returns whether one was stored."""
        ...

    async def touch(self, session_id: str) -> bool:
        """Restart a session's expiry without changing it; returns whether one was stored."""
        ...

    async def aclose(self) -> None:
        """Release connections. Idempotent."""
        ...


def _check_ttl(ttl_s: float) -> float:
    if not ttl_s > 0:
        raise ConfigError(f"session ttl_s must be positive, got {ttl_s!r}")
    return float(ttl_s)


def _check_id(session_id: str) -> str:
    if not isinstance(session_id, str) or not session_id:
        raise SessionStoreError("session_id must be a non-empty string", code="session_invalid_id")
    return session_id


def _body(state: SessionState) -> str:
    """The state as JSON without its version (the store writes the version)."""
    return state.model_dump_json(exclude={"version"})


def _with_version(body: str, version: int) -> str:
    return '{"version":' + str(version) + "," + body[1:]


def _parse(session_id: str, raw: str | bytes, backend: str) -> SessionState:
    try:
        state = SessionState.model_validate_json(raw)
    except ValidationError as exc:
        reason = exc.errors()[0].get("msg", "invalid") if exc.errors() else "invalid"
        log.warning("stored session is unreadable (session=%s, store=%s): %s", session_id, backend, reason)
        raise SessionStoreError(
            f"the stored state of session {session_id!r} is not a valid session: {reason}",
            code="session_corrupt",
        ) from exc
    if state.session_id != session_id:
        log.warning("stored session has another id (session=%s, store=%s)", session_id, backend)
        raise SessionStoreError(
            f"the state stored for session {session_id!r} belongs to {state.session_id!r}",
            code="session_corrupt",
        )
    return state


def _conflict(session_id: str, expected: int, stored: int, backend: str) -> SessionConflictError:
    log.warning(
        "session save refused: another writer saved first (session=%s, store=%s, based_on=%d, stored=%d)",
        session_id,
        backend,
        expected,
        stored,
    )
    return SessionConflictError(
        f"session {session_id!r} was saved by another writer (stored version {stored}, this state is based "
        f"on version {expected}); reload it or save with force=True",
        session_id=session_id,
        expected_version=expected,
        stored_version=stored,
    )


# ---------------------------------------------------------------------------------------------- memory


class InMemorySessionStore:
    """Sessions in this process's memory, each kept ``ttl_s`` seconds after its last save or touch.

    ``clock`` (monotonic seconds) is injectable for tests. States are stored as JSON, so a loaded state
    never shares objects with the saved one (as with Redis).
    """

    backend = "memory"

    def __init__(self, ttl_s: float = DEFAULT_TTL_S, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = _check_ttl(ttl_s)
        self._clock = clock
        self._items: dict[str, tuple[int, str, float]] = {}  # id -> (version, body, expires_at)

    def __len__(self) -> int:
        self._sweep()
        return len(self._items)

    def _sweep(self) -> None:
        now = self._clock()
        for key in [k for k, (_, _, exp) in self._items.items() if exp <= now]:
            del self._items[key]

    def _live(self, session_id: str) -> tuple[int, str, float] | None:
        item = self._items.get(session_id)
        if item is not None and item[2] <= self._clock():
            del self._items[session_id]
            return None
        return item

    async def load(self, session_id: str) -> SessionState | None:
        item = self._live(_check_id(session_id))
        if item is None:
            return None
        return _parse(session_id, _with_version(item[1], item[0]), self.backend)

    async def save(self, state: SessionState, *, force: bool = False) -> SessionState:
        session_id = _check_id(state.session_id)
        self._sweep()
        item = self._items.get(session_id)
        stored = item[0] if item is not None else 0
        if item is not None and not force and stored != state.version:
            raise _conflict(session_id, state.version, stored, self.backend)
        version = max(stored, state.version) + 1
        state.updated_at = time.time()
        self._items[session_id] = (version, _body(state), self._clock() + self.ttl_s)
        state.version = version
        return state

    async def delete(self, session_id: str) -> bool:
        existed = self._live(_check_id(session_id)) is not None
        self._items.pop(session_id, None)
        return existed

    async def touch(self, session_id: str) -> bool:
        item = self._live(_check_id(session_id))
        if item is None:
            return False
        self._items[session_id] = (item[0], item[1], self._clock() + self.ttl_s)
        return True

    async def aclose(self) -> None:
        self._items.clear()


# ---------------------------------------------------------------------------------------------- redis

# KEYS[1]: the session key. ARGV: expected version, state JSON without version, ttl (ms), force ("1"/"0").
# The stored value starts with {"version":N,...}; a value that does not counts as version 0.
# Returns {1, new_version} when written, {0, stored_version} on conflict.
_SAVE_SCRIPT = """
local cur = redis.call('GET', KEYS[1])
local stored = 0
if cur then
  local v = string.match(cur, '^{"version":(%d+),')
  if v then stored = tonumber(v) end
end
local expected = tonumber(ARGV[1])
if cur and ARGV[4] ~= '1' and stored ~= expected then
  return {0, stored}
end
local version = math.max(stored, expected) + 1
redis.call('SET', KEYS[1], '{"version":' .. version .. ',' .. string.sub(ARGV[2], 2), 'PX', ARGV[3])
return {1, version}
"""


class RedisSessionStore:
    """Sessions in Redis (``redis.asyncio``), shared by every worker.

    Each session is one key, ``prefix + session_id``, holding the state as JSON with a ``PX`` expiry of
    ``ttl_s``. Saves are atomic compare-and-set in a Lua script (see the module docs). ``timeout_s``
    bounds every command (connecting included) so a dead Redis costs the worker seconds, not a hang;
    a failed command is retried once, without backoff. ``client`` replaces the connection built from
    ``url`` with a ready ``redis.asyncio.Redis`` (closed by :meth:`aclose`).
    """

    backend = "redis"

    def __init__(
        self,
        url: str,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        prefix: str = DEFAULT_PREFIX,
        timeout_s: float = 2.0,
        client: Redis | None = None,
    ) -> None:
        self.ttl_s = _check_ttl(ttl_s)
        if timeout_s <= 0:
            raise ConfigError(f"session store timeout_s must be positive, got {timeout_s!r}")
        self.prefix = prefix
        self._closed = False
        if client is not None:
            self._redis = client
        else:
            try:
                from redis.asyncio import Redis
                from redis.backoff import NoBackoff
                from redis.retry import Retry
            except ImportError as exc:  # pragma: no cover - redis is in the "redis" extra
                raise ConfigError(
                    "RedisSessionStore needs the redis package: pip install 'llmrtc[redis]'"
                ) from exc
            try:
                self._redis = Redis.from_url(
                    url,
                    socket_timeout=timeout_s,
                    socket_connect_timeout=timeout_s,
                    retry=Retry(NoBackoff(), 1),
                    decode_responses=False,
                )
            except ValueError as exc:
                raise ConfigError(f"invalid Redis URL for the session store: {exc}") from exc
        self._save = self._redis.register_script(_SAVE_SCRIPT)

    def key(self, session_id: str) -> str:
        """The Redis key of a session."""
        return self.prefix + session_id

    def _failed(self, op: str, session_id: str, exc: Exception) -> SessionStoreError:
        log.warning(
            "session store %s failed (session=%s, store=redis): %s: %s",
            op,
            session_id,
            type(exc).__name__,
            exc,
        )
        return SessionStoreError(
            f"session store {op} failed for session {session_id!r}: {type(exc).__name__}: {exc}",
            code="session_store_unavailable",
        )

    def _check_open(self) -> None:
        if self._closed:
            raise SessionStoreError("the session store is closed", code="session_store_closed")

    async def load(self, session_id: str) -> SessionState | None:
        self._check_open()
        key = self.key(_check_id(session_id))
        try:
            raw = await self._redis.get(key)
        except Exception as exc:
            raise self._failed("load", session_id, exc) from exc
        if raw is None:
            return None
        return _parse(session_id, raw, self.backend)

    async def save(self, state: SessionState, *, force: bool = False) -> SessionState:
        self._check_open()
        session_id = _check_id(state.session_id)
        previous = state.updated_at
        state.updated_at = time.time()
        ttl_ms = max(1, round(self.ttl_s * 1000))
        args: list[str | int] = [state.version, _body(state), ttl_ms, "1" if force else "0"]
        try:
            written, version = await self._save(keys=[self.key(session_id)], args=args)
        except Exception as exc:
            state.updated_at = previous
            raise self._failed("save", session_id, exc) from exc
        if not written:
            state.updated_at = previous
            raise _conflict(session_id, state.version, int(version), self.backend)
        state.version = int(version)
        return state

    async def delete(self, session_id: str) -> bool:
        self._check_open()
        try:
            removed = await self._redis.delete(self.key(_check_id(session_id)))
        except Exception as exc:
            raise self._failed("delete", session_id, exc) from exc
        return bool(removed)

    async def touch(self, session_id: str) -> bool:
        self._check_open()
        try:
            found = await self._redis.pexpire(
                self.key(_check_id(session_id)), max(1, round(self.ttl_s * 1000))
            )
        except Exception as exc:
            raise self._failed("touch", session_id, exc) from exc
        return bool(found)

    async def ttl(self, session_id: str) -> float | None:
        """Seconds until a session expires (``None`` when it is not stored)."""
        self._check_open()
        try:
            ms = await self._redis.pttl(self.key(_check_id(session_id)))
        except Exception as exc:
            raise self._failed("ttl", session_id, exc) from exc
        return None if ms is None or ms < 0 else ms / 1000.0

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._redis.aclose()
        except Exception as exc:  # closing a broken connection must not fail the room's shutdown
            log.debug("closing the Redis session store: %s", exc)


# ---------------------------------------------------------------------------------------------- factory


def create_session_store(
    url: str | None, *, ttl_s: float = DEFAULT_TTL_S, prefix: str = DEFAULT_PREFIX
) -> SessionStore:
    """A store for ``url``: ``None``, ``""`` or ``"memory"`` -> in-memory; ``redis://``, ``rediss://`` or
    ``unix://`` -> Redis. Anything else is a :class:`~llmrtc.errors.ConfigError`."""
    spec = (url or "").strip()
    if spec.lower() in ("", "memory", "memory://"):
        return InMemorySessionStore(ttl_s)
    scheme = spec.split("://", 1)[0].lower() if "://" in spec else ""
    if scheme in ("redis", "rediss", "unix"):
        return RedisSessionStore(spec, ttl_s=ttl_s, prefix=prefix)
    raise ConfigError(
        "SESSION_STORE_URL must be 'memory' or a Redis URL such as redis://localhost:6379/0 "
        f"(got a value with scheme {scheme or 'none'!r})"
    )


# ---------------------------------------------------------------------------------------------- playbooks


def playbook_snapshot(state: PlaybookState, *, now: float | None = None) -> dict[str, Any]:
    """A JSON-safe copy of a playbook engine's state for :attr:`SessionState.playbook`.

    The engine's times are monotonic seconds, meaningless in another process, so they are stored as ages
    (seconds before ``now``, default ``time.monotonic()``, the engine's default clock).
    """
    ref = time.monotonic() if now is None else now
    data = dataclasses.asdict(state)
    data["stage_entered_at"] = ref - state.stage_entered_at
    for visit in data["stage_history"]:
        visit["entered_at"] = ref - visit["entered_at"]
        if visit["exited_at"] is not None:
            visit["exited_at"] = ref - visit["exited_at"]
    data["times"] = "age_s"
    try:
        return dict(json.loads(json.dumps(data)))
    except (TypeError, ValueError) as exc:
        raise SessionStoreError(
            f"the playbook state is not JSON-safe (context or session metadata): {exc}",
            code="session_playbook_invalid",
        ) from exc


def playbook_state_from_snapshot(data: dict[str, Any], *, now: float | None = None) -> PlaybookState:
    """The :class:`~llmrtc.playbooks.state.PlaybookState` of a :func:`playbook_snapshot`, its times made
    monotonic again relative to ``now`` (time with no worker is not counted as time in the stage)."""
    from llmrtc.playbooks.state import PlaybookState, StageVisit

    ref = time.monotonic() if now is None else now
    try:
        fields = dict(data)
        if fields.pop("times", None) != "age_s":
            raise ValueError("not a playbook snapshot")
        visits = [
            StageVisit(
                **{
                    **v,
                    "entered_at": ref - float(v["entered_at"]),
                    "exited_at": None if v.get("exited_at") is None else ref - float(v["exited_at"]),
                }
            )
            for v in fields.pop("stage_history", [])
        ]
        fields["stage_entered_at"] = ref - float(fields["stage_entered_at"])
        state = PlaybookState(**fields, stage_history=visits)
        if not isinstance(state.current_stage_id, str) or not isinstance(state.context, dict):
            raise ValueError("bad field types")
    except (TypeError, ValueError, KeyError) as exc:
        log.warning("stored playbook state is unreadable: %s", exc)
        raise SessionStoreError(
            f"the stored playbook state cannot be restored: {exc}", code="session_playbook_invalid"
        ) from exc
    return state


__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_TTL_S",
    "InMemorySessionStore",
    "RedisSessionStore",
    "SessionState",
    "SessionStore",
    "create_session_store",
    "playbook_snapshot",
    "playbook_state_from_snapshot",
]
