"""The worker process's one session store, shared by every job (``SESSION_STORE_URL``).

With the thread executor each job runs its own event loop on its own thread, and a ``redis.asyncio``
connection belongs to the loop that opened it. So the real store
(:func:`llmrtc.sessions.create_session_store`) lives on one private event loop thread, and
:class:`ProcessSessionStore` forwards each call there from whichever loop the job runs on. :func:`process_session_store` creates it on first use (once per process);
:func:`close_process_session_store` closes it at shutdown (the CLI calls it when the worker stops, and an
``atexit`` hook covers job processes of the process executor).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from llmrtc.errors import SessionStoreError
from llmrtc.sessions import SessionState, SessionStore, create_session_store

log = logging.getLogger("llmrtc.worker.store")

T = TypeVar("T")


class ProcessSessionStore:
    """A :class:`~llmrtc.sessions.SessionStore` callable from any thread's event loop.

    ``url`` as for :func:`~llmrtc.sessions.create_session_store` (empty: in memory); a bad URL raises
    :class:`~llmrtc.errors.ConfigError` here. Every call raises what the underlying store raises
    (:class:`~llmrtc.errors.SessionStoreError` and its subclasses); after :meth:`close`, every call raises
    ``SessionStoreError`` (code ``session_store_closed``).
    """

    def __init__(self, url: str, *, ttl_s: float) -> None:
        self._store: SessionStore = create_session_store(url, ttl_s=ttl_s)
        self.backend: str = str(getattr(self._store, "backend", "memory"))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="llmrtc-session-store", daemon=True
        )
        self._thread.start()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._lock:
            if self._closed:
                coro.close()
                raise SessionStoreError("the session store is closed", code="session_store_closed")
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return await asyncio.wrap_future(future)

    async def load(self, session_id: str) -> SessionState | None:
        return await self._call(self._store.load(session_id))

    async def save(self, state: SessionState, *, force: bool = False) -> SessionState:
        # the store updates version and updated_at in place; it runs on another thread, so hand it a copy
        # and copy the store's answer back once it is done
        copy = state.model_copy(deep=True)
        saved = await self._call(self._store.save(copy, force=force))
        state.version = saved.version
        state.updated_at = saved.updated_at
        return state

    async def delete(self, session_id: str) -> bool:
        return await self._call(self._store.delete(session_id))

    async def touch(self, session_id: str) -> bool:
        return await self._call(self._store.touch(session_id))

    async def aclose(self) -> None:
        """Close from a coroutine (runs :meth:`close` off the calling loop)."""
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def close(self, timeout_s: float = 5.0) -> None:
        """Close the store and stop its thread. Idempotent; never raises."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self._store.aclose(), self._loop).result(timeout_s)
        except Exception as exc:
            log.warning("closing the session store failed: %s: %s", type(exc).__name__, exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self._loop.close()


_process_store: ProcessSessionStore | None = None
_process_lock = threading.Lock()


def process_session_store(url: str, *, ttl_s: float) -> ProcessSessionStore:
    """This process's store, created on the first call (later calls get the same one whatever they pass)."""
    global _process_store
    with _process_lock:
        if _process_store is None or _process_store.closed:
            _process_store = ProcessSessionStore(url, ttl_s=ttl_s)
            atexit.register(_process_store.close)
            log.info("session store ready (store=%s)", _process_store.backend)
        return _process_store


def close_process_session_store() -> None:
    """Close this process's store, if one was created (at worker shutdown)."""
    global _process_store
    with _process_lock:
        store, _process_store = _process_store, None
    if store is not None:
        store.close()


__all__ = ["ProcessSessionStore", "close_process_session_store", "process_session_store"]
