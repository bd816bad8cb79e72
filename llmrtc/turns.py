"""Turn plumbing shared by the orchestrators: the turn record, event delivery with guardrail hold, failures.

An orchestrator runs a turn as a producer task and a consumer (the async generator the caller iterates):

- the producer puts events on an :class:`asyncio.Queue` through a :class:`TurnEmitter` (which can hold a
  round's events until its guardrail passed, release them, or drop them) and ends with :data:`END_OF_TURN`;
- the consumer yields each event and calls :meth:`SpeechTurn.consumed` for it, so that after a barge-in
  :meth:`SpeechTurn.spoken_text` is what the listener actually got;
- a failing step raises :class:`TurnFailed` (already reported), which the turn turns into an ``ErrorEvent``.

:func:`collect_outcome` gathers a turn's events into a :class:`TurnOutcome`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llmrtc.errors import LLMRTCError, ProviderError
from llmrtc.events import (
    ErrorEvent,
    LLMChunkEvent,
    LLMFinalEvent,
    ToolCallEvent,
    ToolResultEvent,
    TranscriptEvent,
    TTSAudioEvent,
    TurnCompleteEvent,
    TurnEvent,
)
from llmrtc.hooks import HookContext, Stopwatch
from llmrtc.types import Message, ToolCallRequest, ToolResult

if TYPE_CHECKING:
    from llmrtc.playout import Playout


class TurnFailed(Exception):
    """A turn step failed; ``error`` was already logged and reported to hooks and metrics."""

    def __init__(self, error: LLMRTCError, component: str) -> None:
        super().__init__(error.message)
        self.error = error
        self.component = component


class EndOfTurn:
    """The type of :data:`END_OF_TURN`, the producer's last queue item."""


END_OF_TURN = EndOfTurn()
QueueItem = TurnEvent | EndOfTurn
"""What a turn's queue carries: events, then :data:`END_OF_TURN`."""


@dataclass(slots=True)
class SpeechTurn:
    """One running turn: its ids and hook context, and what of its answer reached the consumer.

    ``speak`` says whether the answer is synthesized. ``spoken`` holds the text of each TTS segment whose
    last audio event was delivered, ``shown`` the LLM text delivered (what counts when nothing is spoken).
    ``interrupted``/``spoken_override`` are set by barge-in; ``producer`` is the task filling the queue;
    ``message`` is the user message, once built. ``playout``, when the turn is played through one, owns what
    was heard (:meth:`llmrtc.playout.Playout.heard_text`).
    """

    id: str
    speaker: str | None
    ctx: HookContext
    watch: Stopwatch
    speak: bool
    spoken: list[str] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)
    final_text: str = ""
    outcome: str = "running"
    interrupted: bool = False
    spoken_override: str | None = None
    producer: asyncio.Task[None] | None = None
    first_audio: bool = False
    step: str = "llm"
    """The step the turn waits on for its first output (``llm``, ``tool``, ``tts``): named when the turn
    budget runs out."""
    budget_expired: bool = False
    message: Message | None = None
    playout: Playout | None = None
    tts_characters: int = 0
    """Characters synthesized for this turn (usage)."""

    def consumed(self, event: TurnEvent) -> None:
        """Record that ``event`` was delivered to the consumer."""
        if isinstance(event, TTSAudioEvent) and event.last_in_segment:
            self.spoken.append(event.text)
        elif isinstance(event, LLMChunkEvent):
            self.shown.append(event.content)

    def spoken_text(self) -> str:
        """What the listener got: the barge-in override, else what the playout played, else the delivered
        segments (or the delivered text, if the turn is not spoken)."""
        if self.spoken_override is not None:
            return self.spoken_override.strip()
        if self.playout is not None and self.speak:
            return self.playout.heard_text()
        if self.speak:
            return " ".join(s.strip() for s in self.spoken if s.strip())
        return "".join(self.shown).strip()


