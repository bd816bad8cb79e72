"""OpenAI realtime transcription: streaming speech to text over the Realtime API's transcription session.

:class:`OpenAIRealtimeSTTProvider` opens ``/v1/realtime?intent=transcription`` with the ``openai`` SDK's
``realtime.connect``, configures the session (``session.update`` with ``type: "transcription"``, PCM at
24 kHz, the transcription model, server VAD), resamples the 16 kHz input to 24 kHz as it streams and sends it
with ``input_audio_buffer.append``. The service cuts the audio into utterances with its VAD; for each one it
streams ``conversation.item.input_audio_transcription.delta`` (interim results: the text so far) and then
``...completed`` (a final with ``end_of_utterance``). When the input ends inside speech the buffer is
committed so the last words are transcribed too.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from llmrtc.errors import ConfigError, ProviderError
from llmrtc.providers._errors import error_from_status, timeout_error, truncated_stream
from llmrtc.providers._realtime import (
    SENDER_DONE,
    STT_RATE,
    Receiver,
    is_closed_ok,
    one_piece,
    socket_error,
    stop_task,
    wav_to_stt_pcm,
)
from llmrtc.providers.base import STTCapabilities, STTProvider
from llmrtc.providers.resilience import RetryPolicy, call_with_retries
from llmrtc.types import STTConfig, STTResult

if TYPE_CHECKING:
    from openai import AsyncOpenAI

log = logging.getLogger("llmrtc.providers.openai_realtime")

PROVIDER = "openai-realtime"
REALTIME_RATE = 24000
"""The PCM rate the Realtime API takes (``audio/pcm``)."""

_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "server_error": 500,
}
_BENIGN_AT_END = {"input_audio_buffer_commit_empty"}


def map_error(exc: BaseException, timeout_s: float | None = None) -> ProviderError:
    """Any SDK or socket failure as an :mod:`llmrtc.errors` error."""
    if isinstance(exc, ProviderError):
        return exc
    from openai import APIStatusError

    if isinstance(exc, APIStatusError):
        return error_from_status(PROVIDER, exc.status_code, exc.message)
    if isinstance(exc, TimeoutError):
        return timeout_error(PROVIDER, timeout_s)
    return socket_error(PROVIDER, exc, timeout_s)


def _event_error(error: Any) -> ProviderError:
    kind = str(getattr(error, "type", "") or "")
    code = str(getattr(error, "code", "") or "")
    message = str(getattr(error, "message", "") or code or kind or "realtime error")
    status = _ERROR_STATUS.get(code) or _ERROR_STATUS.get(kind) or 400
    if code == "invalid_api_key":
        status = 401
    return error_from_status(PROVIDER, status, f"{message} ({code})" if code else message)


class OpenAIRealtimeSTTProvider(STTProvider):
    """Streaming transcription through an OpenAI realtime transcription session."""

    name = PROVIDER
    capabilities = STTCapabilities(streaming=True, interim_results=True, word_timestamps=False)

    def __init__(
        self,
        api_key: str | None = None,
        model: str = "gpt-4o-transcribe",
        language: str | None = None,
        prompt: str | None = None,
        base_url: str | None = None,
        websocket_base_url: str | None = None,
        silence_duration_ms: int = 500,
        vad_threshold: float = 0.5,
        noise_reduction: str | None = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY")
        if not self.api_key:
            raise ConfigError(
                "OpenAI realtime transcription needs an API key: pass api_key or set OPENAI_API_KEY"
            )
        self.model = model
        self.language = language
        self.prompt = prompt
        self.base_url = base_url
        self.websocket_base_url = websocket_base_url
        self.silence_duration_ms = silence_duration_ms
        self.vad_threshold = vad_threshold
        self.noise_reduction = noise_reduction
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self._client: AsyncOpenAI | None = None

    def _sdk(self) -> AsyncOpenAI:
        if self._client is None:
            try:
                from openai import AsyncOpenAI
            except ImportError as exc:  # pragma: no cover - depends on the installed extras
                raise ConfigError("OpenAI needs the 'openai' extra: pip install 'llmrtc[openai]'") from exc
            self._client = AsyncOpenAI(
                api_key=self.api_key,
                base_url=self.base_url,
                websocket_base_url=self.websocket_base_url,
                max_retries=0,
                timeout=self.timeout_s,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def session(self, config: STTConfig | None = None) -> dict[str, Any]:
        """The ``session.update`` body: a transcription session with PCM 24 kHz input and server VAD."""
        transcription: dict[str, Any] = {"model": (config.model if config else None) or self.model}
        language = (config.language if config else None) or self.language
        prompt = (config.prompt if config else None) or self.prompt
        if language:
            transcription["language"] = language
        if prompt:
            transcription["prompt"] = prompt
        audio_input: dict[str, Any] = {
            "format": {"type": "audio/pcm", "rate": REALTIME_RATE},
            "transcription": transcription,
            "turn_detection": {
                "type": "server_vad",
                "threshold": self.vad_threshold,
                "prefix_padding_ms": 300,
                "silence_duration_ms": self.silence_duration_ms,
            },
        }
        if self.noise_reduction:
            audio_input["noise_reduction"] = {"type": self.noise_reduction}
        return {"type": "transcription", "audio": {"input": audio_input}}

    async def transcribe(self, audio: bytes, config: STTConfig | None = None) -> STTResult:
        """Transcribe one WAV utterance through a realtime session; the finals joined."""
        pcm = wav_to_stt_pcm(audio)
        texts = [
            r.text async for r in self.transcribe_stream(one_piece(pcm), config) if r.is_final and r.text
        ]
        return STTResult(
            text=" ".join(texts),
            language=(config.language if config else None) or self.language,
            duration_s=len(pcm) / 2 / STT_RATE,
            end_of_utterance=True,
        )

    async def transcribe_stream(
        self, audio: AsyncIterable[bytes], config: STTConfig | None = None
    ) -> AsyncIterator[STTResult]:
        """Interim (delta) and final results while PCM16 mono 16 kHz audio arrives.

        Only opening the session is retried: audio already sent cannot be replayed.
        """
        language = (config.language if config else None) or self.language
        session = self.session(config)
        async with AsyncExitStack() as stack:
            connection = await call_with_retries(lambda: self._open(stack, session), self.retry)
            sender = asyncio.create_task(self._send_audio(connection, audio), name="openai-realtime-send")
            state = _Transcripts(language)
            receiver = Receiver(connection.recv, sender, self.timeout_s)
            commit_sent = acknowledged = False
            try:
                while True:
                    if _finished(sender):
                        # Commit once at the end: speech in progress is transcribed, and the answer (an item
                        # committed, or "nothing to commit") tells that all the audio sent was heard.
                        if not commit_sent:
                            commit_sent = True
                            await self._guard(connection.input_audio_buffer.commit())
                        elif acknowledged and not state.pending:
                            break
                    try:
                        event = await receiver.next()
                    except TimeoutError as exc:
                        if commit_sent and not state.pending:
                            log.info("no answer to the final commit; ending", extra={"provider": PROVIDER})
                            break
                        raise map_error(exc, self.timeout_s) from exc
                    except Exception as exc:
                        if sender.done() and not sender.cancelled() and sender.exception() is exc:
                            raise
                        if is_closed_ok(exc):
                            raise truncated_stream(PROVIDER, "every utterance was transcribed") from exc
                        raise map_error(exc, self.timeout_s) from exc
                    if event is SENDER_DONE:
                        continue
                    kind = getattr(event, "type", None)
                    if kind == "error":
                        error = getattr(event, "error", None)
                        if commit_sent and str(getattr(error, "code", "")) in _BENIGN_AT_END:
                            acknowledged = True
                            continue
                        raise _event_error(error)
                    if commit_sent and kind == "input_audio_buffer.committed" and state.speaking:
                        acknowledged = (
                            True  # the service's VAD commits only after speech_stopped: this is ours
                        )
                    for result in state.feed(event):
                        yield result
            finally:
                await receiver.aclose()
                failure = await stop_task(sender)
            if failure is not None:
                raise failure

    async def _open(self, stack: AsyncExitStack, session: dict[str, Any]) -> Any:
        manager = self._sdk().realtime.connect(extra_query={"intent": "transcription"})
        try:
            connection = await asyncio.wait_for(stack.enter_async_context(manager), self.timeout_s)
            await connection.session.update(session=session)  # type: ignore[arg-type]
        except Exception as exc:
            raise map_error(exc, self.timeout_s) from exc
        return connection

    async def _send_audio(self, connection: Any, audio: AsyncIterable[bytes]) -> None:
        """Resample to 24 kHz and append as it arrives; a failing source raises its own error."""
        from llmrtc.audio.codec import Resampler

        resampler = Resampler(STT_RATE, REALTIME_RATE)
        async for piece in audio:
            pcm = resampler.process(piece)
            if pcm:
                await self._append(connection, pcm)
        tail = resampler.flush()
        if tail:
            await self._append(connection, tail)

    async def _append(self, connection: Any, pcm: bytes) -> None:
        await self._guard(connection.input_audio_buffer.append(audio=base64.b64encode(pcm).decode("ascii")))

    async def _guard(self, call: Any) -> None:
        try:
            await call
        except Exception as exc:
            raise map_error(exc, self.timeout_s) from exc


def _finished(task: asyncio.Task[None]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None


class _Transcripts:
    """Follows the session's utterances (speech, committed items, deltas) and yields results."""

    def __init__(self, language: str | None) -> None:
        self.language = language
        self.speaking = False
        self.pending: set[str] = set()
        self.text: dict[str, str] = {}
        self.spans: dict[str, list[float]] = {}
        """Item id -> [start, end] of its speech in seconds (from the VAD events), for ``duration_s``."""

    def feed(self, event: Any) -> list[STTResult]:
        kind = getattr(event, "type", "")
        if kind == "input_audio_buffer.speech_started":
            self.speaking = True
            self.spans[event.item_id] = [event.audio_start_ms / 1000, event.audio_start_ms / 1000]
        elif kind == "input_audio_buffer.speech_stopped":
            self.speaking = False
            if event.item_id in self.spans:
                self.spans[event.item_id][1] = event.audio_end_ms / 1000
        elif kind == "input_audio_buffer.committed":
            self.speaking = False
            self.pending.add(event.item_id)
        elif kind == "conversation.item.input_audio_transcription.delta":
            self.pending.add(event.item_id)
            text = self.text.get(event.item_id, "") + (event.delta or "")
            self.text[event.item_id] = text
            if text.strip():
                return [STTResult(text=text.strip(), is_final=False, language=self.language)]
        elif kind == "conversation.item.input_audio_transcription.completed":
            self.pending.discard(event.item_id)
            self.text.pop(event.item_id, None)
            span = self.spans.pop(event.item_id, None)
            duration = round(span[1] - span[0], 3) if span and span[1] > span[0] else None
            text = (event.transcript or "").strip()
            if text:
                return [
                    STTResult(
                        text=text,
                        is_final=True,
                        language=self.language,
                        end_of_utterance=True,
                        duration_s=duration,
                    )
                ]
        elif kind == "conversation.item.input_audio_transcription.failed":
            self.pending.discard(event.item_id)
            self.text.pop(event.item_id, None)
            self.spans.pop(event.item_id, None)
            error = getattr(event, "error", None)
            log.warning(
                "an utterance could not be transcribed: %s",
                getattr(error, "message", None) or error,
                extra={"provider": PROVIDER, "item_id": event.item_id},
            )
        return []


__all__ = ["REALTIME_RATE", "OpenAIRealtimeSTTProvider", "map_error"]
