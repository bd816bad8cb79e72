"""OpenAI providers on the wire: the real ``openai`` SDK against a local server speaking OpenAI's format."""

from __future__ import annotations

import base64
import io
import os

import pytest

from llmrtc.audio.wav import pcm16_to_wav
from llmrtc.errors import (
    AuthenticationError,
    ConfigError,
    InvalidRequestError,
    ProviderConnectionError,
    ProviderError,
    ProviderResponseError,
    ProviderServerError,
    RateLimitError,
)
from llmrtc.providers.openai import OpenAILLMProvider, OpenAISTTProvider, OpenAITTSProvider
from llmrtc.providers.resilience import RetryPolicy
from llmrtc.types import (
    LLMRequest,
    Message,
    STTConfig,
    ToolCallRequest,
    ToolChoiceName,
    TTSConfig,
    VisionAttachment,
)
from tests.providers.conftest import Closer
from tests.providers.fakes._audio import encode_pcm16, sine_pcm16
from tests.providers.fakes._base import HTML_PAGE
from tests.providers.fakes.openai import ChatTurn, Failure, FakeOpenAI, Raw, Speech, ToolCall, Transcript
from tests.providers.helpers import WEATHER, closed_base_url, collect, dominant_hz, stream_until_error

PNG_1PX = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode()


def llm(server: FakeOpenAI, retry: RetryPolicy, closing: Closer, **kw: object) -> OpenAILLMProvider:
    return closing(
        OpenAILLMProvider(
            api_key=str(kw.pop("api_key", "sk-test")),
            model="gpt-test",
            base_url=server.base_url,
            retry=retry,
            **kw,
        )  # type: ignore[arg-type]
    )


def tone_pcm(rate: int, seconds: float = 0.2) -> bytes:
    return sine_pcm16(int(rate * seconds), rate, freq=440, amplitude=8000)


# ---------------------------------------------------------------------------------------------- LLM


async def test_stream_text_pieces_usage_and_payload(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer
) -> None:
    fake_openai.push_chat(ChatTurn(text="Hello, how can I help?", text_pieces=4))
    provider = llm(fake_openai, fast_retry, closing)
    request = LLMRequest(
        messages=[Message.system("Be brief."), Message.user("hi", name="Ana María")],
        temperature=0.3,
        max_tokens=50,
    )
    chunks = await collect(provider, request)
    await provider.aclose()
    assert "".join(c.content for c in chunks) == "Hello, how can I help?"
    assert len([c for c in chunks if c.content]) == 4
    last = chunks[-1]
    assert last.done and last.stop_reason == "end_turn" and last.tool_calls == []
    assert last.usage is not None and (last.usage.input_tokens, last.usage.output_tokens) == (11, 5)
    sent = fake_openai.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["Authorization"] == "Bearer sk-test"
    assert sent.body["model"] == "gpt-test" and sent.body["stream"] is True
    assert sent.body["stream_options"] == {"include_usage": True}
    assert sent.body["temperature"] == 0.3 and sent.body["max_completion_tokens"] == 50
    assert sent.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi", "name": "Ana_Mar_a"},
    ]
    assert "tools" not in sent.body


async def test_stream_tool_calls_assembled_from_deltas(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer
) -> None:
    fake_openai.push_chat(
        ChatTurn(
            text="Checking.",
            tool_calls=[
                ToolCall("call_1", "get_weather", {"city": "Paris"}, pieces=4),
                ToolCall("call_2", "get_weather", {"city": "Oslo, Norway"}, pieces=5),
            ],
        )
    )
    provider = llm(fake_openai, fast_retry, closing)
    request = LLMRequest(
        messages=[Message.user("weather in Paris and Oslo?")],
        tools=[WEATHER],
        tool_choice=ToolChoiceName(name="get_weather"),
    )
    chunks = await collect(provider, request)
    deltas = [d for c in chunks for d in c.tool_call_deltas]
    assert len(deltas) > 4, "arguments must arrive as several deltas"
    last = chunks[-1]
    assert last.done and last.stop_reason == "tool_use"
    assert last.tool_calls == [
        ToolCallRequest(call_id="call_1", name="get_weather", arguments={"city": "Paris"}),
        ToolCallRequest(call_id="call_2", name="get_weather", arguments={"city": "Oslo, Norway"}),
    ]
    body = fake_openai.requests[0].body
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": WEATHER.parameters,
            },
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


