"""OpenRouter: many vendors' models behind one OpenAI-compatible API, with its attribution headers.

``site_url`` and ``site_name`` are sent as ``HTTP-Referer`` and ``X-Title`` (OpenRouter uses them for its
app rankings); models are named ``vendor/model`` (``anthropic/claude-sonnet-4.5``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmrtc.errors import ConfigError
from llmrtc.providers.openai import OpenAILLMProvider
from llmrtc.providers.resilience import DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_TIMEOUT_S, RetryPolicy

if TYPE_CHECKING:
    from openai import AsyncOpenAI

OPENROUTER_BASE_URL = "https://openrouter.ai/api/v1"
DEFAULT_OPENROUTER_MODEL = "anthropic/claude-sonnet-4.5"


class OpenRouterLLMProvider(OpenAILLMProvider):
    """Chat completions through OpenRouter (streaming, tools, vision where the routed model has them)."""

    name = "openrouter"
    max_tokens_field = "max_tokens"

    def __init__(
        self,
        api_key: str | None = None,
        model: str = DEFAULT_OPENROUTER_MODEL,
        site_url: str | None = None,
        site_name: str | None = None,
        base_url: str = OPENROUTER_BASE_URL,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
        client: AsyncOpenAI | None = None,
        vision: bool | None = None,
    ) -> None:
        headers: dict[str, str] = {}
        if site_url:
            headers["HTTP-Referer"] = site_url
        if site_name:
            headers["X-Title"] = site_name
        self.site_url = site_url
        self.site_name = site_name
        if not api_key and client is None:
            raise ConfigError("openrouter: an API key is required (pass api_key= or set OPENROUTER_API_KEY)")
        super().__init__(
            api_key=api_key,
            model=model,
            base_url=base_url,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            max_retries=max_retries,
            retry=retry,
            default_headers=headers,
            client=client,
            vision=vision,
        )


__all__ = ["DEFAULT_OPENROUTER_MODEL", "OPENROUTER_BASE_URL", "OpenRouterLLMProvider"]
