"""Ollama and LLaVA on the wire: native ``/api/chat`` NDJSON from a local server speaking Ollama's format."""

from __future__ import annotations

import base64
import os

import pytest

from llmrtc.errors import (
    InvalidRequestError,
    ProviderConnectionError,
    ProviderResponseError,
    ProviderServerError,
    RateLimitError,
)
from llmrtc.providers.ollama import LlavaVisionProvider, OllamaLLMProvider
from llmrtc.providers.resilience import RetryPolicy
from llmrtc.types import (
    LLMRequest,
    Message,
    ToolCallRequest,
    ToolChoiceName,
    ToolDefinition,
    VisionAttachment,
    VisionRequest,
)
from tests.providers.conftest import Closer
from tests.providers.fakes.ollama import FakeOllama, OllamaFailure, OllamaToolCall, OllamaTurn
from tests.providers.helpers import closed_base_url, collect, stream_until_error

WEATHER = ToolDefinition(
    name="get_weather",
    description="Weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)
TIME = ToolDefinition(name="get_time", description="Local time")
IMG = base64.b64encode(b"\xff\xd8\xff\xe0fake-jpeg").decode()


def ollama(server: FakeOllama, retry: RetryPolicy, closing: Closer, **kw: object) -> OllamaLLMProvider:
    return closing(OllamaLLMProvider(model="llama3.2", base_url=server.base_url, retry=retry, **kw))  # type: ignore[arg-type]


async def test_stream_text_usage_and_payload(
    fake_ollama: FakeOllama, fast_retry: RetryPolicy, closing: Closer
) -> None:
    fake_ollama.push(OllamaTurn(text="Bonjour à tous!", text_pieces=3, prompt_eval_count=31, eval_count=9))
    provider = ollama(fake_ollama, fast_retry, closing, keep_alive="5m")
    request = LLMRequest(
        messages=[Message.system("Be nice."), Message.user("salut", name="Zoé")],
        temperature=0.2,
        max_tokens=64,
        stop=["\n\n"],
    )
    chunks = await collect(provider, request)
    assert "".join(c.content for c in chunks) == "Bonjour à tous!"
    assert len([c for c in chunks if c.content]) == 3
    last = chunks[-1]
    assert last.done and last.stop_reason == "end_turn"
    assert last.usage is not None and (last.usage.input_tokens, last.usage.output_tokens) == (31, 9)
    sent = fake_ollama.requests[0]
    assert sent.path == "/api/chat"
    assert sent.body == {
        "model": "llama3.2",
        "messages": [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Zoé: salut"}],
        "stream": True,
        "options": {"temperature": 0.2, "num_predict": 64, "stop": ["\n\n"]},
        "keep_alive": "5m",
    }


async def test_stream_tool_calls(fake_ollama: FakeOllama, fast_retry: RetryPolicy, closing: Closer) -> None:
    fake_ollama.push(
        OllamaTurn(
            tool_calls=[
                OllamaToolCall("get_weather", {"city": "Berlin"}, id="call_a"),
                OllamaToolCall("get_time", {}),
            ]
        )
    )
    provider = ollama(fake_ollama, fast_retry, closing)
    chunks = await collect(
        provider, LLMRequest(messages=[Message.user("weather and time?")], tools=[WEATHER, TIME])
    )
    deltas = [d for c in chunks for d in c.tool_call_deltas]
    assert [d.name for d in deltas] == ["get_weather", "get_time"]
    last = chunks[-1]
    assert last.stop_reason == "tool_use"
    assert last.tool_calls == [
        ToolCallRequest(call_id="call_a", name="get_weather", arguments={"city": "Berlin"}),
        ToolCallRequest(call_id="call_1", name="get_time", arguments={}),
    ]
    tools = fake_ollama.requests[0].body["tools"]
    assert [t["function"]["name"] for t in tools] == ["get_weather", "get_time"]
    assert tools[0] == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": WEATHER.parameters,
        },
    }


