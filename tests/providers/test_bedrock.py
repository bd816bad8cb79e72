"""Bedrock on the wire: real aioboto3 bedrock-runtime against a local Converse / ConverseStream endpoint."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator

import pytest

from llmrtc.errors import (
    AuthenticationError,
    ProviderConnectionError,
    ProviderServerError,
    ProviderTimeoutError,
    RateLimitError,
)
from llmrtc.providers.bedrock import AWSCredentials, BedrockLLMProvider
from llmrtc.providers.resilience import RetryPolicy
from llmrtc.types import (
    LLMRequest,
    Message,
    ToolCallRequest,
    VisionAttachment,
)
from tests.providers.fakes.bedrock import Failure, FakeBedrock, ToolUse, Turn
from tests.providers.helpers import FAST, WEATHER, collect, serving, stream_until_error

MODEL = "anthropic.claude-sonnet-4-20250514-v1:0"


@pytest.fixture(autouse=True)
def _no_ambient_aws(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]
) -> None:
    """Keep the host's AWS setup (and the instance metadata service) out of the on-the-wire tests."""
    if request.node.get_closest_marker("live"):
        return
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path) + "/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path) + "/credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
async def fake() -> AsyncIterator[FakeBedrock]:
    async with serving(FakeBedrock()) as server:
        yield server


@pytest.fixture
async def llm(fake: FakeBedrock) -> AsyncIterator[BedrockLLMProvider]:
    provider = BedrockLLMProvider(
        region="eu-west-1",
        credentials={"accessKeyId": "AKIAFAKEKEY", "secretAccessKey": "fake-secret"},
        endpoint_url=fake.endpoint_url,
        retry=FAST,
        timeout_s=10,
    )
    yield provider
    await provider.aclose()


async def test_converse_request_shape_and_sigv4(fake: FakeBedrock, llm: BedrockLLMProvider) -> None:
    fake.push(Turn(text="Hello there.", input_tokens=21, output_tokens=3))
    result = await llm.complete(
        LLMRequest(
            messages=[Message.system("Be brief."), Message.user("Hi", name="carol")],
            temperature=0.2,
            stop=["END"],
        )
    )
    assert result.full_text == "Hello there."
    assert result.stop_reason == "end_turn"
    assert result.usage is not None and (result.usage.input_tokens, result.usage.output_tokens) == (21, 3)
    sent = fake.requests[0]
    assert sent.model_id == MODEL and sent.path.endswith("/converse")
    assert sent.body["system"] == [{"text": "Be brief."}]
    assert sent.body["messages"] == [{"role": "user", "content": [{"text": "carol: Hi"}]}]
    assert sent.body["inferenceConfig"] == {"maxTokens": 4096, "temperature": 0.2, "stopSequences": ["END"]}
    auth = sent.headers["Authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIAFAKEKEY/")
    assert "/eu-west-1/bedrock/aws4_request" in auth


