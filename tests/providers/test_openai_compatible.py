"""Any OpenAI-compatible endpoint, by base URL alone (here under ``/api/v1``, like the reference's proxy)."""

from __future__ import annotations

import base64
import io
import os
import wave

import pytest

from llmrtc.errors import AuthenticationError, ConfigError, ProviderConnectionError
from llmrtc.providers.openai_compatible import (
    OpenAICompatibleLLMProvider,
    OpenAICompatibleSTTProvider,
    OpenAICompatibleTTSProvider,
)
from llmrtc.providers.resilience import RetryPolicy
from llmrtc.types import LLMRequest, Message, ToolCallRequest, ToolDefinition, VisionAttachment
from tests.providers.conftest import Closer
from tests.providers.fakes.openai import ChatTurn, Failure, FakeOpenAI, Speech, ToolCall, Transcript
from tests.providers.helpers import serving

FIND = ToolDefinition(name="find", parameters={"type": "object", "properties": {"q": {"type": "string"}}})


def wav(rate: int, n: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x10\x00" * n)
    return buf.getvalue()


async def test_llm_stt_tts_by_base_url(closing: Closer, fast_retry: RetryPolicy) -> None:
    async with serving(FakeOpenAI(prefix="/api/v1")) as server:
        base = server.base_url
        llm = closing(
            OpenAICompatibleLLMProvider(base, model="mistral-7b", retry=fast_retry, stream_usage=False)
        )
        stt = closing(OpenAICompatibleSTTProvider(base, model="base", language="en", retry=fast_retry))
        tts = closing(
            OpenAICompatibleTTSProvider(base, model="kokoro", voice="af_sky", response_format="wav")
        )
        server.push_chat(ChatTurn(text="Found it.", tool_calls=[ToolCall("x1", "find", {"q": "keys"})]))
        photo = VisionAttachment(data=base64.b64encode(b"jpeg").decode())
        chunks = [
            c
            async for c in llm.stream(
                LLMRequest(
                    messages=[Message.user("where?", attachments=[photo])], tools=[FIND], max_tokens=20
                )
            )
        ]
        assert "".join(c.content for c in chunks) == "Found it."
        assert chunks[-1].tool_calls == [ToolCallRequest(call_id="x1", name="find", arguments={"q": "keys"})]
        assert chunks[-1].usage is None, "no usage chunk was asked for"
        body = server.requests[0].body
        assert server.requests[0].path == "/api/v1/chat/completions"
        assert body["max_tokens"] == 20 and "stream_options" not in body
        assert body["messages"][0]["content"][1]["image_url"]["url"] == photo.data_url()
        server.push_transcript(Transcript("hello there"))
        assert (await stt.transcribe(wav(16000, 1600))).text == "hello there"
        form = server.requests[1].body
        assert server.requests[1].path == "/api/v1/audio/transcriptions"
        assert form == {"model": "base", "response_format": "json", "language": "en"}
        server.push_speech(Speech(wav(24000, 2400), content_type="audio/wav", chunk_size=100))
        result = await tts.speak("hi")
        assert result.sample_rate == 24000 and result.audio == b"\x10\x00" * 2400
        assert server.requests[2].body["voice"] == "af_sky" and server.requests[2].body["model"] == "kokoro"


async def test_key_is_sent_when_given_and_errors_map(closing: Closer, fast_retry: RetryPolicy) -> None:
    async with serving(FakeOpenAI(api_key="proxy-key", prefix="/api/v1")) as server:
        bad = closing(OpenAICompatibleLLMProvider(server.base_url, retry=fast_retry))
        with pytest.raises(AuthenticationError):
            await bad.complete(LLMRequest(messages=[Message.user("x")]))
        good = closing(OpenAICompatibleLLMProvider(server.base_url, api_key="proxy-key", retry=fast_retry))
        server.push_chat(Failure(500), ChatTurn(text="ok"))
        assert (await good.complete(LLMRequest(messages=[Message.user("x")]))).full_text == "ok"
        assert len(server.requests) == 3
    with pytest.raises(ProviderConnectionError):
        await good.complete(LLMRequest(messages=[Message.user("x")]))


def test_base_url_required() -> None:
    for cls in (OpenAICompatibleLLMProvider, OpenAICompatibleSTTProvider, OpenAICompatibleTTSProvider):
        with pytest.raises(ConfigError, match="base_url is required"):
            cls()


@pytest.mark.live
@pytest.mark.skipif(
    not os.environ.get("OPENAI_COMPATIBLE_BASE_URL"), reason="OPENAI_COMPATIBLE_BASE_URL not set"
)
async def test_live_compatible(closing: Closer) -> None:
    llm = closing(OpenAICompatibleLLMProvider(os.environ["OPENAI_COMPATIBLE_BASE_URL"]))
    assert (await llm.complete(LLMRequest(messages=[Message.user("hi")], max_tokens=5))).full_text