async def test_complete_text_and_tool_calls(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer
) -> None:
    fake_openai.push_chat(
        ChatTurn(text="Sure."), ChatTurn(tool_calls=[ToolCall("c9", "get_weather", {"city": "Rome"})])
    )
    provider = llm(fake_openai, fast_retry, closing)
    first = await provider.complete(LLMRequest(messages=[Message.user("hello")]))
    assert first.full_text == "Sure." and first.stop_reason == "end_turn"
    assert first.usage is not None and first.usage.output_tokens == 5
    second = await provider.complete(LLMRequest(messages=[Message.user("weather?")], tools=[WEATHER]))
    assert second.stop_reason == "tool_use"
    assert second.tool_calls == [
        ToolCallRequest(call_id="c9", name="get_weather", arguments={"city": "Rome"})
    ]
    assert fake_openai.requests[1].body["tool_choice"] == "auto"
    assert "stream" not in fake_openai.requests[0].body


async def test_image_payload_is_data_url_part(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer
) -> None:
    provider = llm(fake_openai, fast_retry, closing)
    att = VisionAttachment(data=PNG_1PX, mime_type="image/png")
    await provider.complete(LLMRequest(messages=[Message.user("what is this?", attachments=[att])]))
    content = fake_openai.requests[0].body["messages"][0]["content"]
    assert content == [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_1PX}"}},
    ]


async def test_tool_history_translated(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer
) -> None:
    provider = llm(fake_openai, fast_retry, closing)
    call = ToolCallRequest(call_id="call_7", name="get_weather", arguments={"city": "Lima"})
    await provider.complete(
        LLMRequest(
            messages=[
                Message.user("weather in Lima?"),
                Message.assistant("", tool_calls=[call]),
                Message.tool('{"temp": 21}', tool_call_id="call_7", tool_name="get_weather"),
            ],
            tools=[WEATHER],
        )
    )
    msgs = fake_openai.requests[0].body["messages"]
    assert msgs[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_7",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Lima"}'},
            }
        ],
    }
    assert msgs[2] == {"role": "tool", "tool_call_id": "call_7", "content": '{"temp": 21}'}


async def test_auth_failure_not_retried(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer
) -> None:
    provider = llm(fake_openai, fast_retry, closing, api_key="sk-wrong")
    with pytest.raises(AuthenticationError) as info:
        await collect(provider, LLMRequest(messages=[Message.user("hi")]))
    assert info.value.retryable is False and info.value.provider == "openai" and info.value.status_code == 401
    assert "sk-wrong" not in str(info.value)
    assert len(fake_openai.requests) == 1


async def test_429_retried_honouring_retry_after_then_ok(fake_openai: FakeOpenAI, closing: Closer) -> None:
    retries: list[float] = []
    policy = RetryPolicy(max_attempts=3, base_delay=5.0, jitter=0.0, max_retry_after=1.0)
    fake_openai.push_chat(Failure(429, "slow down", retry_after="0.05"), ChatTurn(text="ok"))
    provider = llm(fake_openai, policy, closing)
    # base_delay=5 s would time the test out: only the 0.05 s Retry-After can make this fast.
    from llmrtc.providers import resilience

    original = resilience._log_retry

    def spy(exc, attempt, delay, on_retry):  # type: ignore[no-untyped-def]
        retries.append(delay)
        original(exc, attempt, delay, on_retry)

    resilience._log_retry = spy  # type: ignore[assignment]
    try:
        chunks = await collect(provider, LLMRequest(messages=[Message.user("hi")]))
    finally:
        resilience._log_retry = original  # type: ignore[assignment]
    assert "".join(c.content for c in chunks) == "ok"
    assert retries == [0.05]
    assert len(fake_openai.requests) == 2


async def test_429_exhausted_surfaces_rate_limit(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer
) -> None:
    fake_openai.push_chat(*[Failure(429, "quota", retry_after="0.01")] * 3)
    provider = llm(fake_openai, fast_retry, closing)
    with pytest.raises(RateLimitError) as info:
        await provider.complete(LLMRequest(messages=[Message.user("hi")]))
    assert info.value.retryable and info.value.retry_after == pytest.approx(0.01)
    assert len(fake_openai.requests) == 3


