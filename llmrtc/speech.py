"""The speech half of a voice orchestrator: STT in, the user message (with vision), streaming TTS out.

:class:`SpeechPipeline` holds a conversation's providers, settings, hooks and metrics and does the steps
around the LLM: :meth:`~SpeechPipeline.transcribe` one utterance, build the
:meth:`~SpeechPipeline.user_message` (images described by the vision provider when the LLM cannot see),
make a sentence :meth:`~SpeechPipeline.new_chunker` and a :class:`StreamingSpeaker`, which synthesizes each
sentence in order while the LLM goes on streaming, so the first audio comes long before the answer is done.

:class:`~llmrtc.voice_base.VoiceOrchestratorBase` (and so both
:class:`~llmrtc.orchestrator.ConversationOrchestrator` and
:class:`~llmrtc.playbooks.voice.VoicePlaybookOrchestrator`) is built on it; the turn plumbing it works with
(:class:`~llmrtc.turns.SpeechTurn`, :class:`~llmrtc.turns.TurnEmitter`) is in :mod:`llmrtc.turns`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import suppress
from typing import Protocol

from pydantic import ValidationError

from llmrtc.chunking import Chunker, SentenceChunker, as_chunker
from llmrtc.deadlines import Deadlines
from llmrtc.errors import ConfigError, GuardrailError, LLMRTCError
from llmrtc.events import ErrorEvent, TTSAudioEvent, TTSStartEvent
from llmrtc.hooks import HookContext, HookRunner, Stopwatch
from llmrtc.metrics import MetricNames, MetricsAdapter, safe_metrics
from llmrtc.providers.base import LLMProvider, STTProvider, TTSProvider, VisionProvider
from llmrtc.turns import SpeechTurn, TurnEmitter, TurnFailed, aclose_quietly, as_error
from llmrtc.types import Message, STTConfig, STTResult, TTSChunk, TTSConfig, VisionAttachment, VisionRequest

log = logging.getLogger("llmrtc.speech")


class SpeechProviders(Protocol):
    """The providers the pipeline uses (:class:`~llmrtc.orchestrator.ConversationProviders` is one)."""

    @property
    def llm(self) -> LLMProvider: ...
    @property
    def stt(self) -> STTProvider | None: ...
    @property
    def tts(self) -> TTSProvider | None: ...
    @property
    def vision(self) -> VisionProvider | None: ...


class SpeechSettings(Protocol):
    """The settings the pipeline reads (:class:`~llmrtc.orchestrator.OrchestratorConfig` is one)."""

    @property
    def stt(self) -> STTConfig: ...
    @property
    def tts(self) -> TTSConfig: ...
    @property
    def vision_prompt(self) -> str: ...
    @property
    def streaming_tts(self) -> bool: ...
    @property
    def hold_output_for_guardrail(self) -> bool | None: ...


class StreamingSpeaker:
    """Synthesizes a turn's text pieces one after another, in a task of its own, while the LLM goes on.

    :meth:`say` queues a piece (a sentence) of round ``round_no``; its audio is emitted as
    :class:`~llmrtc.events.TTSAudioEvent`s through the emitter (one segment per piece, the last chunk marked
    ``last_in_segment``), after one :class:`~llmrtc.events.TTSStartEvent`. A TTS failure is not fatal: it is
    reported, emitted as ``ErrorEvent(component="tts")``, and the rest is not spoken. Pieces of a dropped
    round are skipped. Call :meth:`finish` to wait for the audio, and always :meth:`aclose`.

    A TTS provider with input streaming (``capabilities.input_streaming``: ElevenLabs, Cartesia, Deepgram)
    is fed the pieces as they come on one stream for the whole turn (its audio is one segment whose text
    grows; with word timestamps the playout still knows exactly which words were heard), unless a
    guardrail holds each round's output, which needs the per-sentence path.
    """

    def __init__(
        self,
        turn: SpeechTurn,
        tts: TTSProvider,
        emitter: TurnEmitter,
        *,
        config: TTSConfig,
        hooks: HookRunner,
        metrics: MetricsAdapter,
    ) -> None:
        self._turn = turn
        self._tts = tts
        self._emitter = emitter
        self._config = config
        self._hooks = hooks
        self._metrics = safe_metrics(metrics)
        self._queue: asyncio.Queue[tuple[str, int] | None] = asyncio.Queue()
        self._segment = 0
        self.started = False
        """Whether any audio was emitted (then the turn ends its speech with a ``TTSCompleteEvent``)."""
        self.failed = False
        self.input_streaming = tts.capabilities.input_streaming and not emitter.hold
        """Whether the pieces are fed to one ``speak_text_stream`` (see the class doc)."""
        runner = self._run_streaming() if self.input_streaming else self._run()
        self._task = asyncio.create_task(runner, name=f"tts-{turn.id}")

    def say(self, text: str, round_no: int) -> None:
        """Queue ``text`` for synthesis (blank text, or anything after a failure, is ignored)."""
        if text.strip() and not self.failed:
            if not self._turn.first_audio:
                self._turn.step = "tts"  # the first audio now waits on the TTS
            self._queue.put_nowait((text.strip(), round_no))

    async def finish(self) -> None:
        """Wait until everything said so far was synthesized."""
        self._queue.put_nowait(None)
        await self._task

    async def aclose(self) -> None:
        """Stop synthesizing (cancels what is still queued)."""
        if not self._task.done():
            self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            text, round_no = item
            if self.failed or self._emitter.dropped(round_no):
                continue
            await self._speak(text, round_no)

    async def _run_streaming(self) -> None:
        """One ``speak_text_stream`` for the turn, fed the pieces as :meth:`say` queues them."""
        turn, metrics, hooks = self._turn, self._metrics, self._hooks
        said: list[str] = []
        round_now = 0

        async def pieces() -> AsyncIterator[str]:
            nonlocal round_now
            item: tuple[str, int] | None = first
            while True:
                if item is None:
                    return
                text, round_no = item
                if self._emitter.dropped(round_no):
                    item = await self._queue.get()
                    continue
                round_now = round_no
                said.append(text)
                yield text + " "
                item = await self._queue.get()

        first = await self._queue.get()
        if first is None:
            return
        ctx = turn.ctx.child(component="tts")
        await hooks.call("on_tts_start", ctx, first[0])
        watch = Stopwatch()
        stream = self._tts.speak_text_stream(pieces(), self._config)
        got_audio = False
        try:
            async for chunk in stream:
                if not got_audio:
                    got_audio = True
                    metrics.timing(MetricNames.TTS_TTFB, watch.elapsed_ms(), {"provider": self._tts.name})
                if not self.started:
                    self.started = True
                    self._emitter.emit(TTSStartEvent(turn.id), round_now)
                if not turn.first_audio:
                    turn.first_audio = True
                    if turn.playout is None:
                        metrics.timing(MetricNames.TURN_FIRST_AUDIO, turn.watch.elapsed_ms())
                await hooks.call("on_tts_chunk", ctx, chunk)
                self._emitter.emit(TTSAudioEvent(turn.id, chunk, " ".join(said), 0, False), round_now)
            text = " ".join(said)
            end = TTSChunk(b"", self._tts.sample_rate)
            self._emitter.emit(TTSAudioEvent(turn.id, end, text, 0, True), round_now)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(ctx, exc)
            return
        finally:
            await aclose_quietly(stream)
        await self._spoke(ctx, text, watch)

    async def _spoke(self, ctx: HookContext, text: str, watch: Stopwatch) -> None:
        """``text`` was synthesized: duration and characters counted, ``on_tts_end`` called."""
        timing = watch.timing()
        self._metrics.timing(MetricNames.TTS_DURATION, timing.duration_ms, {"provider": self._tts.name})
        self._metrics.increment(MetricNames.TTS_CHARACTERS, len(text), {"provider": self._tts.name})
        self._turn.tts_characters += len(text)
        await self._hooks.call("on_tts_end", ctx, timing)

    async def _failed(self, ctx: HookContext, exc: BaseException) -> None:
        """A TTS failure: reported, and the rest of the answer is not spoken."""
        error = as_error(exc, "tts", self._tts.name)
        self.failed = True
        log.warning(
            "tts failed (%s): [%s] %s; the rest of the answer is not spoken", ctx.ids(), error.code, error
        )
        self._metrics.increment(MetricNames.ERRORS, 1, {"component": "tts", "code": error.code})
        await self._hooks.call("on_tts_error", ctx, error)
        await self._hooks.call("on_error", ctx, error)
        self._emitter.emit(ErrorEvent(self._turn.id, error, "tts"))

    async def _speak(self, text: str, round_no: int) -> None:
        turn, metrics, hooks = self._turn, self._metrics, self._hooks
        segment = self._segment
        self._segment += 1
        ctx = turn.ctx.child(component="tts")
        await hooks.call("on_tts_start", ctx, text)
        watch = Stopwatch()
        prev: TTSChunk | None = None
        stream = self._tts.speak_stream(text, self._config)
        try:
            async for chunk in stream:
                if self._emitter.dropped(round_no):
                    return
                if prev is None:
                    metrics.timing(MetricNames.TTS_TTFB, watch.elapsed_ms(), {"provider": self._tts.name})
                if not self.started:
                    self.started = True
                    self._emitter.emit(TTSStartEvent(turn.id), round_no)
                await hooks.call("on_tts_chunk", ctx, chunk)
                if prev is not None:
                    self._emitter.emit(TTSAudioEvent(turn.id, prev, text, segment, False), round_no)
                elif not turn.first_audio:
                    turn.first_audio = True
                    if turn.playout is None:  # with a playout, the caller measures what is heard
                        metrics.timing(MetricNames.TURN_FIRST_AUDIO, turn.watch.elapsed_ms())
                prev = chunk
            if prev is not None:
                self._emitter.emit(TTSAudioEvent(turn.id, prev, text, segment, True), round_no)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(ctx, exc)
            return
        finally:
            await aclose_quietly(stream)
        await self._spoke(ctx, text, watch)


def wav_seconds(wav: bytes) -> float:
    """The duration of a WAV file's audio (0 when it cannot be read)."""
    import io
    import wave

    try:
        with wave.open(io.BytesIO(wav)) as reader:
            frames: int = reader.getnframes()
            rate: int = reader.getframerate()
        return frames / float(rate or 1)
    except (wave.Error, EOFError, ValueError):
        return 0.0


