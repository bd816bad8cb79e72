"""Fallback chains with real providers on the wire: the next one takes over only before the first chunk."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from llmrtc.audio.wav import pcm16_to_wav
from llmrtc.errors import ConfigError, ProviderConnectionError, ProviderServerError
from llmrtc.providers.fallback import FallbackLLM, FallbackSTT, FallbackTTS
from llmrtc.providers.faster_whisper import FasterWhisperSTTProvider
from llmrtc.providers.ollama import OllamaLLMProvider
from llmrtc.providers.openai import OpenAILLMProvider, OpenAISTTProvider, OpenAITTSProvider
from llmrtc.providers.piper import PiperHTTPTTSProvider
from llmrtc.providers.resilience import RetryPolicy
from llmrtc.types import LLMRequest, Message
from tests.providers.conftest import Closer
from tests.providers.fakes.ollama import FakeOllama, OllamaTurn
from tests.providers.fakes.openai import ChatTurn, Failure, FakeOpenAI, Transcript
from tests.providers.fakes.piper import FakePiper
from tests.providers.helpers import stream_until_error

REQ = LLMRequest(messages=[Message.user("hello")])


def chain(
    openai: FakeOpenAI, ollama: FakeOllama, retry: RetryPolicy, closing: Closer, key: str = "sk-test"
) -> FallbackLLM:
    primary = OpenAILLMProvider(api_key=key, base_url=openai.base_url, retry=retry)
    secondary = OllamaLLMProvider(base_url=ollama.base_url, retry=retry)
    return closing(FallbackLLM([primary, secondary]))


async def test_llm_falls_back_after_retries_run_out(
    fake_openai: FakeOpenAI, fake_ollama: FakeOllama, fast_retry: RetryPolicy, closing: Closer
) -> None:
    fake_openai.push_chat(*[Failure(500, "down")] * 3)
    fake_ollama.push(OllamaTurn(text="local answer"))
    llm = chain(fake_openai, fake_ollama, fast_retry, closing)
    chunks = [c async for c in llm.stream(REQ)]
    assert "".join(c.content for c in chunks) == "local answer" and chunks[-1].done
    assert len(fake_openai.requests) == 3 and len(fake_ollama.requests) == 1
    assert llm.name == "fallback(openai,ollama)"


async def test_llm_auth_failure_moves_on_at_once(
    fake_openai: FakeOpenAI, fake_ollama: FakeOllama, fast_retry: RetryPolicy, closing: Closer
) -> None:
    fake_ollama.push(OllamaTurn(text="from ollama"))
    llm = chain(fake_openai, fake_ollama, fast_retry, closing, key="revoked")
    result = await llm.complete(REQ)
    assert result.full_text == "from ollama"
    assert len(fake_openai.requests) == 1


async def test_llm_no_fallback_once_streaming_started(
    fake_openai: FakeOpenAI, fake_ollama: FakeOllama, fast_retry: RetryPolicy, closing: Closer
) -> None:
    fake_openai.push_chat(ChatTurn(text="half an answer", text_pieces=4, cut_after=3))
    llm = chain(fake_openai, fake_ollama, fast_retry, closing)
    seen, _ = await stream_until_error(llm, REQ, ProviderConnectionError)
    assert seen and fake_ollama.requests == []


async def test_llm_all_failing_raises_the_last_error(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer
) -> None:
    fake_openai.push_chat(Failure(401, "bad key"), *[Failure(503, "busy")] * 3)
    a = OpenAILLMProvider(api_key="sk-test", base_url=fake_openai.base_url, retry=fast_retry)
    b = OpenAILLMProvider(api_key="sk-test", base_url=fake_openai.base_url, retry=fast_retry)
    llm = closing(FallbackLLM([a, b]))
    with pytest.raises(ProviderServerError):
        await llm.complete(REQ)
    assert len(fake_openai.requests) == 4


async def test_stt_falls_back_and_replays_streamed_audio(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer
) -> None:
    whisper_server = FakeOpenAI()
    await whisper_server.start()
    try:
        primary = OpenAISTTProvider(api_key="expired", base_url=fake_openai.base_url, retry=fast_retry)
        secondary = FasterWhisperSTTProvider(whisper_server.root_url, retry=fast_retry)
        stt = closing(FallbackSTT([primary, secondary]))
        whisper_server.push_transcript(Transcript("first"), Transcript("second"))
        audio = pcm16_to_wav(b"\x01\x00" * 3200, 16000)
        assert (await stt.transcribe(audio)).text == "first"
        assert whisper_server.requests[0].files["file"] == audio

        pieces = [b"\x02\x00" * 800 for _ in range(4)]

        async def mic() -> AsyncIterator[bytes]:
            for p in pieces:
                yield p

        results = [r async for r in stt.transcribe_stream(mic())]
        assert [r.text for r in results] == ["second"]
        assert whisper_server.requests[1].files["file"] == pcm16_to_wav(b"".join(pieces), 16000)
        assert len(fake_openai.requests) == 2
    finally:
        await whisper_server.stop()


async def test_tts_falls_back_and_replays_text_pieces(
    fake_openai: FakeOpenAI, fake_piper: FakePiper, fast_retry: RetryPolicy, closing: Closer
) -> None:
    fake_openai.push_speech(*[Failure(503, "overloaded")] * 3)
    primary = OpenAITTSProvider(api_key="sk-test", base_url=fake_openai.base_url, retry=fast_retry)
    secondary = PiperHTTPTTSProvider(fake_piper.base_url, retry=fast_retry)
    tts = closing(FallbackTTS([primary, secondary]))
    assert tts.sample_rate == 24000

    async def llm_text() -> AsyncIterator[str]:
        for piece in ["Hello there. ", "How are you?"]:
            yield piece

    chunks = [c async for c in tts.speak_text_stream(llm_text())]
    assert chunks and all(c.sample_rate == 22050 for c in chunks), "chunks declare the fallback's rate"
    assert [r.body["text"] for r in fake_piper.requests] == ["Hello there. ", "How are you?"]  # type: ignore[index]
    fake_openai.push_speech(Failure(401))
    assert len((await tts.speak("again")).audio) > 0


async def test_tts_no_fallback_after_audio_started(
    fake_openai: FakeOpenAI, fake_piper: FakePiper, fast_retry: RetryPolicy, closing: Closer
) -> None:
    from tests.providers.fakes.openai import Speech

    fake_openai.push_speech(Speech(b"\x00\x01" * 24000, chunk_size=4800, cut_after=2))
    tts = closing(
        FallbackTTS(
            [
                OpenAITTSProvider(api_key="sk-test", base_url=fake_openai.base_url, retry=fast_retry),
                PiperHTTPTTSProvider(fake_piper.base_url, retry=fast_retry),
            ]
        )
    )
    with pytest.raises(ProviderConnectionError):
        async for _ in tts.speak_stream("long sentence"):
            pass
    assert fake_piper.requests == []


def test_chain_rules() -> None:
    with pytest.raises(ConfigError):
        FallbackLLM([])
    a = OpenAILLMProvider(api_key="k")
    b = OllamaLLMProvider(model="llava")  # a model that sees: the chain sees only if every member does
    caps = FallbackLLM([a, b]).capabilities
    assert caps.tools and caps.vision and caps.streaming_tools
    assert not FallbackLLM([a, OllamaLLMProvider(model="llama3.2")]).capabilities.vision
    assert FallbackSTT([FasterWhisperSTTProvider()]).name == "fallback(faster-whisper)"
