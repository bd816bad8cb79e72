"""Any OpenAI-compatible endpoint (vLLM, llama.cpp server, LocalAI, Kokoro/openedai-speech, speaches, ...).

The OpenAI providers pointed at ``base_url``: the key is optional (local servers ignore it), the model is
whatever the server serves, and the request shapes stay OpenAI's (``max_tokens`` rather than OpenAI's newer
``max_completion_tokens``, which most compatible servers do not know).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from llmrtc.errors import ConfigError
from llmrtc.providers.openai import OPENAI_PCM_RATE, OpenAILLMProvider, OpenAISTTProvider, OpenAITTSProvider
from llmrtc.providers.resilience import RetryPolicy

if TYPE_CHECKING:
    from openai import AsyncOpenAI

#: Sent when the server needs no key (the SDK insists on one).
NO_KEY = "not-needed"


def _require_base_url(name: str, base_url: str | None) -> str:
    if not base_url:
        raise ConfigError(f"{name}: base_url is required (the endpoint's URL, e.g. http://localhost:8000/v1)")
    return base_url


class OpenAICompatibleLLMProvider(OpenAILLMProvider):
    """Chat completions on any OpenAI-compatible server, chosen by ``base_url`` alone."""

    name = "openai-compatible"
    max_tokens_field = "max_tokens"

    def __init__(
        self,
        base_url: str | None = None,
        model: str = "default",
        api_key: str | None = None,
        *,
        timeout_s: float = 120.0,
        retry: RetryPolicy | None = None,
        default_headers: Mapping[str, str] | None = None,
        stream_usage: bool = True,
        client: AsyncOpenAI | None = None,
    ) -> None:
        self.stream_usage = stream_usage
        super().__init__(
            api_key=api_key or NO_KEY,
            model=model,
            base_url=_require_base_url(self.name, base_url) if client is None else base_url,
            timeout_s=timeout_s,
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
        timeout_s: float = 120.0,
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
            retry=retry,
            default_headers=default_headers,
            client=client,
        )


class OpenAICompatibleTTSProvider(OpenAITTSProvider):
    """``/audio/speech`` on any OpenAI-compatible server. ``response_format`` and ``sample_rate`` must match
    what the server sends (``pcm`` at 24 kHz like OpenAI by default; ``wav``/``mp3`` are decoded)."""

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
        sample_rate: int = OPENAI_PCM_RATE,
        timeout_s: float = 120.0,
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
            timeout_s=timeout_s,
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
