"""A 200 answer that is not what was asked for is not data: every provider, on the wire.

Each vendor fake answers a "200 OK" carrying a proxy's HTML page (or another wrong body) instead of the
vendor's answer; the real SDK (or our HTTP client) must turn it into a :class:`ProviderResponseError`, never
into the user's words, the model's answer, a description or speech. OpenAI's and ElevenLabs' cases are in
their own test files (``test_openai.py``, ``test_elevenlabs.py``).
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from llmrtc.audio.wav import pcm16_to_wav
from llmrtc.errors import ProviderError, ProviderResponseError
from llmrtc.providers.anthropic import AnthropicLLMProvider
from llmrtc.providers.bedrock import BedrockLLMProvider
from llmrtc.providers.faster_whisper import FasterWhisperSTTProvider
from llmrtc.providers.google import GeminiLLMProvider
from llmrtc.providers.ollama import LlavaVisionProvider, OllamaLLMProvider
from llmrtc.providers.piper import PiperHTTPTTSProvider
from llmrtc.types import LLMRequest, Message, VisionAttachment, VisionRequest
from tests.providers.fakes._base import HTML_PAGE, FakeServer, Raw
from tests.providers.fakes.anthropic import FakeAnthropic
from tests.providers.fakes.bedrock import FakeBedrock
from tests.providers.fakes.google import FakeGemini
from tests.providers.fakes.ollama import FakeOllama
from tests.providers.fakes.openai import FakeOpenAI
from tests.providers.fakes.piper import FakePiper
from tests.providers.helpers import FAST, collect, serving

REQUEST = LLMRequest(messages=[Message.user("hi")])
IMAGE = VisionAttachment(data=base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode(), source="camera")

Call = Callable[[FakeServer], Awaitable[object]]


@pytest.fixture(autouse=True)
def _no_ambient_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path) + "/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path) + "/credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


async def _closing(provider: object, call: Callable[[], Awaitable[object]]) -> object:
    try:
        return await call()
    finally:
        await provider.aclose()  # type: ignore[attr-defined]


def anthropic(stream: bool) -> Call:
    async def run(server: FakeServer) -> object:
        llm = AnthropicLLMProvider(api_key="sk-ant-test", base_url=server.base_url, retry=FAST)
        return await _closing(llm, lambda: collect(llm, REQUEST) if stream else llm.complete(REQUEST))

    return run


def gemini(stream: bool) -> Call:
    async def run(server: FakeServer) -> object:
        llm = GeminiLLMProvider(api_key="AIza-test", base_url=server.base_url, retry=FAST)
        return await _closing(llm, lambda: collect(llm, REQUEST) if stream else llm.complete(REQUEST))

    return run


def bedrock(stream: bool) -> Call:
    async def run(server: FakeServer) -> object:
        llm = BedrockLLMProvider(
            region="eu-west-1",
            credentials={"accessKeyId": "AKIAFAKEKEY", "secretAccessKey": "fake-secret"},
            endpoint_url=server.endpoint_url,  # type: ignore[attr-defined]
            retry=FAST,
        )
        return await _closing(llm, lambda: collect(llm, REQUEST) if stream else llm.complete(REQUEST))

    return run


def ollama(stream: bool) -> Call:
    async def run(server: FakeServer) -> object:
        llm = OllamaLLMProvider(base_url=server.base_url, retry=FAST)
        return await _closing(llm, lambda: collect(llm, REQUEST) if stream else llm.complete(REQUEST))

    return run


async def llava(server: FakeServer) -> object:
    vision = LlavaVisionProvider(base_url=server.base_url, retry=FAST)
    return await _closing(vision, lambda: vision.describe(VisionRequest(attachments=[IMAGE])))


async def faster_whisper(server: FakeServer) -> object:
    stt = FasterWhisperSTTProvider(server.root_url, retry=FAST)
    wav = pcm16_to_wav(b"\x00\x00" * 1600, 16000)
    return await _closing(stt, lambda: stt.transcribe(wav))


async def piper(server: FakeServer) -> object:
    tts = PiperHTTPTTSProvider(server.base_url, retry=FAST)
    return await _closing(tts, lambda: tts.speak("Hello"))


CASES: list[tuple[str, Callable[[], FakeServer], Call]] = [
    ("anthropic-complete", FakeAnthropic, anthropic(False)),
    ("anthropic-stream", FakeAnthropic, anthropic(True)),
    ("gemini-complete", FakeGemini, gemini(False)),
    ("gemini-stream", FakeGemini, gemini(True)),
    ("bedrock-complete", FakeBedrock, bedrock(False)),
    ("bedrock-stream", FakeBedrock, bedrock(True)),
    ("ollama-complete", FakeOllama, ollama(False)),
    ("ollama-stream", FakeOllama, ollama(True)),
    ("llava-describe", FakeOllama, llava),
    ("faster-whisper-transcribe", FakeOpenAI, faster_whisper),
    ("piper-speak", FakePiper, piper),
]


@pytest.fixture(params=CASES, ids=[case[0] for case in CASES])
async def case(request: pytest.FixtureRequest) -> AsyncIterator[tuple[FakeServer, Call]]:
    _, make_server, call = request.param
    async with serving(make_server()) as server:
        yield server, call


async def test_a_gateway_page_is_a_retryable_response_error(case: tuple[FakeServer, Call]) -> None:
    server, call = case
    server.raw.extend([Raw(HTML_PAGE)] * 3)
    with pytest.raises(ProviderResponseError) as info:
        await call(server)
    assert info.value.retryable, "such pages are usually a passing gateway fault"
    assert "Bad Gateway" not in str(info.value), "the page goes to the log, not to the user"
    assert server.raw_served == 3, "retried, then surfaced"


async def test_a_gateway_page_once_then_the_real_answer(case: tuple[FakeServer, Call]) -> None:
    server, call = case
    server.raw.append(Raw(HTML_PAGE))
    result = await call(server)
    assert result and server.raw_served == 1


@pytest.mark.parametrize(
    "raw",
    [
        Raw(b"plain words, not JSON", "text/plain"),
        Raw(b'{"unexpected": "shape"}', "application/json"),
        Raw(b"<?xml version='1.0'?><Error><Code>InternalError</Code></Error>", "application/xml"),
    ],
    ids=["text", "json-of-another-shape", "xml"],
)
async def test_other_wrong_bodies_are_typed(case: tuple[FakeServer, Call], raw: Raw) -> None:
    server, call = case
    server.raw.extend([raw] * 3)
    with pytest.raises(ProviderError) as info:
        await call(server)
    assert isinstance(info.value, ProviderResponseError), type(info.value).__name__