async def test_tool_choice_translation(
    fake_ollama: FakeOllama, fast_retry: RetryPolicy, closing: Closer
) -> None:
    provider = ollama(fake_ollama, fast_retry, closing)
    await provider.complete(
        LLMRequest(messages=[Message.user("x")], tools=[WEATHER, TIME], tool_choice="none")
    )
    await provider.complete(
        LLMRequest(
            messages=[Message.user("x")], tools=[WEATHER, TIME], tool_choice=ToolChoiceName(name="get_time")
        )
    )
    assert "tools" not in fake_ollama.requests[0].body
    assert [t["function"]["name"] for t in fake_ollama.requests[1].body["tools"]] == ["get_time"]


async def test_complete_with_tools_and_history(
    fake_ollama: FakeOllama, fast_retry: RetryPolicy, closing: Closer
) -> None:
    fake_ollama.push(
        OllamaTurn(tool_calls=[OllamaToolCall("get_weather", {"city": "Quito"})]), OllamaTurn(text="Sunny.")
    )
    provider = ollama(fake_ollama, fast_retry, closing)
    first = await provider.complete(LLMRequest(messages=[Message.user("weather?")], tools=[WEATHER]))
    assert first.stop_reason == "tool_use"
    assert first.tool_calls == [
        ToolCallRequest(call_id="call_0", name="get_weather", arguments={"city": "Quito"})
    ]
    history = [
        Message.user("weather?"),
        Message.assistant("", tool_calls=first.tool_calls),
        Message.tool('{"sky": "clear"}', tool_call_id="call_0", tool_name="get_weather"),
    ]
    second = await provider.complete(LLMRequest(messages=history, tools=[WEATHER]))
    assert second.full_text == "Sunny." and second.stop_reason == "end_turn"
    sent = fake_ollama.requests[1].body
    assert sent["stream"] is False
    assert sent["messages"][1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": "call_0", "function": {"name": "get_weather", "arguments": {"city": "Quito"}}}],
    }
    assert sent["messages"][2] == {
        "role": "tool",
        "content": '{"sky": "clear"}',
        "tool_name": "get_weather",
        "tool_call_id": "call_0",
    }


async def test_images_sent_as_raw_base64(
    fake_ollama: FakeOllama, fast_retry: RetryPolicy, closing: Closer
) -> None:
    provider = ollama(fake_ollama, fast_retry, closing)
    att = VisionAttachment(data=f"data:image/jpeg;base64,{IMG}")
    await collect(provider, LLMRequest(messages=[Message.user("what is it?", attachments=[att])]))
    assert fake_ollama.requests[0].body["messages"][0]["images"] == [IMG]


async def test_missing_model_404_not_retried(
    fake_ollama: FakeOllama, fast_retry: RetryPolicy, closing: Closer
) -> None:
    fake_ollama.push(OllamaFailure(404, "model 'nope' not found, try pulling it first"))
    provider = ollama(fake_ollama, fast_retry, closing)
    with pytest.raises(InvalidRequestError, match="try pulling it first"):
        await collect(provider, LLMRequest(messages=[Message.user("hi")]))
    assert len(fake_ollama.requests) == 1


async def test_auth_failure_behind_proxy_not_retried(
    fake_ollama: FakeOllama, fast_retry: RetryPolicy, closing: Closer
) -> None:
    from llmrtc.errors import AuthenticationError

    fake_ollama.push(OllamaFailure(401, "unauthorized"))
    provider = ollama(fake_ollama, fast_retry, closing, api_key="secret-token")
    with pytest.raises(AuthenticationError) as info:
        await provider.complete(LLMRequest(messages=[Message.user("hi")]))
    assert "secret-token" not in str(info.value)
    assert fake_ollama.requests[0].headers["Authorization"] == "Bearer secret-token"
    assert len(fake_ollama.requests) == 1