async def test_500_retried_then_surfaced(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer
) -> None:
    fake_openai.push_chat(*[Failure(500, "boom")] * 3)
    provider = llm(fake_openai, fast_retry, closing)
    with pytest.raises(ProviderServerError) as info:
        await collect(provider, LLMRequest(messages=[Message.user("hi")]))
    assert info.value.status_code == 500 and "boom" in str(info.value)
    assert len(fake_openai.requests) == 3


async def test_500_then_success(fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer) -> None:
    fake_openai.push_chat(Failure(503, "busy"), ChatTurn(text="recovered"))
    provider = llm(fake_openai, fast_retry, closing)
    chunks = await collect(provider, LLMRequest(messages=[Message.user("hi")]))
    assert "".join(c.content for c in chunks) == "recovered"
    assert len(fake_openai.requests) == 2


async def test_bad_request_not_retried(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer
) -> None:
    fake_openai.push_chat(Failure(400, "model not found"))
    provider = llm(fake_openai, fast_retry, closing)
    with pytest.raises(InvalidRequestError):
        await provider.complete(LLMRequest(messages=[Message.user("hi")]))
    assert len(fake_openai.requests) == 1


async def test_stream_cut_midway_surfaces_connection_error(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer
) -> None:
    fake_openai.push_chat(ChatTurn(text="one two three four", text_pieces=4, cut_after=3))
    provider = llm(fake_openai, fast_retry, closing)
    got, info = await stream_until_error(
        provider, LLMRequest(messages=[Message.user("hi")]), ProviderConnectionError
    )
    assert got and "".join(got) in "one two three four"
    assert info.value.retryable
    assert len(fake_openai.requests) == 1, "a stream that already yielded is never replayed"


