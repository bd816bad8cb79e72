"""ElevenLabs text to speech: HTTP streaming and WebSocket input streaming.

:meth:`ElevenLabsTTSProvider.speak_stream` posts one text to ``/v1/text-to-speech/{voice}/stream`` through
the official SDK and yields audio as it arrives. :meth:`ElevenLabsTTSProvider.speak_text_stream` keeps one
WebSocket on ``/v1/text-to-speech/{voice}/stream-input`` and feeds it text pieces as the LLM produces them
(``try_trigger_generation``, ``flush`` at sentence ends, ``""`` to finish), so speech starts before the
answer is complete. Either way the output is PCM16 mono at :attr:`sample_rate`: ``pcm_*`` formats pass
through, ``mp3_*`` is decoded with PyAV as it streams, ``ulaw_8000``/``alaw_8000`` are expanded.
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

from llmrtc.errors import (
    AuthenticationError,
    CodecError,
    ConfigError,
    InvalidRequestError,
    ProviderConnectionError,
    ProviderError,
    ProviderResponseError,
)
from llmrtc.providers._errors import connection_error, error_from_status, mapped_errors, timeout_error
from llmrtc.providers.base import TTSCapabilities, TTSProvider
from llmrtc.providers.resilience import RetryPolicy, call_with_retries, stream_with_retries
from llmrtc.types import TTSChunk, TTSConfig

if TYPE_CHECKING:
    from elevenlabs.client import AsyncElevenLabs

log = logging.getLogger("llmrtc.providers.elevenlabs")

PROVIDER = "elevenlabs"
DEFAULT_BASE_URL = "https://api.elevenlabs.io"
_CODECS = ("pcm", "mp3", "ulaw", "alaw")
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
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        voice_settings: Mapping[str, Any] | None = None,
        chunk_length_schedule: list[int] | None = None,
    ) -> None:
        self.api_key = api_key or os.environ.get("ELEVENLABS_API_KEY")
        if not self.api_key:
            raise ConfigError("ElevenLabs needs an API key: pass api_key or set ELEVENLABS_API_KEY")
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
        self.retry = retry or RetryPolicy()
        self.voice_settings = dict(voice_settings or {"stability": 0.5, "similarity_boost": 0.75})
        self.chunk_length_schedule = chunk_length_schedule
        self._client: AsyncElevenLabs | None = None

    def _sdk(self) -> AsyncElevenLabs:
        if self._client is None:
            try:
                from elevenlabs.client import AsyncElevenLabs
            except ImportError as exc:  # pragma: no cover - depends on the installed extras
                raise ConfigError(
                    "ElevenLabs needs the 'elevenlabs' extra: pip install 'llmrtc[elevenlabs]'"
                ) from exc
            self._client = AsyncElevenLabs(
                api_key=self.api_key, base_url=self.base_url, timeout=self.timeout_s
            )
        return self._client

    async def aclose(self) -> None:
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

    # ------------------------------------------------------------------------------------------ HTTP

    async def speak_stream(self, text: str, config: TTSConfig | None = None) -> AsyncIterator[TTSChunk]:
        """Synthesize ``text`` over HTTP streaming, yielding PCM as it arrives."""
        if not text.strip():
            return
        voice, model, settings = self._settings(config)
        async for chunk in stream_with_retries(
            lambda: self._http_once(text, voice, model, settings), self.retry
        ):
            yield chunk

    async def _http_once(
        self, text: str, voice: str, model: str, settings: dict[str, Any]
    ) -> AsyncIterator[TTSChunk]:
        from elevenlabs import VoiceSettings

        decoder = _Decoder(self.codec, self.sample_rate)
        with mapped_errors(map_error):
            audio = self._sdk().text_to_speech.stream(
                voice,
                text=text,
                model_id=model,
                output_format=self.output_format,
                voice_settings=VoiceSettings(**settings),
                request_options={"max_retries": 0},
            )
            async for piece in audio:
                pcm = decoder.feed(piece)
                if pcm:
                    yield TTSChunk(pcm=pcm, sample_rate=self.sample_rate)
        tail = decoder.flush()
        if tail:
            yield TTSChunk(pcm=tail, sample_rate=self.sample_rate)

    # ------------------------------------------------------------------------------------------ WebSocket

    def stream_input_url(self, voice: str, model: str) -> str:
        query = urllib.parse.urlencode({"model_id": model, "output_format": self.output_format})
        return (
            f"{self.ws_base_url}/v1/text-to-speech/{urllib.parse.quote(voice, safe='')}/stream-input?{query}"
        )

    async def speak_text_stream(
        self, texts: AsyncIterable[str], config: TTSConfig | None = None
    ) -> AsyncIterator[TTSChunk]:
        """Speak text pieces as they arrive on one realtime WebSocket; audio starts before the text ends.

        Only opening the socket is retried: once text has been consumed it cannot be replayed.
        """
        voice, model, settings = self._settings(config)
        url = self.stream_input_url(voice, model)
        ws = await call_with_retries(lambda: self._connect(url), self.retry)
        decoder = _Decoder(self.codec, self.sample_rate)
        sender = asyncio.create_task(self._send_texts(ws, texts, settings), name="elevenlabs-ws-send")
        finished = False
        try:
            while not finished:
                raw = await self._receive(ws, sender)
                if raw is None:
                    break
                message = _parse_message(raw)
                audio = message.get("audio")
                if audio:
                    try:
                        pcm = decoder.feed(base64.b64decode(audio))
                    except (binascii.Error, ValueError) as exc:
                        raise ProviderResponseError(f"audio is not base64: {exc}", provider=PROVIDER) from exc
                    if pcm:
                        yield TTSChunk(pcm=pcm, sample_rate=self.sample_rate)
                elif message.get("error") or (message.get("message") and not message.get("isFinal")):
                    raise _ws_message_error(message)
                finished = bool(message.get("isFinal"))
            if not finished:
                # The socket closed early: if feeding text failed, that failure is the story to tell.
                await asyncio.wait({sender}, timeout=2.0)
        except ProviderError:
            raise
        except Exception as exc:
            if _failed(sender):
                raise _sender_error(sender) from exc
            raise map_error(exc) from exc
        finally:
            if not sender.done():
                sender.cancel()
            await asyncio.wait({sender})
            _failed(sender)  # marks a failure as seen even when another error is being raised
            await ws.close()
        if not finished:
            if _failed(sender):
                raise _sender_error(sender)
            raise _closed_error(ws)
        tail = decoder.flush()
        if tail:
            yield TTSChunk(pcm=tail, sample_rate=self.sample_rate)

    async def _receive(self, ws: Any, sender: asyncio.Task[None]) -> str | bytes | None:
        """The next message, or ``None`` once the socket closed normally.

        While text is still being fed the service may rightly be silent; once all of it is sent, each
        message must come within ``timeout_s``.
        """
        from websockets.exceptions import ConnectionClosedOK

        recv = asyncio.ensure_future(ws.recv())
        try:
            done, _ = await asyncio.wait({recv, sender}, return_when=asyncio.FIRST_COMPLETED)
            if recv not in done:
                done, _ = await asyncio.wait({recv}, timeout=self.timeout_s)
            if recv not in done:
                raise timeout_error(PROVIDER, self.timeout_s)
            raw: str | bytes = recv.result()
            return raw
        except ConnectionClosedOK:
            return None
        finally:
            if not recv.done():
                recv.cancel()
                await asyncio.wait({recv})

    async def _connect(self, url: str) -> Any:
        from websockets.asyncio.client import connect

        assert self.api_key is not None
        try:
            return await connect(
                url,
                additional_headers={"xi-api-key": self.api_key},
                open_timeout=self.timeout_s,
                max_size=None,
            )
        except Exception as exc:
            raise map_error(exc) from exc

    async def _send_texts(self, ws: Any, texts: AsyncIterable[str], settings: dict[str, Any]) -> None:
        try:
            await self._send_all(ws, texts, settings)
        except Exception:
            # Close the socket so the receiving side stops waiting for audio that will never come.
            log.warning("text feed failed; closing the realtime socket", extra={"provider": PROVIDER})
            await ws.close(code=1000, reason="input failed")
            raise

    async def _send_all(self, ws: Any, texts: AsyncIterable[str], settings: dict[str, Any]) -> None:
        bos: dict[str, Any] = {"text": " ", "voice_settings": settings, "xi-api-key": self.api_key}
        if self.chunk_length_schedule:
            bos["generation_config"] = {"chunk_length_schedule": self.chunk_length_schedule}
        await ws.send(json.dumps(bos))
        chunker = _TextChunker()
        async for text in texts:
            for piece in chunker.push(text):
                await ws.send(json.dumps(_text_message(piece)))
        rest = chunker.finish()
        if rest:
            await ws.send(json.dumps({"text": rest, "flush": True}))
        await ws.send(json.dumps({"text": ""}))


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


def _text_message(piece: str) -> dict[str, Any]:
    message: dict[str, Any] = {"text": piece, "try_trigger_generation": True}
    if piece.rstrip().endswith(_SENTENCE_END):
        message["flush"] = True  # a finished sentence: speak it now rather than wait for more text
    return message


def _parse_message(raw: str | bytes) -> dict[str, Any]:
    try:
        message = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProviderResponseError(
            f"unreadable realtime message: {str(raw)[:200]!r}", provider=PROVIDER
        ) from exc
    if not isinstance(message, dict):
        raise ProviderResponseError("realtime message is not a JSON object", provider=PROVIDER)
    return message


def _ws_message_error(message: dict[str, Any]) -> ProviderError:
    text = str(message.get("message") or message.get("error") or message)
    code = message.get("code")
    return _close_code_error(int(code) if isinstance(code, int) else 1011, text)


def _close_code_error(code: int, reason: str) -> ProviderError:
    reason = reason or f"closed with code {code}"
    lowered = reason.lower()
    if code == 1008 and ("key" in lowered or "auth" in lowered or "unauthori" in lowered):
        log.warning("realtime socket refused the credentials", extra={"provider": PROVIDER, "ws_code": code})
        return AuthenticationError(f"authentication failed: {reason}", provider=PROVIDER)
    if code == 1008 or code == 1007:
        return InvalidRequestError(f"invalid request: {reason}", provider=PROVIDER)
    if code == 1013 or "rate" in lowered or "too many" in lowered:
        return error_from_status(PROVIDER, 429, reason)
    if code in (1011, 1012, 1014):
        return error_from_status(PROVIDER, 500, reason)
    return connection_error(PROVIDER, f"realtime socket closed ({code}): {reason}")


def _closed_error(ws: Any) -> ProviderError:
    code = getattr(ws, "close_code", None)
    reason = getattr(ws, "close_reason", None) or ""
    if code in (None, 1000, 1001, 1005, 1006):
        return ProviderConnectionError(
            f"the realtime socket closed before the final message (code {code})", provider=PROVIDER
        )
    return _close_code_error(int(code), reason)


def _sender_error(task: asyncio.Task[None]) -> BaseException:
    """What made the text feed fail (for example the LLM stream that produced the text), as it was raised."""
    exc = task.exception()
    assert exc is not None
    return exc


def _failed(task: asyncio.Task[None]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is not None


def map_error(exc: BaseException) -> ProviderError:
    """The :mod:`llmrtc.errors` error for an exception from the SDK, httpx or websockets."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, CodecError):
        return ProviderResponseError(f"undecodable audio: {exc}", provider=PROVIDER)
    import httpx
    from elevenlabs.core.api_error import ApiError
    from websockets import exceptions as wse

    if isinstance(exc, ApiError):
        headers = exc.headers or {}
        retry_after = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
        return error_from_status(PROVIDER, int(exc.status_code or 500), _api_message(exc.body), retry_after)
    if isinstance(exc, wse.InvalidStatus):
        response = exc.response
        body = response.body.decode("utf-8", "replace") if response.body else ""
        return error_from_status(
            PROVIDER, response.status_code, _api_message(body), response.headers.get("Retry-After")
        )
    if isinstance(exc, wse.ConnectionClosed):
        rcvd = exc.rcvd
        if rcvd is not None and rcvd.code not in (1000, 1001, 1006):
            return _close_code_error(rcvd.code, rcvd.reason)
        return connection_error(PROVIDER, f"realtime socket dropped: {exc}")
    if isinstance(exc, httpx.TimeoutException | TimeoutError | asyncio.TimeoutError):
        return timeout_error(PROVIDER)
    if isinstance(exc, httpx.TransportError | wse.WebSocketException | OSError):
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


__all__ = ["ElevenLabsTTSProvider", "map_error", "parse_output_format"]
