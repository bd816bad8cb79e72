"""Faster-Whisper STT: through an OpenAI-compatible transcription server, or in-process.

``FasterWhisperSTTProvider`` posts the utterance to ``{base_url}/v1/audio/transcriptions`` as
faster-whisper-server / speaches do (the reference's ``FASTER_WHISPER_URL``). ``FasterWhisperLocalSTTProvider``
runs the ``faster-whisper`` library in this process (``pip install 'llmrtc[faster-whisper]'``); the model is
a path to a CTranslate2 Whisper directory or a model name the library can fetch, as the user gives it.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from llmrtc.audio.codec import decode_audio
from llmrtc.errors import CodecError, ConfigError, InvalidRequestError, ProviderError
from llmrtc.providers._http import (
    TRANSPORT_ERRORS,
    SessionHolder,
    join_url,
    map_transport_error,
    raise_for_status,
)
from llmrtc.providers._lazy import LoadedOnce
from llmrtc.providers._validate import json_object
from llmrtc.providers.base import STTProvider
from llmrtc.providers.resilience import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    RetryPolicy,
    call_with_retries,
    check_timeouts,
    retry_policy,
)
from llmrtc.types import STTConfig, STTResult

log = logging.getLogger("llmrtc.providers.faster_whisper")

FASTER_WHISPER_BASE_URL = "http://localhost:8000"
DEFAULT_SERVER_MODEL = "Systran/faster-whisper-small"
WHISPER_RATE = 16000


def transcription_url(base_url: str) -> str:
    """``…/v1/audio/transcriptions`` for a server root or a ``…/v1`` base URL."""
    base = base_url.rstrip("/")
    if base.endswith("/audio/transcriptions"):
        return base
    if not base.endswith("/v1"):
        base += "/v1"
    return join_url(base, "/audio/transcriptions")


class FasterWhisperSTTProvider(STTProvider):
    """A faster-whisper transcription server speaking OpenAI's ``/v1/audio/transcriptions``."""

    name = "faster-whisper"

    def __init__(
        self,
        base_url: str = FASTER_WHISPER_BASE_URL,
        model: str = DEFAULT_SERVER_MODEL,
        language: str | None = None,
        *,
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        check_timeouts(timeout_s, connect_timeout_s)
        self.base_url = base_url
        self.url = transcription_url(base_url)
        self.model = model
        self.language = language
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.retry = retry_policy(retry, max_retries)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = SessionHolder(timeout_s, headers, connect_timeout_s=connect_timeout_s)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def transcribe(self, audio: bytes, config: STTConfig | None = None) -> STTResult:
        cfg = config or STTConfig()
        language = cfg.language or self.language
        fields: dict[str, str] = {"model": cfg.model or self.model, "response_format": "verbose_json"}
        if language:
            fields["language"] = language
        if cfg.prompt:
            fields["prompt"] = cfg.prompt
        if cfg.temperature is not None:
            fields["temperature"] = str(cfg.temperature)

        async def once() -> STTResult:
            form = aiohttp.FormData()
            form.add_field("file", audio, filename="audio.wav", content_type="audio/wav")
            for key, value in fields.items():
                form.add_field(key, value)
            try:
                async with self._http.get().post(self.url, data=form) as resp:
                    await raise_for_status(self.name, resp)
                    body = await resp.read()
                    content_type = resp.headers.get("Content-Type")
            except TRANSPORT_ERRORS as exc:
                raise map_transport_error(self.name, exc, self.timeout_s) from exc
            data = json_object(self.name, body, content_type, required={"text": str})
            duration = data.get("duration")
            return STTResult(
                text=data["text"].strip(),
                language=data.get("language") or language,
                duration_s=float(duration) if isinstance(duration, (int, float)) else None,
            )

        return await call_with_retries(once, self.retry)


FasterWhisperProvider = FasterWhisperSTTProvider
"""The reference's name: ``FasterWhisperProvider(base_url="http://localhost:8000")`` is the server client."""


def wav_to_float32_16k(audio: bytes) -> np.ndarray:
    """Mono float32 samples in [-1, 1] at 16 kHz from PCM WAV bytes (what Whisper wants)."""
    pcm = decode_audio(audio, "wav", WHISPER_RATE)
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


class FasterWhisperLocalSTTProvider(STTProvider):
    """faster-whisper in this process. ``model`` is a CTranslate2 Whisper directory (``model.bin``,
    ``config.json``, ``tokenizer.json``) or a model name (``small``, ``distil-large-v3``) the library can fetch;
    ``local_files_only=True`` never touches the network."""

    name = "faster-whisper-local"

    def __init__(
        self,
        model: str | Path,
        language: str | None = None,
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        beam_size: int = 1,
        vad_filter: bool = False,
        cpu_threads: int = 0,
        num_workers: int = 1,
        download_root: str | None = None,
        local_files_only: bool = False,
    ) -> None:
        text = str(model).strip()
        if not text:
            raise ConfigError(
                "faster-whisper-local: give a model path or name (e.g. 'small' or /models/whisper)"
            )
        self.model_ref = text
        self.language = language
        self.device = device
        self.compute_type = compute_type
        self.beam_size = beam_size
        self.vad_filter = vad_filter
        self.cpu_threads = cpu_threads
        self.num_workers = max(1, num_workers)
        self.download_root = download_root
        self.local_files_only = local_files_only
        self._model: LoadedOnce[Any] = LoadedOnce(self._load)
        self._slots = asyncio.Semaphore(self.num_workers)

    async def init(self) -> None:
        await self._model.get()

    async def aclose(self) -> None:
        self._model.drop()

    def _load(self) -> Any:
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise ConfigError(
                "in-process Faster-Whisper needs faster-whisper: pip install 'llmrtc[faster-whisper]'"
            ) from exc
        path = Path(self.model_ref).expanduser()
        is_path = self.model_ref.startswith(("/", ".", "~")) or path.exists()
        if is_path and not path.exists():
            raise ConfigError(
                f"faster-whisper-local: model directory {path} does not exist; give the path to a CTranslate2 "
                "Whisper model (model.bin, config.json, tokenizer.json) or a model name such as 'small'"
            )
        if is_path and not (path / "model.bin").is_file():
            raise ConfigError(
                f"faster-whisper-local: {path} is not a CTranslate2 Whisper model (no model.bin in it); "
                "convert one with ct2-transformers-converter or give a model name"
            )
        try:
            return WhisperModel(
                str(path) if is_path else self.model_ref,
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=self.cpu_threads,
                num_workers=self.num_workers,
                download_root=self.download_root,
                local_files_only=self.local_files_only,
            )
        except Exception as exc:
            log.warning(
                "faster-whisper model failed to load", extra={"provider": self.name, "model": self.model_ref}
            )
            raise ConfigError(
                f"faster-whisper-local: could not load model {self.model_ref!r} ({type(exc).__name__}: {exc}). "
                "Give a local CTranslate2 Whisper directory, or a model name with network access to fetch it."
            ) from exc

    def _run(self, model: Any, samples: np.ndarray, language: str | None, cfg: STTConfig) -> STTResult:
        segments, info = model.transcribe(
            samples,
            language=language,
            beam_size=self.beam_size,
            vad_filter=self.vad_filter,
            initial_prompt=cfg.prompt,
            temperature=cfg.temperature if cfg.temperature is not None else 0.0,
            condition_on_previous_text=False,
            without_timestamps=True,
        )
        text = "".join(segment.text for segment in segments).strip()
        return STTResult(
            text=text,
            language=getattr(info, "language", None) or language,
            confidence=getattr(info, "language_probability", None),
            duration_s=getattr(info, "duration", None),
        )

    async def transcribe(self, audio: bytes, config: STTConfig | None = None) -> STTResult:
        cfg = config or STTConfig()
        try:
            samples = wav_to_float32_16k(audio)
        except CodecError as exc:
            raise InvalidRequestError(
                f"audio must be a 16-bit WAV (or another PCM WAV): {exc}", provider=self.name
            ) from exc
        model = await self._model.get()
        async with self._slots:
            try:
                return await asyncio.to_thread(self._run, model, samples, cfg.language or self.language, cfg)
            except Exception as exc:
                raise ProviderError(
                    f"transcription failed: {type(exc).__name__}: {exc}", provider=self.name
                ) from exc


__all__ = [
    "DEFAULT_SERVER_MODEL",
    "FASTER_WHISPER_BASE_URL",
    "FasterWhisperLocalSTTProvider",
    "FasterWhisperProvider",
    "FasterWhisperSTTProvider",
    "transcription_url",
    "wav_to_float32_16k",
]
