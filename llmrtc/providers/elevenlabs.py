"""ElevenLabs text to speech: HTTP streaming, and input streaming on one multi-context WebSocket per session.

:meth:`ElevenLabsTTSProvider.speak_stream` posts one text to ``/v1/text-to-speech/{voice}/stream`` through
the official SDK and yields audio as it arrives. :meth:`ElevenLabsTTSProvider.speak_text_stream` feeds text
pieces, as an LLM produces them, to ``/v1/text-to-speech/{voice}/multi-stream-input``: one socket for the
provider's lifetime (reused across turns, kept alive between them, reopened when the service closed it), one
context per turn (see :mod:`llmrtc.providers._elevenlabs_socket`). Its audio carries the service's character
alignment, turned into :class:`~llmrtc.types.WordTiming` on each :class:`~llmrtc.types.TTSChunk`. Either way
the output is PCM16 mono at :attr:`sample_rate` (or the call's ``TTSConfig.sample_rate``): ``pcm_*`` formats
pass through (asked at the wanted rate when the service has it), ``mp3_*`` is decoded as it streams,
``ulaw_8000``/``alaw_8000`` are expanded, anything else is resampled.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import re
import urllib.parse
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from llmrtc.errors import CodecError, ConfigError, ProviderError, ProviderResponseError
from llmrtc.providers._audio import at_rate
from llmrtc.providers._elevenlabs_socket import (
    PROVIDER,
    Context,
    ElevenLabsSocket,
    map_socket_error,
    message_error,
)
from llmrtc.providers._errors import connection_error, error_from_status, mapped_errors, timeout_error
from llmrtc.providers._validate import checked_audio
from llmrtc.providers.base import TTSCapabilities, TTSProvider
from llmrtc.providers.resilience import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    RetryPolicy,
    call_with_retries,
    check_timeouts,
    retry_policy,
    stream_with_retries,
)
from llmrtc.types import TTSChunk, TTSConfig, TTSResult, WordTiming

if TYPE_CHECKING:
    from elevenlabs.client import AsyncElevenLabs

log = logging.getLogger("llmrtc.providers.elevenlabs")

DEFAULT_BASE_URL = "https://api.elevenlabs.io"
_CODECS = ("pcm", "mp3", "ulaw", "alaw")
#: The ``pcm_<rate>`` rates the service sends.
PCM_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
#: ``TTSConfig.format`` values :meth:`ElevenLabsTTSProvider.speak` asks of the service itself, by rate.
_NATIVE_FILES = {("mp3", 44100): "mp3_44100_128", ("mp3", 22050): "mp3_22050_32"}
_SENTENCE_END = (".", "!", "?", ";", ":", "\n")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?;:])\s+")
_BREAKS = (" ", "\n", "\t", ".", ",", "!", "?", ";", ":", ")", "]", "}", "—", "-")


def parse_output_format(output_format: str) -> tuple[str, int]:
    """``("pcm", 24000)`` for ``"pcm_24000"``; ``("mp3", 44100)`` for ``"mp3_44100_128"``."""
    parts = output_format.lower().split("_")
    if len(parts) < 2 or parts[0] not in _CODECS or not parts[1].isdigit():
        raise ConfigError(
            f"unsupported ElevenLabs output_format {output_format!r}: use pcm_<rate> (preferred, e.g. pcm_24000), "
            "mp3_<rate>_<kbps>, ulaw_8000 or alaw_8000"
        )
    return parts[0], int(parts[1])


class _SourceFailed(Exception):
    """The text source (typically an LLM stream) failed: its error is the caller's, never retried here."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class _Replay:
    """A one-shot text stream that a retried turn can read again from the start.

    One task reads the source (typically an LLM stream) for all attempts, so a failed attempt that is
    cancelled while waiting for the next piece never cancels the source itself.
    """

    def __init__(self, source: AsyncIterable[str]) -> None:
        self._source = source
        self._seen: list[str] = []
        self._done = False
        self._error: BaseException | None = None
        self._changed = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        try:
            async for text in self._source:
                self._seen.append(text)
                self._wake()
        except Exception as exc:
            self._error = exc
        finally:
            self._done = True
            self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def iterate(self) -> AsyncIterator[str]:
        """Every piece so far, then the rest as it arrives; a failing source raises :class:`_SourceFailed`."""
        if self._pump is None:
            self._pump = asyncio.create_task(self._read(), name="elevenlabs-text-source")
        index = 0
        while True:
            if index < len(self._seen):
                index += 1
                yield self._seen[index - 1]
                continue
            if self._done:
                if self._error is not None:
                    raise _SourceFailed(self._error)
                return
            await self._changed.wait()

    async def aclose(self) -> None:
        """Stop reading the source (the turn is over, or was cut off)."""
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)


