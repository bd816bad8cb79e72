"""OpenRouter on the wire: OpenAI's format with OpenRouter's attribution headers and ``vendor/model`` names."""

from __future__ import annotations

import base64
import os

import pytest

from llmrtc.errors import (
    AuthenticationError,
    ConfigError,
    InvalidRequestError,
    ProviderError,
    ProviderServerError,
    RateLimitError,
)
from llmrtc.providers.openrouter import OPENROUTER_BASE_URL, OpenRouterLLMProvider
from llmrtc.providers.registry import create_llm_from_env
from llmrtc.providers.resilience import RetryPolicy
from llmrtc.types import LLMRequest, Message, ToolCallRequest, ToolDefinition, VisionAttachment
from tests.providers.conftest import Closer
from tests.providers.fakes.openai import ChatTurn, Failure, FakeOpenAI, ToolCall

LOOKUP = ToolDefinition(
    name="lookup_order", parameters={"type": "object", "properties": {"id": {"type": "string"}}}
)


def router(
    server: FakeOpenAI, retry: RetryPolicy, closing: Closer, key: str = "sk-test"
) -> OpenRouterLLMProvider:
    return closing(
        OpenRouterLLMProvider(
            api_key=key,
            model="anthropic/claude-sonnet-4.5",
            site_url="https://myapp.example",
            site_name="My App",
            base_url=server.base_url,
            retry=retry,
        )
    )


async def test_site_headers_model_and_streamed_tools(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer
) -> None:
    fake_openai.push_chat(
        ChatTurn(text="Looking.", tool_calls=[ToolCall("t1", "lookup_order", {"id": "A-17"})])
    )
    provider = router(fake_openai, fast_retry, closing)
    chunks = [
        c
        async for c in provider.stream(
            LLMRequest(messages=[Message.user("order A-17?")], tools=[LOOKUP], max_tokens=99)
        )
    ]
    assert chunks[-1].tool_calls == [
        ToolCallRequest(call_id="t1", name="lookup_order", arguments={"id": "A-17"})
    ]
    sent = fake_openai.requests[0]
    assert sent.headers["HTTP-Referer"] == "https://myapp.example"
    assert sent.headers["X-Title"] == "My App"
    assert sent.headers["Authorization"] == "Bearer sk-test"
    assert sent.body["model"] == "anthropic/claude-sonnet-4.5"
    assert sent.body["max_tokens"] == 99 and "max_completion_tokens" not in sent.body


async def test_complete_with_image(fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer) -> None:
    fake_openai.push_chat(ChatTurn(text="A chart of sales."))
    provider = router(fake_openai, fast_retry, closing)
    att = VisionAttachment(data=base64.b64encode(b"png-bytes").decode(), mime_type="image/png")
    result = await provider.complete(LLMRequest(messages=[Message.user("describe", attachments=[att])]))
    assert result.full_text == "A chart of sales." and result.stop_reason == "end_turn"
    sent = fake_openai.requests[0]
    assert sent.headers["X-Title"] == "My App" and "stream" not in sent.body
    assert sent.body["messages"][0]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": att.data_url()},
    }


async def test_errors(fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer) -> None:
    with pytest.raises(AuthenticationError):
        await router(fake_openai, fast_retry, closing, key="bad").complete(
            LLMRequest(messages=[Message.user("x")])
        )
    provider = router(fake_openai, fast_retry, closing)
    fake_openai.push_chat(*[Failure(429, "credits", retry_after="0")] * 3)
    with pytest.raises(RateLimitError):
        await provider.complete(LLMRequest(messages=[Message.user("x")]))
    fake_openai.push_chat(*[Failure(502, "upstream")] * 3)
    with pytest.raises(ProviderServerError):
        await provider.complete(LLMRequest(messages=[Message.user("x")]))
    assert len(fake_openai.requests) == 1 + 3 + 3


@pytest.mark.parametrize(
    ("code", "expected", "retryable"),
    [(429, RateLimitError, True), (502, ProviderServerError, True), (400, InvalidRequestError, False)],
)
async def test_in_stream_error_with_status_code(
    fake_openai: FakeOpenAI,
    fast_retry: RetryPolicy,
    closing: Closer,
    code: int,
    expected: type[Exception],
    retryable: bool,
) -> None:
    """OpenRouter's mid-stream error: a chunk with ``error: {code, message}`` and finish_reason "error"."""
    chunk = {
        "id": "gen-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "anthropic/claude-sonnet-4.5",
        "error": {"code": code, "message": "Provider returned error"},
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
    }
    fake_openai.push_chat(ChatTurn(text="partial answer", stream_error=chunk, error_after=2))
    provider = router(fake_openai, fast_retry, closing)
    with pytest.raises(ProviderError) as info:
        async for _ in provider.stream(LLMRequest(messages=[Message.user("x")])):
            pass
    assert type(info.value) is expected and info.value.retryable is retryable
    assert info.value.status_code == code and info.value.provider == "openrouter"


def test_defaults_and_env(closing: Closer) -> None:
    with pytest.raises(ConfigError, match="OPENROUTER_API_KEY"):
        OpenRouterLLMProvider(api_key=None)
    llm = closing(
        create_llm_from_env(
            {
                "OPENROUTER_API_KEY": "sk-or",
                "OPENROUTER_SITE_URL": "https://a.example",
                "OPENROUTER_SITE_NAME": "A",
            }
        )
    )
    assert isinstance(llm, OpenRouterLLMProvider)
    assert llm.base_url == OPENROUTER_BASE_URL and (llm.site_url, llm.site_name) == ("https://a.example", "A")


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("OPENROUTER_API_KEY"), reason="OPENROUTER_API_KEY not set")
async def test_live_openrouter(closing: Closer) -> None:
    provider = closing(
        OpenRouterLLMProvider(api_key=os.environ["OPENROUTER_API_KEY"], model="openai/gpt-4o-mini")
    )
    result = await provider.complete(LLMRequest(messages=[Message.user("Say 'pong'.")], max_tokens=10))
    assert "pong" in result.full_text.lower()