async def test_standard_credential_chain_from_environment(
    fake: FakeBedrock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-token")
    provider = BedrockLLMProvider(endpoint_url=fake.endpoint_url, retry=FAST)
    try:
        await provider.complete(LLMRequest(messages=[Message.user("hi")]))
    finally:
        await provider.aclose()
    headers = fake.requests[0].headers
    assert "Credential=AKIAFROMENV/" in headers["Authorization"] and "/us-east-1/" in headers["Authorization"]
    assert headers["X-Amz-Security-Token"] == "env-token"


async def test_missing_credentials_is_an_auth_error(fake: FakeBedrock) -> None:
    provider = BedrockLLMProvider(endpoint_url=fake.endpoint_url, retry=FAST)
    try:
        with pytest.raises(AuthenticationError, match="AWS_ACCESS_KEY_ID"):
            await provider.complete(LLMRequest(messages=[Message.user("hi")]))
    finally:
        await provider.aclose()
    assert fake.requests == []


async def test_converse_stream_text_over_event_stream(fake: FakeBedrock, llm: BedrockLLMProvider) -> None:
    fake.push(Turn(text="alpha beta gamma", output_tokens=8))
    chunks = await collect(llm, LLMRequest(messages=[Message.user("go")]))
    assert [c.content for c in chunks if c.content] == ["alpha", " beta", " gamma"]
    last = chunks[-1]
    assert last.done and last.stop_reason == "end_turn"
    assert last.usage is not None and last.usage.output_tokens == 8
    assert fake.requests[0].path.endswith("/converse-stream")


async def test_tools_and_tool_history_payloads(fake: FakeBedrock, llm: BedrockLLMProvider) -> None:
    fake.push(Turn(tool_uses=[ToolUse("tu-9", "get_weather", {"city": "Lima"})]))
    call = ToolCallRequest(call_id="tu-1", name="get_weather", arguments={"city": "Rome"})
    messages = [
        Message.user("Weather in Rome, then Lima?"),
        Message.assistant("Checking Rome.", tool_calls=[call]),
        Message.tool('{"sky": "clear"}', tool_call_id="tu-1", tool_name="get_weather"),
    ]
    result = await llm.complete(LLMRequest(messages=messages, tools=[WEATHER], tool_choice="required"))
    assert result.stop_reason == "tool_use"
    assert result.tool_calls == [
        ToolCallRequest(call_id="tu-9", name="get_weather", arguments={"city": "Lima"})
    ]
    body = fake.requests[0].body
    assert body["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "inputSchema": {"json": WEATHER.parameters},
                }
            }
        ],
        "toolChoice": {"any": {}},
    }
    assert body["messages"][1] == {
        "role": "assistant",
        "content": [
            {"text": "Checking Rome."},
            {"toolUse": {"toolUseId": "tu-1", "name": "get_weather", "input": {"city": "Rome"}}},
        ],
    }
    assert body["messages"][2] == {
        "role": "user",
        "content": [
            {
                "toolResult": {
                    "toolUseId": "tu-1",
                    "content": [{"json": {"sky": "clear"}}],
                    "status": "success",
                }
            }
        ],
    }


async def test_stream_tool_use_assembled_from_deltas(fake: FakeBedrock, llm: BedrockLLMProvider) -> None:
    args = {"city": "Buenos Aires", "days": 2}
    fake.push(Turn(text="One moment.", tool_uses=[ToolUse("tu-a", "get_weather", args)]))
    chunks = await collect(llm, LLMRequest(messages=[Message.user("weather?")], tools=[WEATHER]))
    pieces = [d.arguments_delta for c in chunks for d in c.tool_call_deltas if d.arguments_delta]
    assert len(pieces) > 3
    last = chunks[-1]
    assert last.done and last.stop_reason == "tool_use"
    assert last.tool_calls == [ToolCallRequest(call_id="tu-a", name="get_weather", arguments=args)]
    assert fake.requests[0].body["toolConfig"]["toolChoice"] == {"auto": {}}


async def test_image_block_with_bytes(fake: FakeBedrock, llm: BedrockLLMProvider) -> None:
    png = b"\x89PNG\r\n\x1a\nfake"
    fake.push(Turn(text="A chart."))
    attachment = VisionAttachment.from_bytes(png, mime_type="image/png")
    await llm.complete(LLMRequest(messages=[Message.user("Describe", attachments=[attachment])]))
    image = fake.requests[0].body["messages"][0]["content"][0]["image"]
    assert image["format"] == "png"
    assert base64.b64decode(image["source"]["bytes"]) == png  # boto serialises the blob as base64


async def test_auth_failure_is_not_retried(fake: FakeBedrock, llm: BedrockLLMProvider) -> None:
    fake.push(Failure(403, "The security token included in the request is invalid."), Turn(text="never"))
    with pytest.raises(AuthenticationError) as info:
        await llm.complete(LLMRequest(messages=[Message.user("hi")]))
    assert info.value.provider == "bedrock" and not info.value.retryable
    assert "AccessDeniedException" in str(info.value)
    assert len(fake.requests) == 1


