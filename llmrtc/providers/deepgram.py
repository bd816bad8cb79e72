"""Deepgram: streaming speech to text over the live WebSocket, and Aura text to speech, through the official SDK.

:class:`DeepgramSTTProvider` opens ``/v1/listen`` (``linear16`` at 16 kHz, ``interim_results``,
``endpointing``, ``utterance_end_ms``, ``vad_events``) with ``deepgram-sdk``'s ``listen.v1.connect``, sends the
audio as it arrives (``KeepAlive`` while the source is silent, ``CloseStream`` at the end) and turns
``Results`` into :class:`STTResult`: interim (``is_final=False``), final, and ``end_of_utterance`` from
``speech_final`` or an ``UtteranceEnd`` message. Words keep their timings (seconds from the start of the stream).

:class:`DeepgramTTSProvider` posts to ``/v1/speak`` with ``speak.v1.audio.generate`` asking for raw
``linear16`` at :attr:`sample_rate` and yields the PCM as it streams; its ``speak_text_stream`` feeds the
pieces of one answer to the ``/v1/speak`` WebSocket (``Speak`` messages, one ``Flush`` at the end).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterable, AsyncIterator, Awaitable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from llmrtc.errors import ConfigError, ProviderError, ProviderResponseError
from llmrtc.providers._errors import connection_error, error_from_status, timeout_error, truncated_stream
from llmrtc.providers._realtime import (
    STT_RATE,
    is_closed_ok,
    one_piece,
    pump,
    receive_or_sender_failure,
    socket_error,
    stop_task,
    wav_to_stt_pcm,
)
from llmrtc.providers.base import STTCapabilities, STTProvider, TTSCapabilities, TTSProvider
from llmrtc.providers.resilience import RetryPolicy, call_with_retries, stream_with_retries
from llmrtc.types import STTConfig, STTResult, TTSChunk, TTSConfig, WordTiming

if TYPE_CHECKING:
    from deepgram import AsyncDeepgramClient

log = logging.getLogger("llmrtc.providers.deepgram")

PROVIDER = "deepgram"
DEFAULT_BASE_URL = "https://api.deepgram.com"


def _client(api_key: str, base_url: str, ws_base_url: str | None, timeout_s: float) -> AsyncDeepgramClient:
    try:
        from deepgram import AsyncDeepgramClient
        from deepgram.environment import DeepgramClientEnvironment
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ConfigError("Deepgram needs the 'deepgram' extra: pip install 'llmrtc[deepgram]'") from exc
    if ws_base_url is None:
        ws_base_url = "ws" + base_url[4:] if base_url.startswith("http") else base_url
    environment = DeepgramClientEnvironment(
        base=base_url, production=ws_base_url, agent=ws_base_url, agent_rest=base_url
    )
    return AsyncDeepgramClient(api_key=api_key, environment=environment, timeout=timeout_s)


def map_error(exc: BaseException, timeout_s: float | None = None) -> ProviderError:
    """Any Deepgram SDK, socket or HTTP failure as an :mod:`llmrtc.errors` error."""
    if isinstance(exc, ProviderError):
        return exc
    from deepgram.core.api_error import ApiError

    if isinstance(exc, ApiError) and exc.status_code is not None:
        headers = exc.headers or {}
        return error_from_status(
            PROVIDER, exc.status_code, _body_message(exc.body), headers.get("retry-after")
        )
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return timeout_error(PROVIDER, timeout_s)
    if isinstance(exc, httpx.HTTPError):
        return connection_error(PROVIDER, exc)
    return socket_error(PROVIDER, exc, timeout_s)


def _body_message(body: Any) -> str:
    if isinstance(body, dict):
        for key in ("err_msg", "message", "reason", "description", "err_code"):
            if body.get(key):
                return str(body[key])
    return str(body or "")


class DeepgramSTTProvider(STTProvider):
    """Deepgram live transcription: interim results, endpointing and word timings as the speaker talks."""

    name = PROVIDER
    capabilities = STTCapabilities(streaming=True, interim_results=True, word_timestamps=True)

    def __init__(
        self,
        api_key: str | None = None,
        model: str = "nova-3",
        language: str | None = "en",
        base_url: str | None = None,
        ws_base_url: str | None = None,
        endpointing_ms: int | None = 300,
        utterance_end_ms: int | None = 1000,
        interim_results: bool = True,
        smart_format: bool = True,
        keepalive_s: float = 5.0,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.api_key = api_key or os.environ.get("DEEPGRAM_API_KEY")
        if not self.api_key:
            raise ConfigError("Deepgram needs an API key: pass api_key or set DEEPGRAM_API_KEY")
        if utterance_end_ms is not None and not interim_results:
            raise ConfigError("Deepgram's utterance_end_ms needs interim_results=True")
        self.model = model
        self.language = language
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.ws_base_url = ws_base_url.rstrip("/") if ws_base_url else None
        self.endpointing_ms = endpointing_ms
        self.utterance_end_ms = utterance_end_ms
        self.interim_results = interim_results
        self.smart_format = smart_format
        self.keepalive_s = keepalive_s
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self._sdk: AsyncDeepgramClient | None = None

    def _client(self) -> AsyncDeepgramClient:
        if self._sdk is None:
            assert self.api_key is not None
            self._sdk = _client(self.api_key, self.base_url, self.ws_base_url, self.timeout_s)
        return self._sdk

    def listen_options(self, config: STTConfig | None = None) -> dict[str, Any]:
        """The query options of the live socket (what ``listen.v1.connect`` sends)."""
        language = (config.language if config else None) or self.language
        options: dict[str, Any] = {
            "model": (config.model if config else None) or self.model,
            "encoding": "linear16",
            "sample_rate": STT_RATE,
            "channels": 1,
            "interim_results": "true" if self.interim_results else "false",
            "punctuate": "true",
            "smart_format": "true" if self.smart_format else "false",
            "vad_events": "true",
            "endpointing": self.endpointing_ms if self.endpointing_ms is not None else "false",
        }
        if self.utterance_end_ms is not None:
            options["utterance_end_ms"] = self.utterance_end_ms
        if language:
            options["language"] = language
        return options

    async def aclose(self) -> None:
        if self._sdk is not None:
            http = getattr(getattr(self._sdk, "_client_wrapper", None), "httpx_client", None)
            inner = getattr(http, "httpx_client", None)
            if inner is not None:
                await inner.aclose()
            self._sdk = None

    async def transcribe(self, audio: bytes, config: STTConfig | None = None) -> STTResult:
        """Transcribe one WAV utterance by streaming it through the live socket; the finals joined."""
        pcm = wav_to_stt_pcm(audio)
        texts: list[str] = []
        words: list[WordTiming] = []
        confidences: list[float] = []
        async for result in self.transcribe_stream(one_piece(pcm), config):
            if result.is_final and result.text:
                texts.append(result.text)
                words.extend(result.words)
                if result.confidence is not None:
                    confidences.append(result.confidence)
        return STTResult(
            text=" ".join(texts),
            is_final=True,
            language=(config.language if config else None) or self.language,
            confidence=min(confidences) if confidences else None,
            duration_s=len(pcm) / 2 / STT_RATE,
            words=words,
            end_of_utterance=True,
        )

    async def transcribe_stream(
        self, audio: AsyncIterable[bytes], config: STTConfig | None = None
    ) -> AsyncIterator[STTResult]:
        """Interim and final results while PCM16 mono 16 kHz audio arrives.

        Only opening the socket is retried: audio already sent cannot be replayed.
        """
        options = self.listen_options(config)
        async with AsyncExitStack() as stack:
            socket = await call_with_retries(lambda: self._open(stack, options), self.retry)
            sender = asyncio.create_task(self._send_audio(socket, audio), name="deepgram-send")
            results = _ResultAssembler(options.get("language"))
            try:
                while True:
                    try:
                        message = await receive_or_sender_failure(socket.recv, sender, self.timeout_s)
                    except Exception as exc:
                        if is_closed_ok(exc):
                            break
                        if sender.done() and not sender.cancelled() and sender.exception() is exc:
                            raise
                        raise map_error(exc, self.timeout_s) from exc
                    for result in results.feed(message):
                        yield result
            finally:
                failure = await stop_task(sender)
            if failure is not None:
                raise failure
            if not results.closed_cleanly(sender):
                raise truncated_stream(PROVIDER, "the end of the audio was acknowledged")
            tail = results.finish()
            if tail is not None:
                yield tail

    async def _open(self, stack: AsyncExitStack, options: dict[str, Any]) -> Any:
        connect = self._client().listen.v1.connect(**options)
        try:
            return await asyncio.wait_for(stack.enter_async_context(connect), self.timeout_s)
        except Exception as exc:
            raise map_error(exc, self.timeout_s) from exc

    async def _send_audio(self, socket: Any, audio: AsyncIterable[bytes]) -> None:
        """Feed the audio; a failing source raises its own error, a failing socket a mapped one."""

        async def send(piece: bytes) -> None:
            if piece:
                await self._guard(socket.send_media(bytes(piece)))

        async def keep_alive() -> None:
            await self._guard(socket.send_keep_alive())

        await pump(audio, send, idle_s=self.keepalive_s, on_idle=keep_alive)
        await self._guard(socket.send_close_stream())

    async def _guard(self, call: Awaitable[None]) -> None:
        try:
            await call
        except Exception as exc:
            raise map_error(exc, self.timeout_s) from exc


class _ResultAssembler:
    """Turns live messages into results; ``end_of_utterance`` is reported once per utterance."""

    def __init__(self, language: str | None) -> None:
        self.language = language
        self.open_utterance = False
        self.saw_metadata = False

    def feed(self, message: Any) -> list[STTResult]:
        kind = getattr(message, "type", None)
        if kind == "Results":
            return self._results(message)
        if kind == "UtteranceEnd":
            return self._end_of_utterance()
        if kind == "Metadata":
            self.saw_metadata = True
        elif kind == "Error":
            description = getattr(message, "description", None) or getattr(message, "message", None)
            raise ProviderResponseError(f"Deepgram error: {description or message}", provider=PROVIDER)
        elif isinstance(message, dict):
            log.debug("unknown live message", extra={"provider": PROVIDER, "type": message.get("type")})
        return []

    def _results(self, message: Any) -> list[STTResult]:
        alternatives = message.channel.alternatives
        if not alternatives:
            return []
        best = alternatives[0]
        text = (best.transcript or "").strip()
        words = [
            WordTiming(text=w.punctuated_word or w.word, start_s=float(w.start), end_s=float(w.end))
            for w in best.words or []
        ]
        out: list[STTResult] = []
        if not message.is_final:
            if text:
                out.append(
                    STTResult(
                        text=text,
                        is_final=False,
                        language=self.language,
                        confidence=best.confidence,
                        words=words,
                    )
                )
            return out
        if text:
            self.open_utterance = not message.speech_final
            out.append(
                STTResult(
                    text=text,
                    is_final=True,
                    language=self.language,
                    confidence=best.confidence,
                    duration_s=float(message.duration),
                    words=words,
                    end_of_utterance=bool(message.speech_final),
                )
            )
        elif message.speech_final:
            out.extend(self._end_of_utterance())
        return out

    def _end_of_utterance(self) -> list[STTResult]:
        if not self.open_utterance:
            return []
        self.open_utterance = False
        return [STTResult(text="", is_final=True, language=self.language, end_of_utterance=True)]

    def closed_cleanly(self, sender: asyncio.Task[None]) -> bool:
        """The socket closed after all audio was sent (Deepgram closes once it answered ``CloseStream``)."""
        return sender.done() and not sender.cancelled() and sender.exception() is None

    def finish(self) -> STTResult | None:
        """The closing ``end_of_utterance`` when the stream ended inside an utterance."""
        ends = self._end_of_utterance()
        return ends[0] if ends else None


# ---------------------------------------------------------------------------------------------- TTS


class DeepgramTTSProvider(TTSProvider):
    """Deepgram Aura voices: HTTP streaming for one text, the ``/v1/speak`` WebSocket for streamed text."""

    name = PROVIDER
    capabilities = TTSCapabilities(streaming=True, input_streaming=True)

    def __init__(
        self,
        api_key: str | None = None,
        model: str = "aura-2-thalia-en",
        sample_rate: int = 24000,
        base_url: str | None = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.api_key = api_key or os.environ.get("DEEPGRAM_API_KEY")
        if not self.api_key:
            raise ConfigError("Deepgram needs an API key: pass api_key or set DEEPGRAM_API_KEY")
        self.model = model
        self.sample_rate = sample_rate
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self._sdk: AsyncDeepgramClient | None = None

    def _client(self) -> AsyncDeepgramClient:
        if self._sdk is None:
            assert self.api_key is not None
            self._sdk = _client(self.api_key, self.base_url, None, self.timeout_s)
        return self._sdk

    async def aclose(self) -> None:
        if self._sdk is not None:
            http = getattr(getattr(self._sdk, "_client_wrapper", None), "httpx_client", None)
            inner = getattr(http, "httpx_client", None)
            if inner is not None:
                await inner.aclose()
            self._sdk = None

    async def speak_stream(self, text: str, config: TTSConfig | None = None) -> AsyncIterator[TTSChunk]:
        """Synthesize ``text``, yielding PCM16 at :attr:`sample_rate` as it arrives."""
        if not text.strip():
            return
        model = ((config.voice or config.model) if config else None) or self.model
        async for chunk in stream_with_retries(lambda: self._once(text, model, config), self.retry):
            yield chunk

    async def _once(self, text: str, model: str, config: TTSConfig | None) -> AsyncIterator[TTSChunk]:
        odd = b""
        client = self._client()
        try:
            audio = client.speak.v1.audio.generate(
                text=text,
                model=model,
                encoding="linear16",
                container="none",
                sample_rate=self.sample_rate,
                **({"speed": config.speed} if config is not None and config.speed is not None else {}),
                request_options={"max_retries": 0},
            )
            async for piece in audio:
                data = odd + piece
                cut = len(data) - len(data) % 2
                data, odd = data[:cut], data[cut:]
                if data:
                    yield TTSChunk(pcm=data, sample_rate=self.sample_rate)
        except Exception as exc:
            raise map_error(exc, self.timeout_s) from exc
        if odd:
            raise ProviderResponseError("audio ended inside a sample", provider=PROVIDER)

    async def speak_text_stream(
        self, texts: AsyncIterable[str], config: TTSConfig | None = None
    ) -> AsyncIterator[TTSChunk]:
        """Speak the pieces of one answer as they arrive on one ``/v1/speak`` socket (``Speak`` per piece,
        one ``Flush`` at the end, as Deepgram asks for LLM output); audio starts before the text ends.

        Only opening the socket is retried: text already consumed cannot be replayed.
        """
        model = ((config.voice or config.model) if config else None) or self.model
        options: dict[str, Any] = {"model": model, "encoding": "linear16", "sample_rate": self.sample_rate}
        if config is not None and config.speed is not None:
            options["speed"] = config.speed
        async with AsyncExitStack() as stack:
            socket = await call_with_retries(lambda: self._open_speak(stack, options), self.retry)
            sender = asyncio.create_task(self._send_texts(socket, texts), name="deepgram-speak-send")
            odd = b""
            flushed = False
            try:
                while not flushed:
                    try:
                        message = await receive_or_sender_failure(socket.recv, sender, self.timeout_s)
                    except Exception as exc:
                        if sender.done() and not sender.cancelled() and sender.exception() is exc:
                            raise
                        if is_closed_ok(exc):
                            raise truncated_stream(PROVIDER, "Flushed") from exc
                        raise map_error(exc, self.timeout_s) from exc
                    if isinstance(message, bytes):
                        data = odd + message
                        cut = len(data) - len(data) % 2
                        data, odd = data[:cut], data[cut:]
                        if data:
                            yield TTSChunk(pcm=data, sample_rate=self.sample_rate)
                        continue
                    kind = _kind(message)
                    if kind == "Flushed":
                        flushed = True
                    elif kind == "Warning":
                        log.warning(
                            "Deepgram warning: %s",
                            _field(message, "description"),
                            extra={"provider": PROVIDER, "code": _field(message, "code")},
                        )
                    elif kind == "Error":
                        raise ProviderResponseError(
                            f"Deepgram error: {_field(message, 'description') or message}", provider=PROVIDER
                        )
            finally:
                failure = await stop_task(sender)
            if failure is not None:
                raise failure
            try:
                await socket.send_close()
            except Exception as exc:  # the answer is complete; a failing goodbye changes nothing
                log.debug("closing the speak socket failed: %s", exc, extra={"provider": PROVIDER})

    async def _open_speak(self, stack: AsyncExitStack, options: dict[str, Any]) -> Any:
        connect = self._client().speak.v1.connect(**options)
        try:
            return await asyncio.wait_for(stack.enter_async_context(connect), self.timeout_s)
        except Exception as exc:
            raise map_error(exc, self.timeout_s) from exc

    async def _send_texts(self, socket: Any, texts: AsyncIterable[str]) -> None:
        from deepgram.speak.v1.types import SpeakV1Text

        async for text in texts:
            if text:
                await self._guard(socket.send_text(SpeakV1Text(type="Speak", text=text)))
        await self._guard(socket.send_flush())

    async def _guard(self, call: Awaitable[None]) -> None:
        try:
            await call
        except Exception as exc:
            raise map_error(exc, self.timeout_s) from exc


def _kind(message: Any) -> Any:
    return message.get("type") if isinstance(message, dict) else getattr(message, "type", None)


def _field(message: Any, name: str) -> Any:
    return message.get(name) if isinstance(message, dict) else getattr(message, name, None)


__all__ = ["DeepgramSTTProvider", "DeepgramTTSProvider", "map_error"]
