"""LM Studio's local server (OpenAI-compatible, default ``http://localhost:1234/v1``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmrtc.providers.ollama import model_sees_images
from llmrtc.providers.openai import OpenAILLMProvider
from llmrtc.providers.resilience import DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_TIMEOUT_S, RetryPolicy

if TYPE_CHECKING:
    from openai import AsyncOpenAI

LMSTUDIO_BASE_URL = "http://localhost:1234/v1"
DEFAULT_LMSTUDIO_MODEL = "local-model"


class LMStudioLLMProvider(OpenAILLMProvider):
    """The model loaded in LM Studio: streaming, tools and (for vision models) images, no key needed.

    ``vision``: whether the model takes images; unset, guessed from its name
    (:func:`llmrtc.providers.ollama.model_sees_images`).
    """

    name = "lmstudio"
    max_tokens_field = "max_tokens"

    def __init__(
        self,
        base_url: str = LMSTUDIO_BASE_URL,
        model: str = DEFAULT_LMSTUDIO_MODEL,
        api_key: str | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
        client: AsyncOpenAI | None = None,
        vision: bool | None = None,
    ) -> None:
        super().__init__(
            vision=model_sees_images(model) if vision is None else vision,
            api_key=api_key or "lm-studio",
            model=model,
            base_url=base_url,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            max_retries=max_retries,
            retry=retry,
            client=client,
        )


__all__ = ["DEFAULT_LMSTUDIO_MODEL", "LMSTUDIO_BASE_URL", "LMStudioLLMProvider"]