@pytest.mark.parametrize(
    ("error", "expected", "retryable"),
    [
        (
            {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"},
            RateLimitError,
            True,
        ),
        (
            {"message": "The server had an error", "type": "server_error", "code": None},
            ProviderServerError,
            True,
        ),
        ({"message": "Overloaded", "type": "overloaded_error", "code": None}, ProviderServerError, True),
        (
            {"message": "bad 'tools'", "type": "invalid_request_error", "code": None},
            InvalidRequestError,
            False,
        ),
        (
            {
                "message": "maximum context length",
                "type": "invalid_request_error",
                "code": "context_length_exceeded",
            },
            InvalidRequestError,
            False,
        ),
    ],
)
async def test_in_stream_error_event_is_typed(
    fake_openai: FakeOpenAI,
    fast_retry: RetryPolicy,
    closing: Closer,
    error: dict[str, object],
    expected: type[Exception],
    retryable: bool,
) -> None:
    """A 200 stream that carries ``{"error": {...}}`` after some text: a typed error, never replayed."""
    fake_openai.push_chat(ChatTurn(text="one two three", stream_error={"error": error}, error_after=2))
    provider = llm(fake_openai, fast_retry, closing)
    got, info = await stream_until_error(provider, LLMRequest(messages=[Message.user("hi")]), ProviderError)
    assert type(info.value) is expected and info.value.retryable is retryable
    assert str(error["message"]) in str(info.value) and got
    assert len(fake_openai.requests) == 1


async def test_in_stream_error_before_any_text_is_retried(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer
) -> None:
    busy = {"error": {"message": "Overloaded", "type": "server_error", "code": None}}
    fake_openai.push_chat(
        ChatTurn(text="lost", stream_error=busy, error_after=0), ChatTurn(text="second try")
    )
    chunks = await collect(llm(fake_openai, fast_retry, closing), LLMRequest(messages=[Message.user("hi")]))
    assert "".join(c.content for c in chunks) == "second try"
    assert len(fake_openai.requests) == 2


async def test_stream_cut_before_first_chunk_is_retried(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer
) -> None:
    fake_openai.push_chat(ChatTurn(text="lost", cut_after=1), ChatTurn(text="second try"))
    provider = llm(fake_openai, fast_retry, closing)
    chunks = await collect(provider, LLMRequest(messages=[Message.user("hi")]))
    assert "".join(c.content for c in chunks) == "second try"
    assert len(fake_openai.requests) == 2


async def test_connection_refused_maps_to_connection_error(fast_retry: RetryPolicy, closing: Closer) -> None:
    url = await closed_base_url(FakeOpenAI())
    provider = closing(OpenAILLMProvider(api_key="k", base_url=url, retry=fast_retry, timeout_s=2))
    with pytest.raises(ProviderConnectionError):
        await provider.complete(LLMRequest(messages=[Message.user("hi")]))


def test_missing_key_is_config_error() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAILLMProvider(api_key=None)


# ---------------------------------------------------------------------------------------------- STT


async def test_whisper_transcription_multipart(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer
) -> None:
    fake_openai.push_transcript(Transcript(" Hello world. ", language="english", duration=2.25))
    stt = closing(
        OpenAISTTProvider(api_key="sk-test", language="en", base_url=fake_openai.base_url, retry=fast_retry)
    )
    audio = pcm16_to_wav(tone_pcm(16000), 16000)
    result = await stt.transcribe(audio)
    await stt.aclose()
    assert result.text == "Hello world." and result.language == "english" and result.duration_s == 2.25
    sent = fake_openai.requests[0]
    assert sent.path == "/v1/audio/transcriptions"
    assert sent.body["model"] == "whisper-1" and sent.body["language"] == "en"
    assert sent.body["response_format"] == "verbose_json"
    assert sent.files["file"] == audio


async def test_newer_transcription_model_uses_json(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer
) -> None:
    fake_openai.push_transcript(Transcript("bonjour"))
    stt = closing(
        OpenAISTTProvider(api_key="sk-test", model="gpt-4o-transcribe", base_url=fake_openai.base_url)
    )
    result = await stt.transcribe(
        pcm16_to_wav(b"\x00\x00" * 160, 16000), STTConfig(language="fr", prompt="greeting")
    )
    assert result.text == "bonjour" and result.language == "fr"
    body = fake_openai.requests[0].body
    assert body["response_format"] == "json" and body["model"] == "gpt-4o-transcribe"
    assert body["language"] == "fr" and body["prompt"] == "greeting"


async def test_stt_500_retried_then_surfaced_and_auth(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer
) -> None:
    fake_openai.push_transcript(Failure(500), Failure(502), Failure(500))
    stt = closing(OpenAISTTProvider(api_key="sk-test", base_url=fake_openai.base_url, retry=fast_retry))
    with pytest.raises(ProviderServerError):
        await stt.transcribe(pcm16_to_wav(b"\x00\x00" * 160, 16000))
    assert len(fake_openai.requests) == 3
    bad = closing(OpenAISTTProvider(api_key="nope", base_url=fake_openai.base_url, retry=fast_retry))
    with pytest.raises(AuthenticationError):
        await bad.transcribe(pcm16_to_wav(b"\x00\x00" * 160, 16000))
    assert len(fake_openai.requests) == 4


# ---------------------------------------------------------------------------------------------- TTS


async def test_tts_streams_pcm_on_sample_boundaries(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer
) -> None:
    pcm = tone_pcm(24000, 0.3)
    fake_openai.push_speech(Speech(pcm, chunk_size=999))
    tts = closing(
        OpenAITTSProvider(
            api_key="sk-test",
            model="gpt-4o-mini-tts",
            voice="alloy",
            speed=1.25,
            base_url=fake_openai.base_url,
        )
    )
    chunks = [c async for c in tts.speak_stream("Hello there.")]
    await tts.aclose()
    assert len(chunks) > 1
    assert all(c.sample_rate == 24000 and len(c.pcm) % 2 == 0 for c in chunks)
    assert b"".join(c.pcm for c in chunks) == pcm
    body = fake_openai.requests[0].body
    assert body == {
        "input": "Hello there.",
        "model": "gpt-4o-mini-tts",
        "voice": "alloy",
        "response_format": "pcm",
        "speed": 1.25,
    }


async def test_tts_wav_output_parsed_and_resampled(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer
) -> None:
    pcm16k = tone_pcm(16000, 0.5)
    fake_openai.push_speech(Speech(pcm16_to_wav(pcm16k, 16000), content_type="audio/wav", chunk_size=7))
    tts = closing(OpenAITTSProvider(api_key="sk-test", base_url=fake_openai.base_url, response_format="wav"))
    result = await tts.speak("Hi", TTSConfig(voice="echo"))
    assert result.sample_rate == 24000
    assert abs(len(result.audio) // 2 - 12000) <= 4, "0.5 s at 24 kHz"
    assert fake_openai.requests[0].body["voice"] == "echo"
    assert fake_openai.requests[0].body["response_format"] == "wav"


async def test_tts_compressed_output_decoded_with_pyav(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer
) -> None:
    av = pytest.importorskip("av")
    pcm = tone_pcm(24000, 0.5)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="flac") as out:
        stream = out.add_stream("flac", rate=24000, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            __import__("numpy").frombuffer(pcm, dtype="<i2").reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = 24000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    fake_openai.push_speech(Speech(buf.getvalue(), content_type="audio/flac"))
    tts = closing(OpenAITTSProvider(api_key="sk-test", base_url=fake_openai.base_url, response_format="flac"))
    result = await tts.speak("Hi")
    assert result.audio == pcm, "flac is lossless: the decoded PCM is the original"


async def test_tts_cut_midway_and_errors(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer
) -> None:
    fake_openai.push_speech(Speech(tone_pcm(24000, 1.0), chunk_size=4800, cut_after=2))
    tts = closing(OpenAITTSProvider(api_key="sk-test", base_url=fake_openai.base_url, retry=fast_retry))
    got = 0
    with pytest.raises(ProviderConnectionError):
        async for chunk in tts.speak_stream("long text"):
            got += len(chunk.pcm)
    assert 0 < got < 48000
    assert len(fake_openai.requests) == 1
    fake_openai.push_speech(Failure(429, retry_after="0"), Speech(b"\x02\x00" * 100))
    assert len((await tts.speak("again")).audio) == 200
    bad = closing(OpenAITTSProvider(api_key="wrong", base_url=fake_openai.base_url, retry=fast_retry))
    with pytest.raises(AuthenticationError):
        await bad.speak("x")


@pytest.mark.parametrize("rate", [16000, 48000])
async def test_tts_pcm_resampled_to_the_asked_rate_keeps_pitch(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer, rate: int
) -> None:
    """OpenAI's pcm is always 24 kHz: asked for another rate, the tone must keep its pitch and duration."""
    fake_openai.push_speech(Speech(tone_pcm(24000, 0.5), chunk_size=999))
    tts = closing(OpenAITTSProvider(api_key="sk-test", base_url=fake_openai.base_url, sample_rate=rate))
    chunks = [c async for c in tts.speak_stream("Hello")]
    pcm = b"".join(c.pcm for c in chunks)
    assert all(c.sample_rate == rate for c in chunks)
    assert abs(len(pcm) / 2 / rate - 0.5) < 0.01, "0.5 s of audio stays 0.5 s"
    assert dominant_hz(pcm, rate) == pytest.approx(440, abs=4)
    assert fake_openai.requests[0].body["response_format"] == "pcm"


async def test_tts_config_format_and_rate_are_honoured_per_call(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer
) -> None:
    from llmrtc.audio.codec import decode_audio

    tts = closing(OpenAITTSProvider(api_key="sk-test", base_url=fake_openai.base_url, retry=fast_retry))
    tone24k = tone_pcm(24000, 0.5)
    # a rate per call: the 24 kHz pcm is resampled, the pitch kept
    fake_openai.push_speech(Speech(tone24k))
    chunks = [c async for c in tts.speak_stream("Hi", TTSConfig(sample_rate=16000))]
    assert {c.sample_rate for c in chunks} == {16000}
    assert dominant_hz(b"".join(c.pcm for c in chunks), 16000) == pytest.approx(440, abs=4)
    # a format the server speaks: asked of it and handed back untouched
    mp3 = encode(tone24k, 24000, "mp3", "libmp3lame")
    fake_openai.push_speech(Speech(mp3, content_type="audio/mpeg"))
    result = await tts.speak("Hi", TTSConfig(format="mp3"))
    assert (result.format, result.audio, result.sample_rate) == ("mp3", mp3, 24000)
    assert fake_openai.requests[-1].body["response_format"] == "mp3"
    ogg = encode(tone_pcm(48000, 0.5), 48000, "ogg", "libopus")
    fake_openai.push_speech(Speech(ogg, content_type="audio/ogg"))
    assert (await tts.speak("Hi", TTSConfig(format="ogg"))).audio == ogg
    assert fake_openai.requests[-1].body["response_format"] == "opus", "OpenAI's opus is Ogg Opus"
    # a format on the wire for streaming: decoded to PCM as it arrives
    fake_openai.push_speech(Speech(mp3, content_type="audio/mpeg", chunk_size=500))
    streamed = [c async for c in tts.speak_stream("Hi", TTSConfig(format="mp3"))]
    assert fake_openai.requests[-1].body["response_format"] == "mp3" and len(streamed) > 2
    assert abs(sum(c.duration_s for c in streamed) - 0.5) < 0.05
    # a format at a rate the server does not send: its wav decoded, resampled and encoded again here
    fake_openai.push_speech(Speech(pcm16_to_wav(tone24k, 24000), content_type="audio/wav"))
    wav = await tts.speak("Hi", TTSConfig(format="wav", sample_rate=8000))
    assert (wav.format, wav.sample_rate, wav.audio[:4]) == ("wav", 8000, b"RIFF")
    assert fake_openai.requests[-1].body["response_format"] == "wav"
    assert dominant_hz(decode_audio(wav.audio, "wav", 8000), 8000) == pytest.approx(440, abs=4)


def test_tts_rejects_bad_options() -> None:
    with pytest.raises(ConfigError):
        OpenAITTSProvider(api_key="k", speed=9.0)
    with pytest.raises(ConfigError):
        OpenAITTSProvider(api_key="k", response_format="ogg-vorbis")


# ---------------------------------------------------------------------------------------------- live


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("OPENAI_API_KEY"), reason="OPENAI_API_KEY not set")
async def test_live_openai_roundtrip(closing: Closer) -> None:
    key = os.environ["OPENAI_API_KEY"]
    provider = closing(OpenAILLMProvider(api_key=key, model=os.environ.get("OPENAI_MODEL", "gpt-4o-mini")))
    chunks = await collect(
        provider, LLMRequest(messages=[Message.user("Say the word 'pong'.")], max_tokens=20)
    )
    assert chunks[-1].done and "pong" in "".join(c.content for c in chunks).lower()
    tts = closing(OpenAITTSProvider(api_key=key))
    audio = await tts.speak("Hello.")
    assert len(audio.audio) > 2400
    stt = closing(OpenAISTTProvider(api_key=key))
    text = await stt.transcribe(pcm16_to_wav(audio.audio, 24000))
    assert "hello" in text.text.lower()


def encode(pcm: bytes, rate: int, container: str, codec: str) -> bytes:
    pytest.importorskip("av")
    return encode_pcm16(pcm, rate, container=container, codec=codec)


@pytest.mark.parametrize(
    ("fmt", "container", "codec", "rate"),
    [("mp3", "mp3", "libmp3lame", 24000), ("opus", "ogg", "libopus", 48000)],
)
async def test_tts_mp3_and_opus_decoded_while_streaming(
    fake_openai: FakeOpenAI,
    fast_retry: RetryPolicy,
    closing: Closer,
    fmt: str,
    container: str,
    codec: str,
    rate: int,
) -> None:
    import numpy as np

    encoded = encode(tone_pcm(rate, 1.0), rate, container, codec)
    fake_openai.push_speech(Speech(encoded, content_type=f"audio/{fmt}", chunk_size=700))
    tts = closing(OpenAITTSProvider(api_key="sk-test", base_url=fake_openai.base_url, response_format=fmt))
    chunks = [c async for c in tts.speak_stream("Hello")]
    # mp3 decodes frame by frame; Ogg Opus page by page (libopus' muxer writes ~1 s pages)
    assert len(chunks) >= (5 if fmt == "mp3" else 2), "decoded as the bytes arrive, not once at the end"
    pcm = b"".join(c.pcm for c in chunks)
    assert all(c.sample_rate == 24000 for c in chunks)
    assert abs(len(pcm) / 2 / 24000 - 1.0) < 0.08
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    assert 4000 < np.sqrt(np.mean(samples[2400:-2400] ** 2)) < 7000, "a 8000-peak sine has RMS ~5657"
    assert fake_openai.requests[0].body["response_format"] == fmt


async def test_timeout_retried_then_surfaced(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer
) -> None:
    from llmrtc.errors import ProviderTimeoutError

    fake_openai.push_chat(ChatTurn(text="late", stall_s=1.0), ChatTurn(text="on time"))
    provider = closing(
        OpenAILLMProvider(api_key="sk-test", base_url=fake_openai.base_url, retry=fast_retry, timeout_s=0.3)
    )
    assert (await provider.complete(LLMRequest(messages=[Message.user("hi")]))).full_text == "on time"
    fake_openai.push_chat(*[ChatTurn(text="late", stall_s=1.0)] * 3)
    with pytest.raises(ProviderTimeoutError) as info:
        await provider.complete(LLMRequest(messages=[Message.user("hi")]))
    assert info.value.retryable
    assert len(fake_openai.requests) == 2 + 3


def test_llmrtc_providers_import_without_vendor_sdks() -> None:
    """llmrtc.providers and its modules import with the vendor SDKs missing; using one says what to install."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for m in ('openai', 'httpx2', 'faster_whisper', 'piper'): sys.modules[m] = None\n"
        "import llmrtc.providers, llmrtc.providers.openai, llmrtc.providers.openai_compatible\n"
        "import llmrtc.providers.openrouter, llmrtc.providers.lmstudio, llmrtc.providers.ollama\n"
        "import llmrtc.providers.faster_whisper, llmrtc.providers.piper, llmrtc.providers.registry\n"
        "import llmrtc.providers.fallback\n"
        "from llmrtc.errors import ConfigError\n"
        "from llmrtc.providers.registry import create_llm_from_env\n"
        "try:\n"
        "    create_llm_from_env({'OPENAI_API_KEY': 'k'})\n"
        "except ConfigError as e:\n"
        "    print('CONFIG', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "CONFIG" in out.stdout and "llmrtc[openai]" in out.stdout


# ---------------------------------------------------------------------------------------------- 200 but not data


def _wav() -> bytes:
    return pcm16_to_wav(tone_pcm(16000, 0.2), 16000)


@pytest.mark.parametrize(
    ("route", "raw"),
    [
        ("transcribe", Raw(HTML_PAGE)),
        ("transcribe", Raw(b"Service temporarily unavailable", "text/plain")),
        ("chat", Raw(HTML_PAGE)),
        ("chat", Raw(b"not json at all", "application/json")),
        ("stream", Raw(HTML_PAGE)),
        ("speech", Raw(HTML_PAGE)),
        ("speech", Raw(HTML_PAGE, "application/octet-stream")),
    ],
)
async def test_200_that_is_not_what_was_asked_is_not_data(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer, route: str, raw: Raw
) -> None:
    """An HTML page (or other wrong body) with "200 OK" never becomes words, an answer or speech."""
    push = {"transcribe": fake_openai.push_transcript, "speech": fake_openai.push_speech}.get(
        route, fake_openai.push_chat
    )
    push(*[raw] * 3)
    with pytest.raises(ProviderResponseError) as info:
        if route == "transcribe":
            stt = closing(
                OpenAISTTProvider(api_key="sk-test", base_url=fake_openai.base_url, retry=fast_retry)
            )
            await stt.transcribe(_wav())
        elif route == "speech":
            tts = closing(
                OpenAITTSProvider(api_key="sk-test", base_url=fake_openai.base_url, retry=fast_retry)
            )
            await tts.speak("Hello")
        elif route == "chat":
            await llm(fake_openai, fast_retry, closing).complete(LLMRequest(messages=[Message.user("hi")]))
        else:
            await collect(llm(fake_openai, fast_retry, closing), LLMRequest(messages=[Message.user("hi")]))
    assert info.value.retryable, "a gateway page is usually passing: retried"
    assert "Bad Gateway" not in str(info.value), "the page's text goes to the log, not to the user"
    assert len(fake_openai.requests) == 3


async def test_stt_answer_without_text_is_a_shape_error(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer
) -> None:
    fake_openai.push_transcript(Raw(b'{"segments": []}', "application/json"))
    stt = closing(OpenAISTTProvider(api_key="sk-test", base_url=fake_openai.base_url, retry=fast_retry))
    with pytest.raises(ProviderResponseError) as info:
        await stt.transcribe(_wav())
    assert not info.value.retryable and len(fake_openai.requests) == 1


async def test_tts_json_error_object_in_a_200_is_typed(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer
) -> None:
    error = b'{"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}'
    fake_openai.push_speech(Raw(error, "application/octet-stream"), Speech(b"\x02\x00" * 480))
    tts = closing(OpenAITTSProvider(api_key="sk-test", base_url=fake_openai.base_url, retry=fast_retry))
    assert (await tts.speak("Hello")).audio == b"\x02\x00" * 480
    fake_openai.push_speech(*[Raw(error, "application/octet-stream")] * 3)
    with pytest.raises(RateLimitError):
        await tts.speak("Hello")


async def test_gateway_page_once_then_the_real_answer(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer
) -> None:
    fake_openai.push_transcript(Raw(HTML_PAGE), Transcript("the real words"))
    stt = closing(OpenAISTTProvider(api_key="sk-test", base_url=fake_openai.base_url, retry=fast_retry))
    assert (await stt.transcribe(_wav())).text == "the real words"
