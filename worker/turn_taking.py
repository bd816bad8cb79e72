"""Turn taking in the worker: the end-of-turn settings, live (interim) transcripts, preemptive replies.

* :func:`turn_detection_settings`: ``TURN_DETECTION`` and ``TURN_*`` of :class:`WorkerSettings` as the
  :class:`~llmrtc.audio.turn_detection.TurnDetectionSettings` the listeners build their segmenter from.
* :class:`LiveTranscript`: interim transcripts of one utterance while it is spoken, from the pipeline's
  streaming STT (:meth:`worker.conversation.OrchestratorConversation.streaming_stt`: the provider's own
  stream, or the batch STT re-run on the growing utterance at a bounded rate). It stops when the utterance
  ends, before any final request: the final transcript goes through the pipeline's ``transcribe`` (STT
  hooks and metrics, once per utterance). Interim results are only shown; they never start a turn.
* :class:`Preemptive`: a reply started when the end of the turn was predicted, held (no audio, no
  messages, tools with side effects waiting) until the turn is confirmed by the end of the utterance.
* :class:`Prefetch`: runs a turn's event stream ahead in a task, so the LLM starts before anyone iterates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from llmrtc.audio.turn_detection import TurnDetectionSettings
from llmrtc.providers.base import STTProvider

if TYPE_CHECKING:
    from worker.config import WorkerSettings

log = logging.getLogger("llmrtc.worker.turn_taking")

T = TypeVar("T")


def turn_detection_settings(settings: WorkerSettings) -> TurnDetectionSettings:
    """The end-of-turn settings of ``settings`` (unset ``TURN_*`` values take the model's defaults)."""
    return TurnDetectionSettings(
        _env_file=None,
        TURN_DETECTION=settings.turn_detection,
        TURN_MIN_SILENCE_MS=settings.turn_min_silence_ms,
        TURN_MAX_SILENCE_MS=settings.turn_max_silence_ms,
        TURN_COMPLETE_THRESHOLD=settings.turn_complete_threshold,
        TURN_TEXT_CHECK=settings.turn_text_check,
        TURN_TEXT_LANGUAGE=settings.turn_text_language,
    )


class LiveTranscript:
    """Interim transcripts of one utterance: :meth:`feed` its audio (16 kHz PCM16) as it is spoken,
    ``on_interim(text)`` is called with each new interim text, :meth:`aclose` when it ends (no final is
    requested). STT failures are logged and end the interim results, never the utterance."""

    def __init__(self, stt: STTProvider, on_interim: Callable[[str], None], *, name: str = "") -> None:
        self._stt = stt
        self._on_interim = on_interim
        self._audio: asyncio.Queue[bytes] = asyncio.Queue()
        self.latest = ""
        self.count = 0
        self._task = asyncio.create_task(self._run(), name=f"llmrtc-interim-{name}")

    def feed(self, pcm16k: bytes) -> None:
        if pcm16k and not self._task.done():
            self._audio.put_nowait(pcm16k)

    async def _pieces(self) -> AsyncIterator[bytes]:
        while True:
            yield await self._audio.get()

    async def _run(self) -> None:
        try:
            async for result in self._stt.transcribe_stream(self._pieces()):
                if result.is_final:
                    continue
                text = result.text.strip()
                if text and text != self.latest:
                    self.latest = text
                    self.count += 1
                    self._on_interim(text)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("interim transcription stopped: %s", exc)

    def cancel(self) -> None:
        """Stop now (an interim request in flight is cancelled); no interim result is reported after this."""
        self._task.cancel()

    async def aclose(self) -> None:
        """:meth:`cancel`, and wait for the task to end."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@dataclass
class Preemptive:
    """A reply started on a predicted end of turn, for ``identity``'s utterance ``segment``.

    ``stt``: the transcription of the utterance up to the prediction, through the pipeline; it becomes the
    utterance's final transcript when the turn is confirmed (only silence followed). ``confirmed`` is set
    when the utterance ends without the person going on; until then the turn is held.
    """

    identity: str
    segment: str
    stt: asyncio.Future[str]
    confirmed: asyncio.Event = field(default_factory=asyncio.Event)
    queued: bool = False
    """The reply was queued as a turn (the agent was free and the words take the floor)."""
    dropped: bool = False

    async def wait_confirmed(self) -> None:
        await self.confirmed.wait()


class Prefetch(Generic[T]):
    """An async iterator run ahead in a task: its items are buffered until taken. :meth:`aclose` cancels
    the task (the iterator sees a cancellation, as when its consumer is cancelled) and closes it."""

    def __init__(self, inner: AsyncIterator[T]) -> None:
        self._inner = inner
        self._items: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()
        self._task = asyncio.create_task(self._pump(), name="llmrtc-prefetch")

    async def _pump(self) -> None:
        try:
            async for item in self._inner:
                self._items.put_nowait((True, item))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._items.put_nowait((False, exc))
            return
        self._items.put_nowait((False, None))

    def __aiter__(self) -> Prefetch[T]:
        return self

    async def __anext__(self) -> T:
        ok, item = await self._items.get()
        if ok:
            return item  # type: ignore[no-any-return]
        self._items.put_nowait((False, item))  # the end stays the end
        if item is None:
            raise StopAsyncIteration
        raise item

    async def aclose(self) -> None:
        if not self._task.done():
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        closer = getattr(self._inner, "aclose", None)
        if closer is not None:
            await closer()


__all__ = ["LiveTranscript", "Preemptive", "Prefetch", "turn_detection_settings"]
