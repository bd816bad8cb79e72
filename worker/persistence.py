"""One room's conversation state in the session store: loaded when the job starts, saved after every change.

:class:`RoomPersistence` restores the orchestrator from the stored :class:`~llmrtc.sessions.SessionState`
(history, and the playbook engine's state in playbook mode) before the first turn, then saves in the
background whenever :meth:`RoomPersistence.changed` is called: after each completed or interrupted turn
and after each context note (:class:`PersistentConversation` calls it). Saves are coalesced (one at a time,
always of the latest state), so the turn path never waits on the store.

**The turn in flight.** A turn's question is saved when the turn starts (:meth:`RoomPersistence.begin_turn`),
with the turn's id in the state's ``metadata["pending_turn"]``, not only when the turn ends: a worker killed
mid-turn (SIGKILL, a crash) loses the answer but never the question. The worker that restores the room finds
the pending turn (:attr:`RoomPersistence.lost_turn`) and tells the room that turn ended in an error
(:meth:`RoomPersistence.lost_turn_events`). A job that shuts down (SIGTERM) cancels its turn and says so
(``turn_end`` ``cancelled``, reason ``shutdown``); when the room was already gone by then (the worker's
connection closes before its jobs end), :meth:`RoomPersistence.mark_lost` leaves that ``turn_end`` for the
next worker to send. What it cannot know: whatever the dead worker did after its last
save (a partly spoken answer is not in the history; the question is).

Failures never end the job: a :class:`~llmrtc.errors.SessionConflictError` means another worker took the
room over (its save was newer), so this job stops saving; any other
:class:`~llmrtc.errors.SessionStoreError` is logged and the next change tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from llmrtc.errors import LLMRTCError, SessionConflictError, SessionStoreError
from llmrtc.events import TurnEvent
from llmrtc.hooks import HookRunner
from llmrtc.playout import Playout
from llmrtc.providers.base import STTProvider
from llmrtc.sessions import SessionState, SessionStore
from llmrtc.types import Message, STTResult, VisionAttachment
from worker.protocol import ErrorMsg, ServerEvent, TurnEndMsg
from worker.session import Conversation

log = logging.getLogger("llmrtc.worker.persistence")


class RoomPersistence:
    """Load and save one room's state. ``orchestrator`` has ``history`` and ``load_history`` (and, for a
    playbook, ``snapshot``/``restore``); ``store`` is ``None`` when persistence is off."""

    def __init__(
        self,
        store: SessionStore | None,
        room: str,
        orchestrator: Any,
        *,
        metadata: dict[str, Any] | None = None,
        close_timeout_s: float = 10.0,
    ) -> None:
        self._store = store
        self._room = room
        self._orch = orchestrator
        self._metadata = dict(metadata or {})
        self._close_timeout_s = close_timeout_s
        self._state = SessionState(session_id=room)
        self._dirty = False
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.owned = store is not None
        """False once another worker saved the room (this job then stops saving)."""
        self.saves = 0
        """Successful saves so far (for logs and tests)."""
        self._pending: _PendingTurn | None = None
        self._lost_on_close: dict[str, Any] | None = None
        self.lost_turn: dict[str, Any] | None = None
        """The turn a previous worker was running when it stopped without ending it (from :meth:`restore`)."""

    @property
    def version(self) -> int:
        """The version of the state this job last loaded or saved (0: none)."""
        return self._state.version

    async def restore(self) -> bool:
        """Load the room's stored state into the orchestrator (before the first turn) and start saving.

        Returns whether a stored state was applied. A store failure or an unusable state is logged and the
        conversation starts fresh.
        """
        restored = False
        if self._store is not None:
            try:
                stored = await self._store.load(self._room)
            except SessionStoreError as exc:
                log.warning(
                    "could not load the room's session: %s (starting fresh)", exc.code, extra=self._extra
                )
                stored = None
            if stored is not None:
                restored = self._apply(stored)
                lost = stored.metadata.get("pending_turn")
                if isinstance(lost, dict) and isinstance(lost.get("turn_id"), str):
                    self.lost_turn = lost
                    log.warning(
                        "the previous worker stopped during turn %s: its question is kept, its answer lost",
                        lost["turn_id"],
                        extra=self._extra,
                    )
                self._state.version = stored.version  # saves build on the stored version either way
            self._task = asyncio.create_task(self._saver(), name=f"llmrtc-session-save-{self._room}")
        return restored

    def _apply(self, stored: SessionState) -> bool:
        try:
            self._orch.load_history(stored.history)
        except LLMRTCError as exc:
            log.warning("stored history refused: %s (starting fresh)", exc.code, extra=self._extra)
            return False
        if stored.playbook is not None and hasattr(self._orch, "restore"):
            try:
                self._orch.restore(stored.playbook)
            except LLMRTCError as exc:
                log.warning(
                    "stored playbook state refused: %s (the playbook starts over)",
                    exc.code,
                    extra=self._extra,
                )
        log.info(
            "session restored (version %d, %d messages)",
            stored.version,
            len(stored.history),
            extra=self._extra,
        )
        return True

    def begin_turn(self, turn_id: str, text: str, speaker: str | None) -> None:
        """A turn starts: save its question now (with the turn id), so a killed worker does not lose it."""
        history = self._orch.history
        self._pending = _PendingTurn(
            turn_id, Message.user(text, name=speaker), history[-1] if history else None
        )
        self.changed()

    def end_turn(self, turn_id: str) -> None:
        """The turn ended (the pipeline recorded it): save the recorded state."""
        if self._pending is not None and self._pending.turn_id == turn_id:
            self._pending = None
        self.changed()

    def mark_lost(self, turn_id: str, reason: str = "shutdown") -> None:
        """Turn ``turn_id`` ended while the room was already gone (the job shut down): its ``turn_end`` never
        reached the humans, so the state keeps it pending for the next worker to announce."""
        self._lost_on_close = {"turn_id": turn_id, "reason": reason}
        self.changed()

    def lost_turn_events(self) -> list[ServerEvent]:
        """The ``error`` and ``turn_end`` that end the turn a previous worker left open (empty: none)."""
        lost = self.lost_turn
        if lost is None:
            return []
        self.lost_turn = None
        self.changed()  # the next save no longer carries the pending turn
        turn_id = str(lost["turn_id"])
        if lost.get("reason") == "shutdown":  # the stopped worker cancelled it, but could no longer say so
            return [TurnEndMsg(turn_id=turn_id, outcome="cancelled", reason="shutdown")]
        return [
            ErrorMsg(
                code="turn_lost",
                message="The agent restarted before it could answer. Please say it again.",
                turn_id=turn_id,
                component="worker",
                retryable=True,
            ),
            TurnEndMsg(turn_id=turn_id, outcome="error", reason="worker_restarted"),
        ]

    def changed(self) -> None:
        """The conversation changed: save it soon (never blocks, never raises)."""
        if self._task is None or not self.owned or self._closing:
            return
        self._dirty = True
        self._wake.set()

    async def aclose(self, *, delete: bool = False) -> None:
        """Save what is pending, stop, and with ``delete`` forget the room's state (the room ended)."""
        if self._task is None or self._closing:
            return
        self._closing = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self._close_timeout_s)
        except TimeoutError:
            log.warning("the last session save did not finish in time", extra=self._extra)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if delete and self.owned and self._store is not None:
            try:
                await self._store.delete(self._room)
                log.info("session deleted (the room ended)", extra=self._extra)
            except SessionStoreError as exc:
                log.warning("could not delete the room's session: %s", exc.code, extra=self._extra)

    @property
    def _extra(self) -> dict[str, Any]:
        return {"room": self._room, **{k: v for k, v in self._metadata.items() if k == "job"}}

    async def _saver(self) -> None:
        while True:
            if not self._dirty:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            self._dirty = False
            if self.owned:
                await self._save_once()

    async def _save_once(self) -> None:
        assert self._store is not None
        state = self._state
        try:
            state.history = self._orch.history
            pending = self._pending
            state.metadata = dict(self._metadata)
            if pending is not None and not pending.recorded_in(state.history):
                state.history = [*state.history, pending.message]
                state.metadata["pending_turn"] = {"turn_id": pending.turn_id}
            elif self._lost_on_close is not None:
                state.metadata["pending_turn"] = dict(self._lost_on_close)
            if hasattr(self._orch, "snapshot"):
                try:
                    state.playbook = self._orch.snapshot()
                except LLMRTCError as exc:
                    log.warning("playbook state not saved: %s", exc.code, extra=self._extra)
            # shielded: a save that reached the store must update our version, or the next one conflicts
            await asyncio.shield(self._store.save(state))
            self.saves += 1
            log.debug("session saved (version %d)", state.version, extra=self._extra)
        except SessionConflictError as exc:
            self.owned = False
            log.warning(
                "another worker saved this room (stored version %d): no longer saving it",
                exc.stored_version,
                extra=self._extra,
            )
        except SessionStoreError as exc:
            log.warning("session save failed: %s (the conversation goes on)", exc.code, extra=self._extra)
        except Exception:
            log.exception("session save crashed (the conversation goes on)", extra=self._extra)