class ElevenLabsTTSProvider(TTSProvider):
    """ElevenLabs voices over HTTP streaming and realtime WebSocket input streaming."""

    name = PROVIDER
    capabilities = TTSCapabilities(streaming=True, input_streaming=True)

    def __init__(
        self,
        api_key: str | None = None,
        voice_id: str = "21m00Tcm4TlvDq8ikWAM",
        model_id: str = "eleven_flash_v2_5",
        output_format: str = "pcm_24000",
        base_url: str | None = None,
        ws_base_url: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        voice_settings: Mapping[str, Any] | None = None,
        chunk_length_schedule: list[int] | None = None,
        *,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        max_retries: int | None = None,
        keepalive_s: float = 10.0,
        inactivity_timeout_s: int = 60,
    ) -> None:
        self.api_key = api_key or os.environ.get("ELEVENLABS_API_KEY")
        if not self.api_key:
            raise ConfigError("ElevenLabs needs an API key: pass api_key or set ELEVENLABS_API_KEY")
        check_timeouts(timeout_s, connect_timeout_s)
        if not 0 < keepalive_s < inactivity_timeout_s <= 180:
            raise ConfigError(
                "ElevenLabs: keepalive_s must be positive and below inactivity_timeout_s, which is at most 180"
            )
        self.codec, self.sample_rate = parse_output_format(output_format)
        self.voice_id = voice_id
        self.model_id = model_id
        self.output_format = output_format
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        # The realtime socket lives on the same host with a ws(s) scheme unless told otherwise.
        if ws_base_url is None:
            parsed = urllib.parse.urlparse(self.base_url)
            ws_base_url = parsed._replace(scheme="ws" if parsed.scheme == "http" else "wss").geturl()
        self.ws_base_url = ws_base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.retry = retry_policy(retry, max_retries)
        self.voice_settings = dict(voice_settings or {"stability": 0.5, "similarity_boost": 0.75})
        self.chunk_length_schedule = chunk_length_schedule
        self.keepalive_s = keepalive_s
        self.inactivity_timeout_s = inactivity_timeout_s
        self._client: AsyncElevenLabs | None = None
        self._socket: ElevenLabsSocket | None = None
        self._socket_lock = asyncio.Lock()
        self._idle_tasks: set[asyncio.Task[None]] = set()

    def _sdk(self) -> AsyncElevenLabs:
        if self._client is None:
            try:
                import httpx
                from elevenlabs.client import AsyncElevenLabs
            except ImportError as exc:  # pragma: no cover - depends on the installed extras
                raise ConfigError(
                    "ElevenLabs needs the 'elevenlabs' extra: pip install 'llmrtc[elevenlabs]'"
                ) from exc
            http = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s))
            self._client = AsyncElevenLabs(api_key=self.api_key, base_url=self.base_url, httpx_client=http)
        return self._client

    async def aclose(self) -> None:
        for task in list(self._idle_tasks):
            task.cancel()
        await asyncio.gather(*self._idle_tasks, return_exceptions=True)
        if self._socket is not None:
            await self._socket.aclose()
            self._socket = None
        if self._client is not None:
            wrapper = getattr(self._client, "_client_wrapper", None)
            http = getattr(getattr(wrapper, "httpx_client", None), "httpx_client", None)
            if http is not None:
                await http.aclose()
            self._client = None

    def _settings(self, config: TTSConfig | None) -> tuple[str, str, dict[str, Any]]:
        settings = dict(self.voice_settings)
        if config is not None and config.speed is not None:
            settings["speed"] = max(0.7, min(1.2, config.speed))  # the range ElevenLabs accepts
        voice = (config.voice if config else None) or self.voice_id
        model = (config.model if config else None) or self.model_id
        return voice, model, settings

    def _wire(self, config: TTSConfig | None) -> tuple[str, str, int]:
        """The ``output_format`` to ask for, its codec and rate: raw PCM at the call's rate when the service
        sends that rate, else the configured format (resampled locally)."""
        rate = config.sample_rate if config is not None else None
        if rate is not None and rate != self.sample_rate and self.codec == "pcm" and rate in PCM_RATES:
            return f"pcm_{rate}", "pcm", rate
        return self.output_format, self.codec, self.sample_rate

    # ------------------------------------------------------------------------------------------ HTTP

    async def speak_stream(self, text: str, config: TTSConfig | None = None) -> AsyncIterator[TTSChunk]:
        """Synthesize ``text`` over HTTP streaming, yielding PCM as it arrives."""
        if not text.strip():
            return
        voice, model, settings = self._settings(config)
        output_format, codec, rate = self._wire(config)
        wanted = (config.sample_rate if config else None) or self.sample_rate

        def once() -> AsyncIterator[TTSChunk]:
            return self._http_once(text, voice, model, settings, output_format, codec, rate)

        chunks = at_rate(stream_with_retries(once, self.retry), wanted)
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()

    async def speak(self, text: str, config: TTSConfig | None = None) -> TTSResult:
        """The whole speech; ``TTSConfig(format="mp3")`` at 44.1 or 22.05 kHz (or no rate) comes from the
        service as MP3 itself, other formats are encoded locally."""
        cfg = config or TTSConfig()
        native = _NATIVE_FILES.get((cfg.format or "", cfg.sample_rate or 44100))
        if native is None or not text.strip():
            return await super().speak(text, cfg)
        voice, model, settings = self._settings(cfg)

        async def once() -> bytes:
            return b"".join([piece async for piece in self._http_body(text, voice, model, settings, native)])

        audio = await call_with_retries(once, self.retry)
        return TTSResult(audio=audio, format="mp3", sample_rate=parse_output_format(native)[1])

    async def _http_body(
        self, text: str, voice: str, model: str, settings: dict[str, Any], output_format: str
    ) -> AsyncIterator[bytes]:
        from elevenlabs import VoiceSettings

        with mapped_errors(map_error):
            async with self._sdk().text_to_speech.with_raw_response.stream(
                voice,
                text=text,
                model_id=model,
                output_format=output_format,
                voice_settings=VoiceSettings(**settings),
                request_options={"max_retries": 0},
            ) as response:
                async for piece in checked_audio(
                    PROVIDER, response.data, response.headers.get("content-type")
                ):
                    yield piece

    async def _http_once(
        self,
        text: str,
        voice: str,
        model: str,
        settings: dict[str, Any],
        output_format: str,
        codec: str,
        rate: int,
    ) -> AsyncIterator[TTSChunk]:
        decoder = _Decoder(codec, rate)
        with mapped_errors(map_error):
            async for piece in self._http_body(text, voice, model, settings, output_format):
                pcm = decoder.feed(piece)
                if pcm:
                    yield TTSChunk(pcm=pcm, sample_rate=rate)
            tail = decoder.flush()
        if tail:
            yield TTSChunk(pcm=tail, sample_rate=rate)

    # ------------------------------------------------------------------------------------------ WebSocket

    def stream_input_url(self, voice: str, model: str, output_format: str | None = None) -> str:
        """The multi-context input-streaming socket's URL for a voice, model and output format."""
        query = urllib.parse.urlencode(
            {
                "model_id": model,
                "output_format": output_format or self.output_format,
                "inactivity_timeout": self.inactivity_timeout_s,
            }
        )
        voice_path = urllib.parse.quote(voice, safe="")
        return f"{self.ws_base_url}/v1/text-to-speech/{voice_path}/multi-stream-input?{query}"

    async def speak_text_stream(
        self, texts: AsyncIterable[str], config: TTSConfig | None = None
    ) -> AsyncIterator[TTSChunk]:
        """Speak text pieces as they arrive, on the session's socket; audio starts before the text ends.

        A failure before any audio (the service closing the socket right after connecting, say) is retried on
        a fresh socket with the text read so far replayed; once audio reached the caller it is surfaced. A
        failing text source raises its own error, untouched. Each chunk carries the words the service timed
        in it (seconds from the start of this call).
        """
        voice, model, settings = self._settings(config)
        output_format, codec, rate = self._wire(config)
        wanted = (config.sample_rate if config else None) or self.sample_rate
        init: dict[str, Any] = {"voice_settings": settings}
        if self.chunk_length_schedule:
            init["generation_config"] = {"chunk_length_schedule": self.chunk_length_schedule}
        key = (voice, model, output_format)
        source = _Replay(texts)

        def once() -> AsyncIterator[TTSChunk]:
            return self._turn(source.iterate(), key, init, codec, rate)

        chunks = at_rate(stream_with_retries(once, self.retry), wanted)
        try:
            async for chunk in chunks:
                yield chunk
        except _SourceFailed as failed:
            raise failed.error from None
        finally:
            await chunks.aclose()  # a barge-in ends the turn's context now
            await source.aclose()

    async def _session_socket(self, key: tuple[str, str, str]) -> ElevenLabsSocket:
        """The session's socket for ``key``, opened (again) when there is none, it closed, or ``key`` changed."""
        async with self._socket_lock:
            current = self._socket
            if current is not None and current.usable and current.key == key:
                return current
            if current is not None:
                if current.usable:
                    log.info("voice/model/format changed: new realtime socket", extra={"provider": PROVIDER})
                await current.aclose()
                self._socket = None
            assert self.api_key is not None
            self._socket = await ElevenLabsSocket.open(
                self.stream_input_url(*key),
                self.api_key,
                key,
                connect_timeout_s=self.connect_timeout_s,
                keepalive_s=self.keepalive_s,
            )
            return self._socket

    async def _turn(
        self,
        texts: AsyncIterator[str],
        key: tuple[str, str, str],
        init: dict[str, Any],
        codec: str,
        rate: int,
    ) -> AsyncIterator[TTSChunk]:
        socket = await self._session_socket(key)
        context = await socket.open_context(init)
        sender = asyncio.create_task(self._feed(socket, context, texts), name="elevenlabs-ws-send")
        decoder = _Decoder(codec, rate)
        samples = 0
        finished = False
        try:
            while True:
                message = await self._next(context, sender)
                if message.get("isFinal"):
                    finished = True
                    break
                words = _words(message, samples / rate)
                audio = message.get("audio")
                if not audio:
                    if message.get("error") or message.get("message"):
                        raise message_error(message)
                    continue
                try:
                    pcm = decoder.feed(base64.b64decode(audio))
                except (binascii.Error, ValueError) as exc:
                    raise ProviderResponseError(f"audio is not base64: {exc}", provider=PROVIDER) from exc
                except CodecError as exc:
                    raise map_error(exc) from exc
                samples += len(pcm) // 2
                if pcm or words:
                    yield TTSChunk(pcm=pcm, sample_rate=rate, words=words)
        finally:
            if not sender.done():
                sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            socket.release(context)
            if not finished:  # a barge-in, a failure: the context ends, the socket stays for the next turn
                await socket.close_context(context.id)
        tail = decoder.flush()
        if tail:
            yield TTSChunk(pcm=tail, sample_rate=rate)
        task = asyncio.create_task(socket.prepare_idle(init), name="elevenlabs-ws-idle")
        self._idle_tasks.add(task)
        task.add_done_callback(self._idle_tasks.discard)

    async def _next(self, context: Context, sender: asyncio.Task[None]) -> dict[str, Any]:
        """The context's next message. While text is still being fed the service may rightly be silent; once
        it is all sent, each message must come within ``timeout_s``. A failed feed raises its error."""
        get = asyncio.ensure_future(context.queue.get())
        try:
            if not sender.done():
                await asyncio.wait({get, sender}, return_when=asyncio.FIRST_COMPLETED)
            if not get.done() and sender.done() and not sender.cancelled() and sender.exception() is not None:
                raise sender.exception()  # type: ignore[misc]
            if not get.done():
                await asyncio.wait({get}, timeout=self.timeout_s)
            if not get.done():
                raise timeout_error(PROVIDER, self.timeout_s)
            item = get.result()
        finally:
            if not get.done():
                get.cancel()
        if isinstance(item, ProviderError):
            raise item
        return item

    async def _feed(self, socket: ElevenLabsSocket, context: Context, texts: AsyncIterator[str]) -> None:
        """Send the text as word-complete pieces (a finished sentence is flushed), then flush and close the
        context so the service answers ``isFinal`` once all of it is spoken."""
        chunker = _TextChunker()
        async for text in texts:
            for piece in chunker.push(text):
                await socket.send(_text_message(piece, context.id))
        rest = chunker.finish()
        end: dict[str, Any] = {"context_id": context.id, "flush": True}
        if rest:
            end["text"] = rest
        await socket.send(end)
        await socket.send({"context_id": context.id, "close_context": True})