async def test_429_and_500_retried_then_surfaced(
    fake_ollama: FakeOllama, fast_retry: RetryPolicy, closing: Closer
) -> None:
    fake_ollama.push(OllamaFailure(429, "busy", retry_after="0"), OllamaTurn(text="ok"))
    provider = ollama(fake_ollama, fast_retry, closing)
    assert (
        "".join(c.content for c in await collect(provider, LLMRequest(messages=[Message.user("a")]))) == "ok"
    )
    fake_ollama.push(*[OllamaFailure(500, "runner crashed")] * 3)
    with pytest.raises(ProviderServerError, match="runner crashed"):
        await collect(provider, LLMRequest(messages=[Message.user("b")]))
    fake_ollama.push(*[OllamaFailure(429, "busy", retry_after="0.01")] * 3)
    with pytest.raises(RateLimitError):
        await provider.complete(LLMRequest(messages=[Message.user("c")]))
    assert len(fake_ollama.requests) == 2 + 3 + 3


async def test_stream_cut_midway(fake_ollama: FakeOllama, fast_retry: RetryPolicy, closing: Closer) -> None:
    fake_ollama.push(OllamaTurn(text="a long answer that is cut", text_pieces=5, cut_after=2))
    provider = ollama(fake_ollama, fast_retry, closing)
    got, _ = await stream_until_error(
        provider, LLMRequest(messages=[Message.user("hi")]), ProviderConnectionError
    )
    assert len(got) == 2
    assert len(fake_ollama.requests) == 1


async def test_error_line_mid_stream(
    fake_ollama: FakeOllama, fast_retry: RetryPolicy, closing: Closer
) -> None:
    fake_ollama.push(OllamaTurn(text="partial answer", text_pieces=2, error_after=1))
    provider = ollama(fake_ollama, fast_retry, closing)
    with pytest.raises(ProviderResponseError, match="unexpectedly stopped"):
        await collect(provider, LLMRequest(messages=[Message.user("hi")]))


async def test_connection_refused(fast_retry: RetryPolicy, closing: Closer) -> None:
    url = await closed_base_url(FakeOllama())
    provider = closing(OllamaLLMProvider(base_url=url, retry=fast_retry))
    with pytest.raises(ProviderConnectionError):
        await collect(provider, LLMRequest(messages=[Message.user("hi")]))


async def test_llava_describes_images(
    fake_ollama: FakeOllama, fast_retry: RetryPolicy, closing: Closer
) -> None:
    fake_ollama.push(OllamaTurn(text=" A red mug on a desk. "))
    vision = closing(LlavaVisionProvider(base_url=fake_ollama.base_url, retry=fast_retry))
    att = VisionAttachment(data=IMG, source="camera")
    result = await vision.describe(VisionRequest(prompt="What is on the desk?", attachments=[att]))
    assert result.description == "A red mug on a desk."
    body = fake_ollama.requests[0].body
    assert body == {
        "model": "llava:7b",
        "stream": False,
        "messages": [{"role": "user", "content": "What is on the desk?", "images": [IMG]}],
    }
    fake_ollama.push(OllamaFailure(503, "loading"), OllamaTurn(text="A cat."))
    assert (await vision.describe(VisionRequest(attachments=[att]))).description == "A cat."


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("OLLAMA_BASE_URL"), reason="OLLAMA_BASE_URL not set")
async def test_live_ollama(closing: Closer) -> None:
    provider = closing(
        OllamaLLMProvider(
            model=os.environ.get("OLLAMA_MODEL", "llama3.2"), base_url=os.environ["OLLAMA_BASE_URL"]
        )
    )
    chunks = await collect(provider, LLMRequest(messages=[Message.user("Say 'pong'.")], max_tokens=10))
    assert chunks[-1].done


async def test_read_timeout_mid_stream_surfaces(
    fake_ollama: FakeOllama, fast_retry: RetryPolicy, closing: Closer
) -> None:
    from llmrtc.errors import ProviderTimeoutError

    fake_ollama.push(OllamaTurn(text="slow answer here", text_pieces=3, stall_after=1))
    provider = closing(OllamaLLMProvider(base_url=fake_ollama.base_url, retry=fast_retry, timeout_s=0.3))
    got, _ = await stream_until_error(
        provider, LLMRequest(messages=[Message.user("hi")]), ProviderTimeoutError
    )
    assert got == ["slow a"] and len(fake_ollama.requests) == 1