class _PendingTurn:
    """The question of the turn running now, until the pipeline records it."""

    def __init__(self, turn_id: str, message: Message, after: Message | None) -> None:
        self.turn_id = turn_id
        self.message = message
        self._after = after

    def recorded_in(self, history: list[Message]) -> bool:
        """Whether the pipeline already recorded the question (after the message that was last at the start)."""
        start = next((i + 1 for i, m in enumerate(history) if m is self._after), None)
        if start is None:
            start = 0 if self._after is None else max(0, len(history) - 8)
        return any(
            m.role == "user" and m.content == self.message.content and m.name == self.message.name
            for m in history[start:]
        )


class PersistentConversation:
    """A :class:`worker.session.Conversation` that tells :class:`RoomPersistence` after every change."""

    def __init__(self, inner: Conversation, persistence: RoomPersistence) -> None:
        self._inner = inner
        self._persistence = persistence

    @property
    def hooks(self) -> HookRunner:
        return self._inner.hooks

    @property
    def session_id(self) -> str:
        return self._inner.session_id

    async def transcribe(self, wav: bytes, *, speaker: str | None, utterance_id: str) -> STTResult:
        return await self._inner.transcribe(wav, speaker=speaker, utterance_id=utterance_id)

    async def _saving(
        self, events: AsyncIterator[TurnEvent], turn_id: str | None = None
    ) -> AsyncIterator[TurnEvent]:
        try:
            async for event in events:
                yield event
        finally:
            closer = getattr(events, "aclose", None)
            if closer is not None:
                await closer()
            # completed, failed or cut: the pipeline recorded the question and what was heard
            if turn_id is not None:
                self._persistence.end_turn(turn_id)
            else:
                self._persistence.changed()

    def run_text_turn(
        self,
        text: str,
        *,
        speaker: str | None,
        turn_id: str,
        playout: Playout | None = None,
        attachments: list[VisionAttachment] | None = None,
    ) -> AsyncIterator[TurnEvent]:
        self._persistence.begin_turn(turn_id, text, speaker)
        return self._saving(
            self._inner.run_text_turn(
                text, speaker=speaker, turn_id=turn_id, playout=playout, attachments=attachments
            ),
            turn_id,
        )

    def say(self, text: str, *, turn_id: str, playout: Playout | None = None) -> AsyncIterator[TurnEvent]:
        return self._saving(self._inner.say(text, turn_id=turn_id, playout=playout))

    async def add_context_note(self, note: str) -> None:
        await self._inner.add_context_note(note)
        self._persistence.changed()

    def discard(self, turn_id: str) -> None:
        self._inner.discard(turn_id)

    def gate_tools(self, turn_id: str, wait: Callable[[], Awaitable[None]] | None) -> None:
        self._inner.gate_tools(turn_id, wait)

    def streaming_stt(self, interval_s: float) -> STTProvider:
        return self._inner.streaming_stt(interval_s)


__all__ = ["PersistentConversation", "RoomPersistence"]
