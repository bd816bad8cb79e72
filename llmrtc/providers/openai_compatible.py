"""Any OpenAI-compatible endpoint (vLLM, llama.cpp server, LocalAI, Kokoro/openedai-speech, speaches, ...).

The OpenAI providers pointed at ``base_url``: the key is optional (local servers ignore it), the model is
whatever the server serves, and the request shapes stay OpenAI's (``max_tokens`` rather than OpenAI's newer
``max_completion_tokens``, which most compatible servers do not know).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from llmrtc.errors import ConfigError
from llmrtc.providers.openai import OPENAI_PCM_RATE, OpenAILLMProvider, OpenAISTTProvider, OpenAITTSProvider
from llmrtc.providers.resilience import DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_TIMEOUT_S, RetryPolicy

if TYPE_CHECKING:
    from openai import AsyncOpenAI

#: Sent when the server needs no key (the SDK insists on one).
NO_KEY = "not-needed"


def _require_base_url(name: str, base_url: str | None) -> str:
    if not base_url:
        raise ConfigError(f"{name}: base_url is required (the endpoint's URL, e.g. http://localhost:8000/v1)")
    return base_url


class OpenAICompatibleLLMProvider(OpenAILLMProvider):
    """Chat completions on any OpenAI-compatible server, chosen by ``base_url`` alone.

    ``vision``: whether the served model takes images (default True: the format carries them; pass False,
    or ``LLM_VISION=false``, for a text-only model so images are described by the vision provider).
    """

    name = "openai-compatible"
    max_tokens_field = "max_tokens"

    def __init__(
        self,
        base_url: str | None = None,
        model: str = "default",
        api_key: str | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
        default_headers: Mapping[str, str] | None = None,
        stream_usage: bool = True,
        client: AsyncOpenAI | None = None,
        vision: bool | None = None,
    ) -> None:
        self.stream_usage = stream_usage
        super().__init__(
            vision=vision,
            api_key=api_key or NO_KEY,
            model=model,
            base_url=_require_base_url(self.name, base_url) if client is None else base_url,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            max_retries=max_retries,
            retry=retry,
            default_headers=default_headers,
            client=client,
        )


class OpenAICompatibleSTTProvider(OpenAISTTProvider):
    """``/audio/transcriptions`` on any OpenAI-compatible server (faster-whisper-server, speaches, LocalAI)."""

    name = "openai-compatible-stt"

    def __init__(
        self,
        base_url: str | None = None,
        model: str = "whisper-1",
        api_key: str | None = None,
        language: str | None = None,
        *,
        response_format: str | None = "json",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
        default_headers: Mapping[str, str] | None = None,
        client: AsyncOpenAI | None = None,
    ) -> None:
        super().__init__(
            api_key=api_key or NO_KEY,
            model=model,
            language=language,
            base_url=_require_base_url(self.name, base_url) if client is None else base_url,
            response_format=response_format,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            max_retries=max_retries,
            retry=retry,
            default_headers=default_headers,
            client=client,
        )


class OpenAICompatibleTTSProvider(OpenAITTSProvider):
    """``/audio/speech`` on any OpenAI-compatible server (Kokoro-FastAPI, speaches, openedai-speech, LocalAI).

    ``response_format`` is what is asked of the server; raw ``pcm`` is taken to arrive at ``pcm_rate`` (24 kHz,
    as OpenAI and Kokoro send it); ``wav``/``mp3``/``opus``/``flac``/``aac`` carry their own rate. The PCM handed
    on is at ``sample_rate`` (default: ``pcm_rate``). ``extra_body`` adds the server's own JSON fields (e.g.
    Kokoro's ``lang_code``, speaches' ``sample_rate``). The registry fills these from ``TTS_FORMAT``,
    ``TTS_SAMPLE_RATE``, ``TTS_PCM_RATE`` and ``TTS_EXTRA_BODY``."""

    name = "openai-compatible-tts"

    def __init__(
        self,
        base_url: str | None = None,
        model: str = "tts-1",
        voice: str = "alloy",
        api_key: str | None = None,
        speed: float | None = None,
        *,
        response_format: str = "pcm",
        sample_rate: int | None = None,
        pcm_rate: int = OPENAI_PCM_RATE,
        extra_body: Mapping[str, Any] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
        default_headers: Mapping[str, str] | None = None,
        client: AsyncOpenAI | None = None,
    ) -> None:
        super().__init__(
            api_key=api_key or NO_KEY,
            model=model,
            voice=voice,
            speed=speed,
            base_url=_require_base_url(self.name, base_url) if client is None else base_url,
            response_format=response_format,
            sample_rate=sample_rate,
            pcm_rate=pcm_rate,
            extra_body=extra_body,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            max_retries=max_retries,
            retry=retry,
            default_headers=default_headers,
            client=client,
        )


__all__ = [
    "NO_KEY",
    "OpenAICompatibleLLMProvider",
    "OpenAICompatibleSTTProvider",
    "OpenAICompatibleTTSProvider",
]
