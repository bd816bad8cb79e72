"""Provider clients share the process's one TLS context (no CA bundle loaded per client or per room)."""

from __future__ import annotations

import ssl
from typing import Any

import pytest

from llmrtc.providers._tls import shared_ssl_context
from llmrtc.providers.anthropic import AnthropicLLMProvider
from llmrtc.providers.openai import OpenAILLMProvider, OpenAISTTProvider, OpenAITTSProvider


def test_clients_reuse_one_context(monkeypatch: pytest.MonkeyPatch) -> None:
    shared = shared_ssl_context()
    made: list[Any] = []
    real = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        made.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    for _ in range(3):  # three rooms' worth of providers
        OpenAILLMProvider(api_key="k")
        OpenAISTTProvider(api_key="k")
        OpenAITTSProvider(api_key="k")
        AnthropicLLMProvider(api_key="k")._sdk()
    assert made == [], "no client built a TLS context of its own"
    assert shared_ssl_context() is shared