class TurnEmitter:
    """Puts a turn's events on its queue; with ``hold``, a round's events wait until the round is released.

    Events emitted with ``round_no=None`` are never held. A dropped round's events (held or later) are
    discarded, so a withheld answer is never shown or spoken.
    """

    def __init__(
        self,
        queue: asyncio.Queue[QueueItem],
        hold: bool,
        on_deliver: Callable[[TurnEvent], None] | None = None,
    ) -> None:
        self.queue = queue
        self.hold = hold
        self._on_deliver = on_deliver
        self._held: dict[int, list[TurnEvent]] = {}
        self._released: set[int] = set()
        self._dropped: set[int] = set()

    def emit(self, event: TurnEvent, round_no: int | None = None) -> None:
        """Deliver ``event`` now, or keep it with its round while that round is held."""
        if round_no is not None and round_no in self._dropped:
            return
        if self.hold and round_no is not None and round_no not in self._released:
            self._held.setdefault(round_no, []).append(event)
            return
        self._deliver(event)

    def _deliver(self, event: TurnEvent) -> None:
        if self._on_deliver is not None:
            self._on_deliver(event)
        self.queue.put_nowait(event)

    def release(self, round_no: int) -> None:
        """Deliver the round's held events; its later events go out at once."""
        self._released.add(round_no)
        for event in self._held.pop(round_no, []):
            self._deliver(event)

    def drop(self, round_no: int) -> None:
        """Discard the round's held and future events."""
        self._dropped.add(round_no)
        self._held.pop(round_no, None)

    def dropped(self, round_no: int) -> bool:
        """Whether the round was dropped."""
        return round_no in self._dropped


@dataclass(slots=True)
class TurnOutcome:
    """Everything a turn produced (the collected form of ``run_*_stream``)."""

    turn_id: str
    transcript: str = ""
    text: str = ""
    events: list[TurnEvent] = field(default_factory=list)
    audio: bytes = b""
    sample_rate: int | None = None
    tool_calls: list[ToolCallRequest] = field(default_factory=list)
    tool_results: list[ToolResult] = field(default_factory=list)
    error: LLMRTCError | None = None
    completed: bool = False

    @property
    def audio_duration_s(self) -> float:
        return len(self.audio) / 2 / self.sample_rate if self.sample_rate else 0.0


async def collect_outcome(events: AsyncIterator[TurnEvent]) -> TurnOutcome:
    """Run a turn's event stream to its end and gather it (audio concatenated; TTS errors are not fatal)."""
    outcome: TurnOutcome | None = None
    audio = bytearray()
    async for event in events:
        if outcome is None:
            outcome = TurnOutcome(turn_id=event.turn_id)
        outcome.events.append(event)
        if isinstance(event, TranscriptEvent):
            outcome.transcript = event.result.text
        elif isinstance(event, LLMFinalEvent):
            outcome.text = event.result.full_text
        elif isinstance(event, TTSAudioEvent):
            audio.extend(event.chunk.pcm)
            outcome.sample_rate = event.chunk.sample_rate
        elif isinstance(event, ToolCallEvent):
            outcome.tool_calls.append(event.call)
        elif isinstance(event, ToolResultEvent):
            outcome.tool_results.append(event.result)
        elif isinstance(event, ErrorEvent) and outcome.error is None and event.component != "tts":
            outcome.error = event.error
        elif isinstance(event, TurnCompleteEvent):
            outcome.completed = True
    if outcome is None:  # pragma: no cover - every turn yields at least one event
        raise RuntimeError("turn produced no events")
    outcome.audio = bytes(audio)
    return outcome


def as_error(exc: BaseException, component: str, provider: str = "") -> LLMRTCError:
    """``exc`` as an :class:`LLMRTCError` (a foreign exception becomes a :class:`ProviderError`)."""
    if isinstance(exc, LLMRTCError):
        return exc
    return ProviderError(f"{component} failed: {type(exc).__name__}: {exc}", provider=provider)


async def aclose_quietly(obj: object) -> None:
    """Close a provider stream (anything with ``aclose``), ignoring errors."""
    close = getattr(obj, "aclose", None)
    if close is not None:
        with suppress(Exception):
            await close()


__all__ = [
    "END_OF_TURN",
    "EndOfTurn",
    "QueueItem",
    "SpeechTurn",
    "TurnEmitter",
    "TurnFailed",
    "TurnOutcome",
    "aclose_quietly",
    "as_error",
    "collect_outcome",
]