# ---------------------------------------------------------------------------------------------- helpers


class _TextChunker:
    """Turns arbitrary text pieces into word-complete pieces ending in a space, as the socket wants them."""

    def __init__(self) -> None:
        self._buf = ""

    def push(self, text: str) -> list[str]:
        self._buf += text
        cut = max(self._buf.rfind(ch) for ch in _BREAKS)
        if cut < 0:
            return []
        head, self._buf = self._buf[: cut + 1], self._buf[cut + 1 :]
        return [part + " " for part in _SENTENCE_SPLIT.split(head.strip()) if part]

    def finish(self) -> str:
        rest, self._buf = self._buf.strip(), ""
        return rest + " " if rest else ""


def _text_message(piece: str, context_id: str) -> dict[str, Any]:
    message: dict[str, Any] = {"text": piece, "context_id": context_id}
    if piece.rstrip().endswith(_SENTENCE_END):
        message["flush"] = True  # a finished sentence: speak it now rather than wait for more text
    return message


def _words(message: dict[str, Any], offset_s: float) -> tuple[WordTiming, ...]:
    """The words of a message's character ``alignment`` (else ``normalizedAlignment``), timed in seconds from
    the start of the call (``offset_s`` is how much audio came before this message)."""
    alignment = message.get("alignment") or message.get("normalizedAlignment")
    if not isinstance(alignment, dict):
        return ()
    chars = alignment.get("chars") or []
    starts = alignment.get("charStartTimesMs") or []
    durations = alignment.get("charDurationsMs") or []
    if not (len(chars) == len(starts) == len(durations)):
        log.warning("alignment lists differ in length; words skipped", extra={"provider": PROVIDER})
        return ()
    words: list[WordTiming] = []
    text = ""
    first = last = 0.0
    for char, start, duration in zip(chars, starts, durations, strict=True):
        if str(char).isspace():
            if text:
                words.append(WordTiming(text, offset_s + first / 1000, offset_s + last / 1000))
            text = ""
            continue
        if not text:
            first = float(start)
        text += str(char)
        last = float(start) + float(duration)
    if text:
        words.append(WordTiming(text, offset_s + first / 1000, offset_s + last / 1000))
    return tuple(words)


