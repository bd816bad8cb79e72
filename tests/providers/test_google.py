"""Gemini on the wire: the real ``google-genai`` async client against a local generativelanguage API."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator

import pytest

from llmrtc.errors import (
    AuthenticationError,
    ConfigError,
    InvalidRequestError,
    ProviderConnectionError,
    ProviderServerError,
    ProviderTimeoutError,
    RateLimitError,
)
from llmrtc.providers.google import GeminiLLMProvider
from llmrtc.types import (
    LLMRequest,
    Message,
    ToolCallRequest,
    ToolChoiceName,
    VisionAttachment,
)
from tests.providers.fakes.google import (
    ApiError,
    Blocked,
    Failure,
    FakeGemini,
    FunctionCall,
    Turn,
    error_info,
    retry_info,
)
from tests.providers.helpers import FAST, WEATHER, collect, serving, stream_until_error


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    async with serving(FakeGemini()) as server:
        yield server


@pytest.fixture
async def llm(fake: FakeGemini) -> AsyncIterator[GeminiLLMProvider]:
    provider = GeminiLLMProvider(api_key="AIza-test", base_url=fake.base_url, retry=FAST, timeout_s=10)
    yield provider
    await provider.aclose()


async def test_complete_sends_system_instruction_and_contents(
    fake: FakeGemini, llm: GeminiLLMProvider
) -> None:
    fake.push(Turn(text="Hello there.", prompt_tokens=20, output_tokens=3))
    result = await llm.complete(
        LLMRequest(
            messages=[Message.system("Be brief."), Message.user("Hi", name="bob")],
            temperature=0.5,
            max_tokens=64,
        )
    )
    assert result.full_text == "Hello there."
    assert result.stop_reason == "end_turn"
    assert result.usage is not None and (result.usage.input_tokens, result.usage.output_tokens) == (20, 3)
    sent = fake.requests[0]
    assert sent.path.endswith("/models/gemini-2.5-flash:generateContent")
    assert sent.headers["x-goog-api-key"] == "AIza-test"
    assert sent.body["systemInstruction"]["parts"] == [{"text": "Be brief."}]
    assert sent.body["contents"] == [{"role": "user", "parts": [{"text": "bob: Hi"}]}]
    assert sent.body["generationConfig"]["temperature"] == 0.5
    assert sent.body["generationConfig"]["maxOutputTokens"] == 64


async def test_stream_text_over_sse(fake: FakeGemini, llm: GeminiLLMProvider) -> None:
    fake.push(Turn(text="one two three", output_tokens=6))
    chunks = await collect(llm, LLMRequest(messages=[Message.user("count")]))
    assert [c.content for c in chunks if c.content] == ["one", " two", " three"]
    last = chunks[-1]
    assert last.done and last.stop_reason == "end_turn"
    assert last.usage is not None and last.usage.output_tokens == 6
    sent = fake.requests[0]
    assert sent.path.endswith(":streamGenerateContent") and sent.query == {"alt": "sse"}


async def test_function_calling_declarations_and_calls(fake: FakeGemini, llm: GeminiLLMProvider) -> None:
    fake.push(Turn(function_calls=[FunctionCall("get_weather", {"city": "Rome"}, id="fc-1")]))
    result = await llm.complete(
        LLMRequest(
            messages=[Message.user("Weather?")],
            tools=[WEATHER],
            tool_choice=ToolChoiceName(name="get_weather"),
        )
    )
    assert result.stop_reason == "tool_use"
    assert result.tool_calls == [
        ToolCallRequest(call_id="fc-1", name="get_weather", arguments={"city": "Rome"})
    ]
    body = fake.requests[0].body
    (decl,) = body["tools"][0]["functionDeclarations"]
    assert (decl["name"], decl["description"]) == ("get_weather", "Weather for a city")
    # The SDK writes the proto field name; the API's proto-JSON parser takes either spelling.
    assert decl.get("parametersJsonSchema", decl.get("parameters_json_schema")) == WEATHER.parameters
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }


async def test_tool_history_becomes_function_call_and_response_parts(
    fake: FakeGemini, llm: GeminiLLMProvider
) -> None:
    fake.push(Turn(text="Sunny in Rome."))
    call = ToolCallRequest(call_id="fc-1", name="get_weather", arguments={"city": "Rome"})
    messages = [
        Message.user("Weather?"),
        Message.assistant("", tool_calls=[call]),
        Message.tool('{"sky": "sunny"}', tool_call_id="fc-1", tool_name="get_weather"),
        Message.tool("22 degrees", tool_call_id="gemini_call_abc", tool_name="get_temperature"),
    ]
    await llm.complete(LLMRequest(messages=messages, tools=[WEATHER]))
    contents = fake.requests[0].body["contents"]
    assert contents[1] == {
        "role": "model",
        "parts": [{"functionCall": {"id": "fc-1", "name": "get_weather", "args": {"city": "Rome"}}}],
    }
    assert contents[2] == {
        "role": "user",
        "parts": [
            {"functionResponse": {"id": "fc-1", "name": "get_weather", "response": {"sky": "sunny"}}},
            # A locally made-up id is never sent back; a plain-text result is wrapped in an object.
            {"functionResponse": {"name": "get_temperature", "response": {"output": "22 degrees"}}},
        ],
    }
    assert fake.requests[0].body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}


async def test_stream_function_calls(fake: FakeGemini, llm: GeminiLLMProvider) -> None:
    fake.push(
        Turn(
            text="Looking it up.",
            function_calls=[
                FunctionCall("get_weather", {"city": "Rome"}),
                FunctionCall("get_weather", {"city": "Oslo"}),
            ],
        )
    )
    chunks = await collect(llm, LLMRequest(messages=[Message.user("Weather?")], tools=[WEATHER]))
    deltas = [d for c in chunks for d in c.tool_call_deltas]
    assert [d.index for d in deltas] == [0, 1]
    last = chunks[-1]
    assert last.done and last.stop_reason == "tool_use"
    assert [(c.name, c.arguments) for c in last.tool_calls] == [
        ("get_weather", {"city": "Rome"}),
        ("get_weather", {"city": "Oslo"}),
    ]
    ids = [c.call_id for c in last.tool_calls]
    assert all(ids) and len(set(ids)) == 2  # Gemini sent no ids: unique ones are made up
    assert "".join(c.content for c in chunks) == "Looking it up."


async def test_inline_image_payload(fake: FakeGemini, llm: GeminiLLMProvider) -> None:
    jpeg = b"\xff\xd8\xff\xe0fake-jpeg"
    fake.push(Turn(text="A dog."))
    attachment = VisionAttachment.from_bytes(jpeg, mime_type="image/jpeg")
    result = await llm.complete(LLMRequest(messages=[Message.user("What is it?", attachments=[attachment])]))
    assert result.full_text == "A dog."
    parts = fake.requests[0].body["contents"][0]["parts"]
    inline = parts[0]["inlineData"]
    # proto JSON: bytes as (URL-safe) base64, field names in either spelling, as the SDK sends them
    assert inline.get("mimeType", inline.get("mime_type")) == "image/jpeg"
    assert base64.urlsafe_b64decode(inline["data"]) == jpeg
    assert parts[1] == {"text": "What is it?"}


async def test_auth_failure_is_not_retried(fake: FakeGemini, llm: GeminiLLMProvider) -> None:
    fake.push(Failure(403, "API key not valid"), Turn(text="never"))
    with pytest.raises(AuthenticationError) as info:
        await llm.complete(LLMRequest(messages=[Message.user("hi")]))
    assert info.value.provider == "google" and not info.value.retryable
    assert "API key not valid" in str(info.value)
    assert len(fake.requests) == 1


async def test_rate_limit_retried_then_surfaced(fake: FakeGemini, llm: GeminiLLMProvider) -> None:
    fake.push(Failure(429, "quota", retry_after="0"), Turn(text="ok then"))
    chunks = await collect(llm, LLMRequest(messages=[Message.user("hi")]))
    assert "".join(c.content for c in chunks) == "ok then"
    fake.push(*[Failure(429, "quota", retry_after="0.02")] * 3)
    with pytest.raises(RateLimitError) as info:
        await collect(llm, LLMRequest(messages=[Message.user("hi")]))
    assert info.value.retry_after == pytest.approx(0.02)
    assert len(fake.requests) == 5


async def test_rate_limit_delay_comes_from_the_body_retry_info(
    fake: FakeGemini, llm: GeminiLLMProvider
) -> None:
    """Gemini sends no Retry-After header: the delay is google.rpc.RetryInfo.retryDelay in the body."""
    fake.push(*[ApiError(429, "quota exceeded", details=[retry_info("0.05s")])] * 3)
    with pytest.raises(RateLimitError) as info:
        await llm.complete(LLMRequest(messages=[Message.user("hi")]))
    assert info.value.retry_after == pytest.approx(0.05)
    fake.push(ApiError(429, "quota", details=[retry_info("0.15s")]), Turn(text="after the wait"))
    started = asyncio.get_running_loop().time()
    chunks = await collect(llm, LLMRequest(messages=[Message.user("hi")]))
    assert "".join(c.content for c in chunks) == "after the wait"
    assert asyncio.get_running_loop().time() - started >= 0.14, "the body's retryDelay was honoured"


async def test_invalid_key_400_is_an_auth_error(fake: FakeGemini, llm: GeminiLLMProvider) -> None:
    fake.push(
        ApiError(
            400, "API key not valid. Please pass a valid API key.", details=[error_info("API_KEY_INVALID")]
        )
    )
    with pytest.raises(AuthenticationError) as info:
        await llm.complete(LLMRequest(messages=[Message.user("hi")]))
    assert not info.value.retryable and "API key not valid" in str(info.value)
    assert len(fake.requests) == 1
    fake.push(ApiError(400, "bad field", details=[error_info("SOMETHING_ELSE")]))
    with pytest.raises(InvalidRequestError):
        await llm.complete(LLMRequest(messages=[Message.user("hi")]))


async def test_stalled_stream_times_out_per_read_not_in_total(fake: FakeGemini) -> None:
    """``timeout_s`` bounds each read: a slow but steady stream is fine, a stalled one is a timeout."""
    llm = GeminiLLMProvider(api_key="AIza-test", base_url=fake.base_url, timeout_s=0.4, max_retries=0)
    try:
        fake.push(Turn(text="one two three", stall_after=1, stall_s=1.5))
        received, info = await stream_until_error(
            llm, LLMRequest(messages=[Message.user("hi")]), ProviderTimeoutError
        )
        assert received == ["one"] and info.value.retryable
        assert len(fake.requests) == 1, "max_retries=0: one attempt"
    finally:
        await llm.aclose()


async def test_server_error_retried_then_surfaced(fake: FakeGemini, llm: GeminiLLMProvider) -> None:
    fake.push(Failure(500, "internal"), Turn(text="fine"))
    assert (await llm.complete(LLMRequest(messages=[Message.user("hi")]))).full_text == "fine"
    fake.push(*[Failure(503, "unavailable")] * 3)
    with pytest.raises(ProviderServerError) as info:
        await llm.complete(LLMRequest(messages=[Message.user("hi")]))
    assert info.value.status_code == 503
    assert len(fake.requests) == 5


async def test_stream_cut_midway(fake: FakeGemini, llm: GeminiLLMProvider) -> None:
    fake.push(Turn(text="this will be cut", cut_after=2))
    received, _ = await stream_until_error(
        llm, LLMRequest(messages=[Message.user("hi")]), ProviderConnectionError
    )
    assert "".join(received) == "this will"
    assert len(fake.requests) == 1


async def test_blocked_prompt_is_an_invalid_request(fake: FakeGemini, llm: GeminiLLMProvider) -> None:
    fake.push(Blocked("SAFETY"), Blocked("PROHIBITED_CONTENT"))
    with pytest.raises(InvalidRequestError, match="SAFETY"):
        await llm.complete(LLMRequest(messages=[Message.user("something bad")]))
    with pytest.raises(InvalidRequestError, match="PROHIBITED_CONTENT"):
        await collect(llm, LLMRequest(messages=[Message.user("something bad")]))
    assert len(fake.requests) == 2  # not retried


def test_missing_key_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="GOOGLE_API_KEY"):
        GeminiLLMProvider()


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("GOOGLE_API_KEY"), reason="GOOGLE_API_KEY not set")
async def test_live_gemini_stream() -> None:
    provider = GeminiLLMProvider(model=os.environ.get("GOOGLE_MODEL", "gemini-2.5-flash"))
    try:
        chunks = await collect(provider, LLMRequest(messages=[Message.user("Say the word 'pong' only.")]))
    finally:
        await provider.aclose()
    assert chunks[-1].done
    assert "pong" in "".join(c.content for c in chunks).lower()