class SpeechPipeline:
    """STT, user message and streaming TTS for the turns of one conversation.

    ``providers`` and ``settings`` are read when used (not copied), ``chunker`` is a :class:`Chunker`, a
    ``(text) -> list[str]`` function or ``None`` (a fresh :class:`SentenceChunker` per LLM round). Steps
    that fail report the error (log line, ``llmrtc.errors`` metric, ``on_<component>_error`` and
    ``on_error`` hooks) and raise :class:`~llmrtc.turns.TurnFailed`.
    """

    def __init__(
        self,
        providers: SpeechProviders,
        settings: SpeechSettings,
        *,
        hooks: HookRunner | None = None,
        metrics: MetricsAdapter | None = None,
        chunker: Chunker | Callable[[str], list[str]] | None = None,
    ) -> None:
        if not isinstance(providers.llm, LLMProvider):
            raise ConfigError("ConversationProviders.llm must be an LLMProvider")
        self.providers = providers
        self.settings = settings
        self.hooks = hooks if hooks is not None else HookRunner()
        self.metrics = safe_metrics(metrics)
        self.chunker = chunker

    @property
    def deadlines(self) -> Deadlines:
        """The step deadlines the settings give (:mod:`llmrtc.deadlines`), read when used."""
        return Deadlines.from_settings(self.settings)

    def hold_output(self) -> bool:
        """Whether a round's text and audio wait for ``on_llm_end`` (set, or: a guardrail hook is present)."""
        if self.settings.hold_output_for_guardrail is not None:
            return self.settings.hold_output_for_guardrail
        return self.hooks.has_guardrail()

    def new_chunker(self) -> Chunker:
        """A chunker in its initial state, for one LLM round."""
        if self.chunker is None:
            return SentenceChunker()
        chunker = as_chunker(self.chunker)
        reset = getattr(chunker, "reset", None)
        if callable(reset):
            reset()
        else:
            chunker.flush()
        return chunker

    def stream_chunker(self, speaker: StreamingSpeaker | None) -> Chunker | None:
        """A fresh chunker when the answer is spoken while it streams (``streaming_tts``), else ``None``."""
        return self.new_chunker() if speaker is not None and self.settings.streaming_tts else None

    def speaker(self, turn: SpeechTurn, emitter: TurnEmitter) -> StreamingSpeaker | None:
        """A started :class:`StreamingSpeaker` for ``turn``, or ``None`` when it is not spoken (or no TTS)."""
        tts = self.providers.tts
        if not turn.speak or tts is None:
            return None
        return StreamingSpeaker(
            turn,
            self.deadlines.tts(tts),
            emitter,
            config=self.settings.tts,
            hooks=self.hooks,
            metrics=self.metrics,
        )

    async def fail(
        self, turn: SpeechTurn, exc: BaseException, component: str, provider: str = ""
    ) -> TurnFailed:
        """Report a failed step of ``turn`` and return the :class:`TurnFailed` to raise."""
        error = as_error(exc, component, provider)
        ctx = turn.ctx.child(component=component)
        log.warning("%s failed (%s): [%s] %s", component, ctx.ids(), error.code, error)
        self.metrics.increment(MetricNames.ERRORS, 1, {"component": component, "code": error.code})
        if not isinstance(error, GuardrailError):
            await self.hooks.call(f"on_{component}_error", ctx, error)
        await self.hooks.call("on_error", ctx, error)
        return TurnFailed(error, component)

    async def transcribe(self, turn: SpeechTurn, audio: bytes) -> STTResult:
        """Transcribe one utterance (WAV bytes); raises :class:`TurnFailed` without STT or on failure."""
        stt = self.providers.stt
        if stt is None:
            raise await self.fail(turn, ConfigError("an audio turn needs an STT provider"), "stt")
        ctx = turn.ctx.child(component="stt")
        await self.hooks.call("on_stt_start", ctx, audio)
        watch = Stopwatch()
        try:
            result = await self.deadlines.stt(stt).transcribe(audio, self.settings.stt)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise await self.fail(turn, exc, "stt", stt.name) from exc
        timing = watch.timing()
        self.metrics.timing(MetricNames.STT_DURATION, timing.duration_ms, {"provider": stt.name})
        seconds = wav_seconds(audio)
        if seconds:
            self.metrics.increment(MetricNames.STT_AUDIO_SECONDS, seconds, {"provider": stt.name})
        await self.hooks.call("on_stt_end", ctx, result, timing)
        return result

    async def user_message(
        self, turn: SpeechTurn, text: str, attachments: Sequence[VisionAttachment] | None
    ) -> Message:
        """The user message of ``turn`` (``name=turn.speaker``) with its images.

        When the LLM cannot see images, the vision provider's description is appended to ``text`` instead
        (a vision failure is reported and the turn goes on without the image; with no vision provider the
        images are dropped with a warning). An invalid attachment raises :class:`TurnFailed`.
        """
        try:
            images = [
                a if isinstance(a, VisionAttachment) else VisionAttachment.model_validate(a)
                for a in attachments or []
            ]
        except ValidationError as exc:
            reason = exc.errors()[0].get("msg", "invalid")
            bad = LLMRTCError(f"invalid attachment: {reason}", code="invalid_attachment")
            raise await self.fail(turn, bad, "vision") from exc
        if images and not self.providers.llm.capabilities.vision:
            vision = self.providers.vision
            if vision is None:
                log.warning(
                    "dropping %d attachment(s): the LLM cannot see images and no vision provider is set (%s)",
                    len(images),
                    turn.ctx.ids(),
                )
            else:
                try:
                    described = await vision.describe(
                        VisionRequest(prompt=self.settings.vision_prompt, attachments=images)
                    )
                    text = f"{text}\n\n[Attached image: {described.description}]"
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    error = as_error(exc, "vision", vision.name)
                    log.warning("vision failed (%s): %s; going on without the image", turn.ctx.ids(), error)
                    self.metrics.increment(MetricNames.ERRORS, 1, {"component": "vision", "code": error.code})
                    await self.hooks.call("on_error", turn.ctx.child(component="vision"), error)
            images = []
        return Message.user(text, name=turn.speaker, attachments=images)


__all__ = ["SpeechPipeline", "SpeechProviders", "SpeechSettings", "StreamingSpeaker"]
