"""LM Studio on the wire: its OpenAI-compatible server (``/v1``), no key, the loaded model."""

from __future__ import annotations

import base64
import os

import pytest

from llmrtc.errors import InvalidRequestError, ProviderConnectionError, ProviderServerError
from llmrtc.providers.lmstudio import LMStudioLLMProvider
from llmrtc.providers.resilience import RetryPolicy
from llmrtc.types import LLMRequest, Message, ToolCallRequest, ToolDefinition, VisionAttachment
from tests.providers.conftest import Closer
from tests.providers.fakes.openai import ChatTurn, Failure, FakeOpenAI, ToolCall
from tests.providers.helpers import serving

CALC = ToolDefinition(name="add", parameters={"type": "object", "properties": {"a": {"type": "number"}}})


async def test_stream_text_tools_and_vision(closing: Closer, fast_retry: RetryPolicy) -> None:
    async with serving(FakeOpenAI()) as server:
        lm = closing(LMStudioLLMProvider(base_url=server.base_url, model="llama-3.2-3b", retry=fast_retry))
        server.push_chat(
            ChatTurn(text="Two plus two is four."), ChatTurn(tool_calls=[ToolCall("c1", "add", {"a": 2})])
        )
        img = VisionAttachment(data=base64.b64encode(b"img").decode(), mime_type="image/webp")
        chunks = [c async for c in lm.stream(LLMRequest(messages=[Message.user("2+2?", attachments=[img])]))]
        assert (
            "".join(c.content for c in chunks) == "Two plus two is four."
            and chunks[-1].stop_reason == "end_turn"
        )
        chunks = [c async for c in lm.stream(LLMRequest(messages=[Message.user("add")], tools=[CALC]))]
        assert chunks[-1].tool_calls == [ToolCallRequest(call_id="c1", name="add", arguments={"a": 2})]
        first = server.requests[0]
        assert first.headers["Authorization"] == "Bearer lm-studio"
        assert first.body["model"] == "llama-3.2-3b"
        assert first.body["messages"][0]["content"][1]["image_url"]["url"].startswith(
            "data:image/webp;base64,"
        )
        server.push_chat(ChatTurn(text="Sure thing."))
        whole = await lm.complete(LLMRequest(messages=[Message.user("hi")], max_tokens=8))
        assert whole.full_text == "Sure thing." and server.requests[2].body["max_tokens"] == 8
        server.push_chat(Failure(404, "No models loaded. Please load a model in the developer page"))
        with pytest.raises(InvalidRequestError, match="No models loaded"):
            await lm.complete(LLMRequest(messages=[Message.user("x")]))
        server.push_chat(*[Failure(500, "crash")] * 3)
        with pytest.raises(ProviderServerError):
            await lm.complete(LLMRequest(messages=[Message.user("x")]))
        server.push_chat(ChatTurn(text="cut off here", cut_after=2))
        with pytest.raises(ProviderConnectionError):
            async for _ in lm.stream(LLMRequest(messages=[Message.user("x")])):
                pass


def test_defaults() -> None:
    lm = LMStudioLLMProvider()
    assert lm.base_url == "http://localhost:1234/v1" and lm.name == "lmstudio"
    assert lm.capabilities.tools and lm.capabilities.streaming_tools


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("LMSTUDIO_BASE_URL"), reason="LMSTUDIO_BASE_URL not set")
async def test_live_lmstudio(closing: Closer) -> None:
    lm = closing(
        LMStudioLLMProvider(
            base_url=os.environ["LMSTUDIO_BASE_URL"], model=os.environ.get("LMSTUDIO_MODEL", "local-model")
        )
    )
    result = await lm.complete(LLMRequest(messages=[Message.user("Say 'pong'.")], max_tokens=10))
    assert result.full_text