def map_error(exc: BaseException) -> ProviderError:
    """The :mod:`llmrtc.errors` error for an exception from the SDK, httpx or websockets."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, CodecError):
        return ProviderResponseError(f"undecodable audio: {exc}", provider=PROVIDER, retryable=True)
    import httpx
    from elevenlabs.core.api_error import ApiError
    from websockets import exceptions as wse

    if isinstance(exc, ApiError):
        headers = exc.headers or {}
        retry_after = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
        return error_from_status(PROVIDER, int(exc.status_code or 500), _api_message(exc.body), retry_after)
    if isinstance(exc, wse.WebSocketException):
        return map_socket_error(exc)
    if isinstance(exc, httpx.TimeoutException | TimeoutError | asyncio.TimeoutError):
        return timeout_error(PROVIDER)
    if isinstance(exc, httpx.TransportError | OSError):
        return connection_error(PROVIDER, exc)
    return ProviderError(f"unexpected failure: {type(exc).__name__}: {exc}", provider=PROVIDER)


def _api_message(body: Any) -> str:
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except (json.JSONDecodeError, ValueError):
            return str(body)
    if isinstance(body, dict):
        detail = body.get("detail", body)
        if isinstance(detail, dict):
            status, message = detail.get("status"), detail.get("message")
            return f"{status}: {message}" if status and message else str(message or status or detail)
        return str(detail)
    return str(body)


class _Decoder:
    """Vendor audio bytes in, PCM16 mono bytes out, piece by piece."""

    def __init__(self, codec: str, sample_rate: int) -> None:
        self.codec = codec
        self._rest = b""
        self.sample_rate = sample_rate
        self._stream: Any = self._new_stream() if codec == "mp3" else None
        self._fed = False

    def _new_stream(self) -> Any:
        from llmrtc.audio.codec import StreamDecoder

        return StreamDecoder("mp3", out_rate=self.sample_rate, frame_ms=20, pad_last=False)

    def feed(self, data: bytes) -> bytes:
        if self._stream is not None:
            out = b""
            if self._fed and _starts_mp3_file(data):
                # A new MP3 file (ID3 tag or Xing/Info header) after a finished one: start a fresh decoder so
                # the first file's gapless length does not cut the second.
                out = b"".join(self._stream.flush())
                self._stream = self._new_stream()
            self._fed = True
            return out + b"".join(self._stream.feed(data))
        if self.codec in ("ulaw", "alaw"):
            return _expand_g711(data, self.codec)
        data = self._rest + data
        cut = len(data) - len(data) % 2
        self._rest = data[cut:]
        return data[:cut]

    def flush(self) -> bytes:
        if self._stream is not None:
            return b"".join(self._stream.flush())
        return b""


def _starts_mp3_file(data: bytes) -> bool:
    if data[:3] == b"ID3":
        return True
    is_frame = len(data) > 4 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0
    return is_frame and (b"Xing" in data[:64] or b"Info" in data[:64])


def _expand_g711(data: bytes, codec: str) -> bytes:
    """G.711 mu-law / A-law bytes to PCM16."""
    x = np.frombuffer(data, dtype=np.uint8).astype(np.int32)
    if codec == "ulaw":
        x = ~x & 0xFF
        sign, exponent, mantissa = x & 0x80, (x >> 4) & 0x07, x & 0x0F
        magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
        out = np.where(sign != 0, -magnitude, magnitude)
    else:
        x = x ^ 0x55
        sign, exponent, mantissa = x & 0x80, (x >> 4) & 0x07, x & 0x0F
        shifted = ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0)
        magnitude = np.where(exponent == 0, (mantissa << 4) + 8, shifted)
        out = np.where(sign != 0, magnitude, -magnitude)
    return bytes(out.astype("<i2").tobytes())


__all__ = ["PCM_RATES", "ElevenLabsTTSProvider", "map_error", "parse_output_format"]