async def test_throttling_retried_then_surfaced(fake: FakeBedrock, llm: BedrockLLMProvider) -> None:
    fake.push(Failure(429, "Too many requests"), Turn(text="ok"))
    assert (await llm.complete(LLMRequest(messages=[Message.user("hi")]))).full_text == "ok"
    fake.push(*[Failure(429, "Too many requests", retry_after="0.02")] * 3)
    with pytest.raises(RateLimitError) as info:
        await collect(llm, LLMRequest(messages=[Message.user("hi")]))
    assert info.value.retry_after == pytest.approx(0.02)
    assert len(fake.requests) == 5


async def test_server_error_retried_then_surfaced(fake: FakeBedrock, llm: BedrockLLMProvider) -> None:
    fake.push(Failure(500, "internal"), Turn(text="recovered"))
    chunks = await collect(llm, LLMRequest(messages=[Message.user("hi")]))
    assert "".join(c.content for c in chunks) == "recovered"
    fake.push(*[Failure(503, "unavailable")] * 3)
    with pytest.raises(ProviderServerError) as info:
        await llm.complete(LLMRequest(messages=[Message.user("hi")]))
    assert info.value.status_code == 503
    assert len(fake.requests) == 5


async def test_exception_inside_event_stream_is_mapped(fake: FakeBedrock, llm: BedrockLLMProvider) -> None:
    fake.push(Turn(text="partial answer here", stream_exception="throttlingException"))
    received, _ = await stream_until_error(llm, LLMRequest(messages=[Message.user("hi")]), RateLimitError)
    assert received == ["partial"]  # surfaced, not replayed, once text reached the caller
    assert len(fake.requests) == 1


async def test_stream_cut_midway(fake: FakeBedrock, llm: BedrockLLMProvider) -> None:
    fake.push(Turn(text="cut off right here", cut_after=3))
    received, _ = await stream_until_error(
        llm, LLMRequest(messages=[Message.user("hi")]), ProviderConnectionError
    )
    assert "".join(received) == "cut off"
    assert len(fake.requests) == 1


async def test_read_timeout_retried_then_surfaced(fake: FakeBedrock) -> None:
    llm = BedrockLLMProvider(
        credentials=AWSCredentials("AKIAFAKEKEY", "fake-secret"),
        endpoint_url=fake.endpoint_url,
        retry=RetryPolicy(max_attempts=2, base_delay=0.01),
        timeout_s=0.5,
    )
    fake.push(Turn(text="late", delay_s=1.5), Turn(text="on time"))
    try:
        chunks = await collect(llm, LLMRequest(messages=[Message.user("hi")]))
        assert "".join(c.content for c in chunks) == "on time"
        fake.push(*[Turn(text="late", delay_s=1.5)] * 2)
        with pytest.raises(ProviderTimeoutError):
            await llm.complete(LLMRequest(messages=[Message.user("hi")]))
    finally:
        await llm.aclose()
    assert len(fake.requests) == 4


def test_credentials_mapping_forms() -> None:
    expected = AWSCredentials("AK", "SK", "TOK")
    assert (
        AWSCredentials.from_mapping(
            {"access_key_id": "AK", "secret_access_key": "SK", "session_token": "TOK"}
        )
        == expected
    )
    assert (
        AWSCredentials.from_mapping(
            {"aws_access_key_id": "AK", "aws_secret_access_key": "SK", "aws_session_token": "TOK"}
        )
        == expected
    )


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("AWS_ACCESS_KEY_ID"), reason="AWS credentials not set")
async def test_live_bedrock_stream() -> None:
    provider = BedrockLLMProvider(
        region=os.environ.get("AWS_REGION", "us-east-1"), model=os.environ.get("BEDROCK_MODEL", MODEL)
    )
    try:
        chunks = await collect(provider, LLMRequest(messages=[Message.user("Say the word 'pong' only.")]))
    finally:
        await provider.aclose()
    assert chunks[-1].done
    assert "pong" in "".join(c.content for c in chunks).lower()
