"""Anthropic on the wire: the real ``anthropic`` SDK against a local Messages API speaking SSE."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator

import pytest

from llmrtc.errors import (
    AuthenticationError,
    ConfigError,
    ProviderConnectionError,
    ProviderServerError,
    ProviderTimeoutError,
    RateLimitError,
)
from llmrtc.providers.anthropic import AnthropicLLMProvider
from llmrtc.providers.resilience import RetryPolicy
from llmrtc.types import (
    LLMRequest,
    Message,
    ToolCallRequest,
    ToolChoiceName,
    VisionAttachment,
)
from tests.providers.fakes.anthropic import Failure, FakeAnthropic, ToolUse, Turn
from tests.providers.helpers import FAST, WEATHER, collect, serving, stream_until_error


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with serving(FakeAnthropic()) as server:
        yield server


@pytest.fixture
async def llm(fake: FakeAnthropic) -> AsyncIterator[AnthropicLLMProvider]:
    provider = AnthropicLLMProvider(api_key="sk-ant-test", base_url=fake.base_url, retry=FAST, timeout_s=10)
    yield provider
    await provider.aclose()


async def test_complete_sends_system_and_messages(fake: FakeAnthropic, llm: AnthropicLLMProvider) -> None:
    fake.push(Turn(text="Hello there.", input_tokens=30, output_tokens=4))
    result = await llm.complete(
        LLMRequest(
            messages=[Message.system("Be brief."), Message.user("Hi", name="alice")],
            temperature=0.3,
            max_tokens=100,
        )
    )
    assert result.full_text == "Hello there."
    assert result.stop_reason == "end_turn"
    assert result.usage is not None and result.usage.input_tokens == 30 and result.usage.output_tokens == 4
    sent = fake.requests[0]
    assert sent.path == "/v1/messages"
    assert sent.headers["Authorization"] == "Bearer sk-ant-test"
    assert sent.body["system"] == "Be brief."
    assert sent.body["model"] == "claude-sonnet-5-5"
    assert sent.body["max_tokens"] == 100
    assert sent.body["temperature"] == 0.3
    assert sent.body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "alice: Hi"}]}]
    assert "stream" not in sent.body or sent.body["stream"] is False


async def test_stream_text(fake: FakeAnthropic, llm: AnthropicLLMProvider) -> None:
    fake.push(Turn(text="one two three four", output_tokens=9))
    chunks = await collect(llm, LLMRequest(messages=[Message.user("count")]))
    assert "".join(c.content for c in chunks) == "one two three four"
    assert len([c for c in chunks if c.content]) == 4
    last = chunks[-1]
    assert last.done and last.stop_reason == "end_turn"
    assert last.usage is not None and last.usage.output_tokens == 9 and last.usage.input_tokens == 12
    assert fake.requests[0].body["stream"] is True


async def test_complete_tool_call_and_tool_payloads(fake: FakeAnthropic, llm: AnthropicLLMProvider) -> None:
    fake.push(Turn(text="Checking.", tool_uses=[ToolUse("toolu_1", "get_weather", {"city": "Paris"})]))
    result = await llm.complete(
        LLMRequest(messages=[Message.user("Weather in Paris?")], tools=[WEATHER], tool_choice="required")
    )
    assert result.stop_reason == "tool_use"
    assert result.tool_calls == [
        ToolCallRequest(call_id="toolu_1", name="get_weather", arguments={"city": "Paris"})
    ]
    body = fake.requests[0].body
    assert body["tools"] == [
        {"name": "get_weather", "description": "Weather for a city", "input_schema": WEATHER.parameters}
    ]
    assert body["tool_choice"] == {"type": "any"}


async def test_tool_history_becomes_tool_use_and_tool_result_blocks(
    fake: FakeAnthropic, llm: AnthropicLLMProvider
) -> None:
    fake.push(Turn(text="It is sunny."))
    call = ToolCallRequest(call_id="toolu_1", name="get_weather", arguments={"city": "Paris"})
    messages = [
        Message.user("Weather in Paris?"),
        Message.assistant("", tool_calls=[call]),
        Message.tool('{"sky": "sunny"}', tool_call_id="toolu_1", tool_name="get_weather"),
    ]
    await llm.complete(
        LLMRequest(messages=messages, tools=[WEATHER], tool_choice=ToolChoiceName(name="get_weather"))
    )
    body = fake.requests[0].body
    assert body["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
    }
    assert body["messages"][2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": '{"sky": "sunny"}'}],
    }
    assert body["tool_choice"] == {"type": "tool", "name": "get_weather"}


async def test_stream_tool_calls_assembled_from_input_json_deltas(
    fake: FakeAnthropic, llm: AnthropicLLMProvider
) -> None:
    args = {"city": "San Francisco", "unit": "celsius", "days": 3}
    fake.push(
        Turn(
            text="Let me look.",
            tool_uses=[
                ToolUse("toolu_a", "get_weather", args),
                ToolUse("toolu_b", "get_weather", {"city": "Oslo"}),
            ],
        )
    )
    chunks = await collect(llm, LLMRequest(messages=[Message.user("weather?")], tools=[WEATHER]))
    deltas = [d for c in chunks for d in c.tool_call_deltas]
    assert len([d for d in deltas if d.arguments_delta]) > 4  # arguments really arrived in pieces
    last = chunks[-1]
    assert last.done and last.stop_reason == "tool_use"
    assert last.tool_calls == [
        ToolCallRequest(call_id="toolu_a", name="get_weather", arguments=args),
        ToolCallRequest(call_id="toolu_b", name="get_weather", arguments={"city": "Oslo"}),
    ]
    assert "".join(c.content for c in chunks) == "Let me look."


async def test_image_sent_as_base64_source_block(fake: FakeAnthropic, llm: AnthropicLLMProvider) -> None:
    png = b"\x89PNG\r\n\x1a\nfake-image-bytes"
    attachment = VisionAttachment(data="data:image/png;base64," + base64.b64encode(png).decode())
    fake.push(Turn(text="A cat."))
    result = await llm.complete(
        LLMRequest(messages=[Message.user("What is this?", attachments=[attachment])])
    )
    assert result.full_text == "A cat."
    content = fake.requests[0].body["messages"][0]["content"]
    assert content[0] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(png).decode()},
    }
    assert content[1] == {"type": "text", "text": "What is this?"}


async def test_auth_failure_is_not_retried(fake: FakeAnthropic, llm: AnthropicLLMProvider) -> None:
    fake.push(Failure(401, "invalid x-api-key"), Turn(text="never"))
    with pytest.raises(AuthenticationError) as info:
        await llm.complete(LLMRequest(messages=[Message.user("hi")]))
    assert info.value.provider == "anthropic" and not info.value.retryable
    assert "invalid x-api-key" in str(info.value)
    assert len(fake.requests) == 1


async def test_rate_limit_retried_honouring_retry_after(
    fake: FakeAnthropic, llm: AnthropicLLMProvider
) -> None:
    fake.push(Failure(429, "slow down", retry_after="0"), Turn(text="finally"))
    result = await llm.complete(LLMRequest(messages=[Message.user("hi")]))
    assert result.full_text == "finally"
    assert len(fake.requests) == 2


async def test_rate_limit_surfaces_after_attempts(fake: FakeAnthropic, llm: AnthropicLLMProvider) -> None:
    fake.push(*[Failure(429, "slow down", retry_after="0.01")] * 3)
    with pytest.raises(RateLimitError) as info:
        await llm.complete(LLMRequest(messages=[Message.user("hi")]))
    assert info.value.retry_after == pytest.approx(0.01)
    assert info.value.status_code == 429
    assert len(fake.requests) == 3


async def test_server_error_retried_then_surfaced_in_stream(
    fake: FakeAnthropic, llm: AnthropicLLMProvider
) -> None:
    fake.push(Failure(500, "boom"), Turn(text="recovered"))
    chunks = await collect(llm, LLMRequest(messages=[Message.user("hi")]))
    assert "".join(c.content for c in chunks) == "recovered"
    fake.push(*[Failure(529, "overloaded")] * 3)
    with pytest.raises(ProviderServerError) as info:
        await collect(llm, LLMRequest(messages=[Message.user("hi")]))
    assert info.value.status_code == 529 and info.value.retryable
    assert len(fake.requests) == 5


async def test_stream_cut_midway_raises_connection_error(
    fake: FakeAnthropic, llm: AnthropicLLMProvider
) -> None:
    fake.push(Turn(text="this answer will be cut short", cut_after=5))
    received, info = await stream_until_error(
        llm, LLMRequest(messages=[Message.user("hi")]), ProviderConnectionError
    )
    assert info.value.provider == "anthropic"
    assert "".join(received) == "this answer"  # text before the cut reached the caller, nothing was replayed
    assert len(fake.requests) == 1


async def test_error_event_inside_stream_is_mapped(fake: FakeAnthropic, llm: AnthropicLLMProvider) -> None:
    fake.push(Turn(text="partial answer", error_event="overloaded_error"))
    with pytest.raises(ProviderServerError) as info:
        await collect(llm, LLMRequest(messages=[Message.user("hi")]))
    assert info.value.provider == "anthropic"


async def test_timeout_retried_then_surfaced(fake: FakeAnthropic) -> None:
    retry = RetryPolicy(max_attempts=2, base_delay=0.01)
    llm = AnthropicLLMProvider(api_key="k", base_url=fake.base_url, retry=retry, timeout_s=0.5)
    fake.push(Turn(text="late", delay_s=1.5), Turn(text="on time"))
    try:
        assert (await llm.complete(LLMRequest(messages=[Message.user("hi")]))).full_text == "on time"
        fake.push(*[Turn(text="late", delay_s=1.5)] * 2)
        with pytest.raises(ProviderTimeoutError):
            await llm.complete(LLMRequest(messages=[Message.user("hi")]))
    finally:
        await llm.aclose()
    assert len(fake.requests) == 4


def test_missing_key_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        AnthropicLLMProvider()


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("ANTHROPIC_API_KEY"), reason="ANTHROPIC_API_KEY not set")
async def test_live_anthropic_stream() -> None:
    provider = AnthropicLLMProvider(
        model=os.environ.get("ANTHROPIC_MODEL", "claude-haiku-4-5"), max_tokens=50
    )
    try:
        chunks = await collect(provider, LLMRequest(messages=[Message.user("Say the word 'pong' only.")]))
    finally:
        await provider.aclose()
    assert chunks[-1].done
    assert "pong" in "".join(c.content for c in chunks).lower()
