"""Provider selection from the environment, with the reference's variables and rules.

- ``LLM_PROVIDER`` (openai, anthropic, google, bedrock, openrouter, lmstudio, ollama, openai-compatible),
  ``STT_PROVIDER`` (openai, faster-whisper, openai-compatible, deepgram, openai-realtime) and ``TTS_PROVIDER``
  (elevenlabs, openai, piper, openai-compatible, cartesia, deepgram) choose explicitly.
- ``LOCAL_ONLY=true`` picks local providers: Ollama (or LM Studio when only ``LMSTUDIO_BASE_URL`` is set),
  Faster-Whisper and Piper, at ``OLLAMA_BASE_URL`` / ``LMSTUDIO_BASE_URL`` / ``FASTER_WHISPER_URL`` /
  ``PIPER_URL`` (or in-process with ``FASTER_WHISPER_MODEL`` / ``PIPER_MODEL``).
- Otherwise the LLM is auto-detected from the keys: Anthropic -> Google -> Bedrock -> OpenRouter -> OpenAI;
  STT defaults to Deepgram (then OpenAI) and TTS to ElevenLabs (then Cartesia, OpenAI, Deepgram) when their
  keys are set. ``OPENAI_BASE_URL``
  without ``OPENAI_API_KEY`` means any OpenAI-compatible endpoint, chosen by its base URL alone.

When nothing usable is configured a :class:`ConfigError` says exactly which variables to set.
Vendor modules are imported only for the provider chosen, so missing extras never break selection.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from llmrtc.errors import ConfigError
from llmrtc.providers.base import LLMProvider, STTProvider, TTSProvider, VisionProvider

log = logging.getLogger("llmrtc.providers.registry")

LLM_CHOICES = (
    "openai",
    "anthropic",
    "google",
    "bedrock",
    "openrouter",
    "lmstudio",
    "ollama",
    "openai-compatible",
)
STT_CHOICES = ("openai", "faster-whisper", "openai-compatible", "deepgram", "openai-realtime")
TTS_CHOICES = ("elevenlabs", "openai", "piper", "openai-compatible", "cartesia", "deepgram")
VISION_CHOICES = ("llava", "none")

_ALIASES = {
    "gemini": "google",
    "aws": "bedrock",
    "lm-studio": "lmstudio",
    "lm_studio": "lmstudio",
    "faster_whisper": "faster-whisper",
    "fasterwhisper": "faster-whisper",
    "whisper": "faster-whisper",
    "openai_compatible": "openai-compatible",
    "compatible": "openai-compatible",
    "eleven": "elevenlabs",
    "11labs": "elevenlabs",
    "ollama-llava": "llava",
    "openai_realtime": "openai-realtime",
    "realtime": "openai-realtime",
    "aura": "deepgram",
}


class ProviderSettings(BaseSettings):
    """Every environment variable provider selection reads (names are the fields in upper case)."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", env_file=None)

    # selection
    llm_provider: str | None = None
    stt_provider: str | None = None
    tts_provider: str | None = None
    vision_provider: str | None = None
    local_only: bool = False
    llm_vision: bool | None = None
    """Whether the LLM takes images (unset: the provider's default for its model)."""
    # OpenAI (and any OpenAI-compatible endpoint through OPENAI_BASE_URL)
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    openai_model: str | None = None
    openai_stt_model: str | None = None
    openai_tts_model: str | None = None
    openai_tts_voice: str | None = None
    # hosted vendors
    anthropic_api_key: str | None = None
    anthropic_model: str | None = None
    anthropic_base_url: str | None = None
    google_api_key: str | None = None
    google_model: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    aws_profile: str | None = None
    aws_region: str | None = None
    bedrock_model: str | None = None
    bedrock_endpoint_url: str | None = None
    openrouter_api_key: str | None = None
    openrouter_model: str | None = None
    openrouter_site_url: str | None = None
    openrouter_site_name: str | None = None
    elevenlabs_api_key: str | None = None
    elevenlabs_voice_id: str | None = None
    elevenlabs_model_id: str | None = None
    elevenlabs_output_format: str | None = None
    deepgram_api_key: str | None = None
    deepgram_base_url: str | None = None
    deepgram_stt_model: str | None = None
    deepgram_tts_model: str | None = None
    cartesia_api_key: str | None = None
    cartesia_base_url: str | None = None
    cartesia_voice_id: str | None = None
    cartesia_model_id: str | None = None
    openai_realtime_stt_model: str | None = None
    # local
    lmstudio_base_url: str | None = None
    lmstudio_model: str | None = None
    ollama_base_url: str | None = None
    ollama_model: str | None = None
    llava_model: str | None = None
    faster_whisper_url: str | None = None
    faster_whisper_model: str | None = None
    piper_url: str | None = None
    piper_model: str | None = None
    piper_voice: str | None = None
    stt_language: str | None = None
    # OpenAI-compatible speech servers (Kokoro, speaches, openedai-speech, ...)
    tts_format: str | None = None
    tts_sample_rate: int | None = Field(default=None, gt=0)
    tts_pcm_rate: int | None = Field(default=None, gt=0)
    tts_extra_body: dict[str, Any] | None = None
    # limits of every network provider (per request / read, connect, retries after the first try)
    provider_timeout_s: float | None = Field(default=None, gt=0)
    provider_connect_timeout_s: float | None = Field(default=None, gt=0)
    provider_max_retries: int | None = Field(default=None, ge=0)

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            return value or None
        return value

    @field_validator("tts_extra_body", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                return None
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ValueError(f'must be a JSON object, e.g. {{"lang_code": "a"}} ({exc})') from exc
        if value is not None and not isinstance(value, dict):
            raise ValueError("must be a JSON object")
        return value

    @field_validator("local_only", mode="before")
    @classmethod
    def _bool(cls, value: Any) -> Any:
        return False if value is None else value

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ProviderSettings:
        """Settings from ``env`` (only that mapping) or, when ``None``, from ``os.environ``."""
        source = os.environ if env is None else env
        upper = {k.upper(): v for k, v in source.items()}
        values: dict[str, Any] = {
            name: upper[name.upper()] for name in cls.model_fields if name.upper() in upper
        }
        try:
            return _MappingSettings(**values)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"invalid provider settings: {problems}") from exc

    @property
    def has_aws_credentials(self) -> bool:
        return bool(self.aws_access_key_id and self.aws_secret_access_key) or bool(self.aws_profile)


class _MappingSettings(ProviderSettings):
    """Reads only the values given to it (never the process environment or files)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


# ---------------------------------------------------------------------------------------------- helpers


def _settings(env: Mapping[str, str] | ProviderSettings | None) -> ProviderSettings:
    return env if isinstance(env, ProviderSettings) else ProviderSettings.from_env(env)


def _choice(var: str, value: str | None, choices: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    name = _ALIASES.get(value.strip().lower(), value.strip().lower())
    if name not in choices:
        raise ConfigError(f"{var}={value!r} is not known; use one of: {', '.join(choices)}")
    return name


def _load(module: str, cls: str, extra: str) -> Callable[..., Any]:
    try:
        mod = importlib.import_module(f"llmrtc.providers.{module}")
        factory: Callable[..., Any] = getattr(mod, cls)
    except ImportError as exc:
        raise ConfigError(
            f"the {module} provider could not be imported ({exc}); install it with: pip install 'llmrtc[{extra}]'"
        ) from exc
    except AttributeError as exc:
        raise ConfigError(f"llmrtc.providers.{module} has no {cls}") from exc
    return factory


def _opt(**kwargs: Any) -> dict[str, Any]:
    """Only the keyword arguments that are set, so each provider keeps its own defaults."""
    return {k: v for k, v in kwargs.items() if v is not None}


def _limits(s: ProviderSettings) -> dict[str, Any]:
    """``timeout_s``, ``connect_timeout_s`` and ``max_retries`` for every network provider, where set."""
    return _opt(
        timeout_s=s.provider_timeout_s,
        connect_timeout_s=s.provider_connect_timeout_s,
        max_retries=s.provider_max_retries,
    )


def _socket_limits(s: ProviderSettings) -> dict[str, Any]:
    """``timeout_s`` and a ``retry`` policy for the WebSocket providers (Deepgram, Cartesia, OpenAI realtime)."""
    from llmrtc.providers.resilience import RetryPolicy

    options: dict[str, Any] = _opt(timeout_s=s.provider_timeout_s)
    if s.provider_max_retries is not None:
        options["retry"] = RetryPolicy(max_attempts=s.provider_max_retries + 1)
    return options


def _need(var: str, value: str | None, why: str) -> str:
    if not value:
        raise ConfigError(f"{why} needs {var}: set {var} in the environment or .env")
    return value


_Rule = tuple[str, Callable[["ProviderSettings"], object]]
"""A provider name and the test that picks it when auto-detecting (first match wins)."""


def _detect(
    var: str,
    value: str | None,
    settings: ProviderSettings,
    choices: tuple[str, ...],
    *,
    local: Callable[[ProviderSettings], str],
    rules: tuple[_Rule, ...],
    missing: str,
) -> str:
    """The explicit choice in ``var``, else the local provider under LOCAL_ONLY, else the first rule met."""
    explicit = _choice(var, value, choices)
    if explicit:
        return explicit
    if settings.local_only:
        return local(settings)
    for name, applies in rules:
        if applies(settings):
            return name
    raise ConfigError(missing)


def _keyless_openai(name: str, s: ProviderSettings) -> str:
    """``openai`` with a base URL but no key means an OpenAI-compatible endpoint."""
    return "openai-compatible" if name == "openai" and not s.openai_api_key and s.openai_base_url else name


def _select(
    env: Mapping[str, str] | ProviderSettings | None, kind: str, detect: Callable[[ProviderSettings], str]
) -> tuple[ProviderSettings, str, str]:
    """The settings, the chosen provider name (keyless ``openai`` resolved) and the ``why`` for errors."""
    s = _settings(env)
    name = detect(s)
    return s, _keyless_openai(name, s), f"{kind} provider {name!r}"


P = TypeVar("P", LLMProvider, STTProvider, TTSProvider, VisionProvider)


def _selected(kind: str, provider: P) -> P:
    log.info("selected %s provider", kind, extra={"provider": provider.name})
    return provider


_OPENAI_FAMILY = ("openai", "openai-compatible")
_OPENAI_CLASSES: dict[tuple[str, str], tuple[str, str]] = {
    ("LLM", "openai"): ("openai", "OpenAILLMProvider"),
    ("LLM", "openai-compatible"): ("openai_compatible", "OpenAICompatibleLLMProvider"),
    ("STT", "openai"): ("openai", "OpenAISTTProvider"),
    ("STT", "openai-compatible"): ("openai_compatible", "OpenAICompatibleSTTProvider"),
    ("TTS", "openai"): ("openai", "OpenAITTSProvider"),
    ("TTS", "openai-compatible"): ("openai_compatible", "OpenAICompatibleTTSProvider"),
}


def _openai_family(kind: str, name: str, s: ProviderSettings, why: str, **options: Any) -> Any:
    """OpenAI (needs ``OPENAI_API_KEY``) or any OpenAI-compatible endpoint (needs ``OPENAI_BASE_URL``)."""
    module, cls = _OPENAI_CLASSES[(kind, name)]
    if name == "openai":
        endpoint = {"api_key": _need("OPENAI_API_KEY", s.openai_api_key, why), "base_url": s.openai_base_url}
    else:
        endpoint = {"base_url": _need("OPENAI_BASE_URL", s.openai_base_url, why), "api_key": s.openai_api_key}
    return _load(module, cls, "openai")(**endpoint, **options, **_limits(s))


# ---------------------------------------------------------------------------------------------- LLM

_NO_LLM = (
    "No LLM provider is configured. Set one of ANTHROPIC_API_KEY, GOOGLE_API_KEY, "
    "AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (Bedrock, with AWS_REGION), OPENROUTER_API_KEY or OPENAI_API_KEY; "
    "or LLM_PROVIDER=ollama|lmstudio (with OLLAMA_BASE_URL / LMSTUDIO_BASE_URL), or LOCAL_ONLY=true; "
    "or LLM_PROVIDER=openai-compatible with OPENAI_BASE_URL."
)


_LLM_RULES: tuple[_Rule, ...] = (
    ("anthropic", lambda s: s.anthropic_api_key),
    ("google", lambda s: s.google_api_key),
    ("bedrock", lambda s: s.has_aws_credentials),
    ("openrouter", lambda s: s.openrouter_api_key),
    ("openai", lambda s: s.openai_api_key),
    ("openai-compatible", lambda s: s.openai_base_url),
)


def detect_llm(settings: ProviderSettings) -> str:
    """The LLM provider name the settings select (explicit, LOCAL_ONLY, or auto-detected)."""
    return _detect(
        "LLM_PROVIDER",
        settings.llm_provider,
        settings,
        LLM_CHOICES,
        local=lambda s: "lmstudio" if s.lmstudio_base_url and not s.ollama_base_url else "ollama",
        rules=_LLM_RULES,
        missing=_NO_LLM,
    )


def create_llm_from_env(env: Mapping[str, str] | ProviderSettings | None = None) -> LLMProvider:
    """The LLM provider the environment selects. Raises :class:`ConfigError` saying what to set."""
    s, name, why = _select(env, "LLM", detect_llm)
    provider: LLMProvider
    if name in _OPENAI_FAMILY:
        provider = _openai_family("LLM", name, s, why, **_opt(model=s.openai_model))
    elif name == "anthropic":
        provider = _load("anthropic", "AnthropicLLMProvider", "anthropic")(
            api_key=_need("ANTHROPIC_API_KEY", s.anthropic_api_key, why),
            **_opt(model=s.anthropic_model, base_url=s.anthropic_base_url),
            **_limits(s),
        )
    elif name == "google":
        provider = _load("google", "GeminiLLMProvider", "google")(
            api_key=_need("GOOGLE_API_KEY", s.google_api_key, why), **_opt(model=s.google_model), **_limits(s)
        )
    elif name == "bedrock":
        credentials = None
        if s.aws_access_key_id and s.aws_secret_access_key:
            credentials = {
                "access_key_id": s.aws_access_key_id,
                "secret_access_key": s.aws_secret_access_key,
                "session_token": s.aws_session_token,
            }
        provider = _load("bedrock", "BedrockLLMProvider", "bedrock")(
            region=s.aws_region or "us-east-1",
            credentials=credentials,
            **_opt(model=s.bedrock_model, endpoint_url=s.bedrock_endpoint_url, profile=s.aws_profile),
            **_limits(s),
        )
    elif name == "openrouter":
        from llmrtc.providers.openrouter import OpenRouterLLMProvider

        provider = OpenRouterLLMProvider(
            api_key=_need("OPENROUTER_API_KEY", s.openrouter_api_key, why),
            site_url=s.openrouter_site_url,
            site_name=s.openrouter_site_name,
            **_opt(model=s.openrouter_model),
            **_limits(s),
        )
    elif name == "lmstudio":
        from llmrtc.providers.lmstudio import LMStudioLLMProvider

        provider = LMStudioLLMProvider(
            **_opt(base_url=s.lmstudio_base_url, model=s.lmstudio_model), **_limits(s)
        )
    elif name == "ollama":
        from llmrtc.providers.ollama import OllamaLLMProvider

        provider = OllamaLLMProvider(**_opt(model=s.ollama_model, base_url=s.ollama_base_url), **_limits(s))
    if s.llm_vision is not None:  # LLM_VISION: the model does (not) take images, whatever the default
        provider.capabilities = replace(provider.capabilities, vision=s.llm_vision)
    return _selected("LLM", provider)


# ---------------------------------------------------------------------------------------------- STT

_NO_STT = (
    "No STT provider is configured. Set DEEPGRAM_API_KEY (Deepgram streaming) or OPENAI_API_KEY (OpenAI Whisper; "
    "STT_PROVIDER=openai-realtime streams), or STT_PROVIDER=faster-whisper with "
    "FASTER_WHISPER_URL (a faster-whisper server) or FASTER_WHISPER_MODEL (in-process), or LOCAL_ONLY=true."
)


_STT_RULES: tuple[_Rule, ...] = (
    ("deepgram", lambda s: s.deepgram_api_key),
    ("openai", lambda s: s.openai_api_key),
    ("faster-whisper", lambda s: s.faster_whisper_url or s.faster_whisper_model),
    ("openai-compatible", lambda s: s.openai_base_url),
)


def detect_stt(settings: ProviderSettings) -> str:
    return _detect(
        "STT_PROVIDER",
        settings.stt_provider,
        settings,
        STT_CHOICES,
        local=lambda s: "faster-whisper",
        rules=_STT_RULES,
        missing=_NO_STT,
    )


def create_stt_from_env(env: Mapping[str, str] | ProviderSettings | None = None) -> STTProvider:
    """The STT provider the environment selects. Raises :class:`ConfigError` saying what to set."""
    s, name, why = _select(env, "STT", detect_stt)
    provider: STTProvider
    if name in _OPENAI_FAMILY:
        provider = _openai_family(
            "STT", name, s, why, language=s.stt_language, **_opt(model=s.openai_stt_model)
        )
    elif name == "deepgram":
        provider = _load("deepgram", "DeepgramSTTProvider", "deepgram")(
            api_key=_need("DEEPGRAM_API_KEY", s.deepgram_api_key, why),
            **_opt(model=s.deepgram_stt_model, language=s.stt_language, base_url=s.deepgram_base_url),
            **_socket_limits(s),
        )
    elif name == "openai-realtime":
        provider = _load("openai_realtime", "OpenAIRealtimeSTTProvider", "openai-realtime")(
            api_key=_need("OPENAI_API_KEY", s.openai_api_key, why),
            **_opt(model=s.openai_realtime_stt_model, language=s.stt_language, base_url=s.openai_base_url),
            **_socket_limits(s),
        )
    else:
        from llmrtc.providers.faster_whisper import FasterWhisperLocalSTTProvider, FasterWhisperSTTProvider

        if s.faster_whisper_model and not s.faster_whisper_url:
            provider = FasterWhisperLocalSTTProvider(s.faster_whisper_model, language=s.stt_language)
        else:
            provider = FasterWhisperSTTProvider(
                **_opt(base_url=s.faster_whisper_url, language=s.stt_language), **_limits(s)
            )
    return _selected("STT", provider)


# ---------------------------------------------------------------------------------------------- TTS

_NO_TTS = (
    "No TTS provider is configured. Set ELEVENLABS_API_KEY, CARTESIA_API_KEY, OPENAI_API_KEY or DEEPGRAM_API_KEY, "
    "or TTS_PROVIDER=piper with "
    "PIPER_URL (a Piper HTTP server) or PIPER_MODEL (an .onnx voice, in-process), or LOCAL_ONLY=true."
)


_TTS_RULES: tuple[_Rule, ...] = (
    ("elevenlabs", lambda s: s.elevenlabs_api_key),
    ("cartesia", lambda s: s.cartesia_api_key),
    ("openai", lambda s: s.openai_api_key),
    ("deepgram", lambda s: s.deepgram_api_key),
    ("piper", lambda s: s.piper_url or s.piper_model),
    ("openai-compatible", lambda s: s.openai_base_url),
)


def detect_tts(settings: ProviderSettings) -> str:
    return _detect(
        "TTS_PROVIDER",
        settings.tts_provider,
        settings,
        TTS_CHOICES,
        local=lambda s: "piper",
        rules=_TTS_RULES,
        missing=_NO_TTS,
    )


def _tts_options(name: str, s: ProviderSettings) -> dict[str, Any]:
    """Voice and model; for any OpenAI-API speech server also ``TTS_FORMAT`` (the ``response_format`` asked
    for), ``TTS_SAMPLE_RATE`` (the rate of the PCM handed on), ``TTS_PCM_RATE`` (the rate of the server's raw
    ``pcm``) and ``TTS_EXTRA_BODY`` (JSON fields added to each request, e.g. Kokoro's ``lang_code``)."""
    options = _opt(voice=s.openai_tts_voice, model=s.openai_tts_model)
    options.update(
        _opt(
            response_format=s.tts_format.lower() if s.tts_format else None,
            sample_rate=s.tts_sample_rate,
            pcm_rate=s.tts_pcm_rate,
            extra_body=s.tts_extra_body,
        )
    )
    return options


def create_tts_from_env(env: Mapping[str, str] | ProviderSettings | None = None) -> TTSProvider:
    """The TTS provider the environment selects. Raises :class:`ConfigError` saying what to set."""
    s, name, why = _select(env, "TTS", detect_tts)
    provider: TTSProvider
    if name == "elevenlabs":
        provider = _load("elevenlabs", "ElevenLabsTTSProvider", "elevenlabs")(
            api_key=_need("ELEVENLABS_API_KEY", s.elevenlabs_api_key, why),
            **_opt(
                voice_id=s.elevenlabs_voice_id,
                model_id=s.elevenlabs_model_id,
                output_format=s.elevenlabs_output_format,
            ),
            **_limits(s),
        )
    elif name in _OPENAI_FAMILY:
        provider = _openai_family("TTS", name, s, why, **_tts_options(name, s))
    elif name == "cartesia":
        provider = _load("cartesia", "CartesiaTTSProvider", "cartesia")(
            api_key=_need("CARTESIA_API_KEY", s.cartesia_api_key, why),
            **_opt(voice_id=s.cartesia_voice_id, model_id=s.cartesia_model_id, base_url=s.cartesia_base_url),
            **_socket_limits(s),
        )
    elif name == "deepgram":
        provider = _load("deepgram", "DeepgramTTSProvider", "deepgram")(
            api_key=_need("DEEPGRAM_API_KEY", s.deepgram_api_key, why),
            **_opt(model=s.deepgram_tts_model, base_url=s.deepgram_base_url),
            **_socket_limits(s),
        )
    else:
        from llmrtc.providers.piper import PiperHTTPTTSProvider, PiperLocalTTSProvider

        if s.piper_model and not s.piper_url:
            provider = PiperLocalTTSProvider(s.piper_model)
        else:
            provider = PiperHTTPTTSProvider(**_opt(base_url=s.piper_url, voice=s.piper_voice), **_limits(s))
    return _selected("TTS", provider)


# ---------------------------------------------------------------------------------------------- vision


def create_vision_from_env(env: Mapping[str, str] | ProviderSettings | None = None) -> VisionProvider | None:
    """A separate vision provider, or ``None`` when the LLM sees images itself.

    ``VISION_PROVIDER=llava`` (or ``LOCAL_ONLY=true``) gives LLaVA through Ollama at ``OLLAMA_BASE_URL``
    with ``LLAVA_MODEL`` (default ``llava:7b``); ``VISION_PROVIDER=none`` disables it.
    """
    s = _settings(env)
    name = _choice("VISION_PROVIDER", s.vision_provider, VISION_CHOICES)
    if name is None and s.local_only:
        name = "llava"
    if name is None or name == "none":
        return None
    from llmrtc.providers.ollama import LlavaVisionProvider

    provider = LlavaVisionProvider(**_opt(model=s.llava_model, base_url=s.ollama_base_url), **_limits(s))
    return _selected("vision", provider)


def env_vars() -> list[str]:
    """Every environment variable provider selection reads."""
    return [name.upper() for name in ProviderSettings.model_fields]


__all__ = [
    "LLM_CHOICES",
    "STT_CHOICES",
    "TTS_CHOICES",
    "VISION_CHOICES",
    "ProviderSettings",
    "create_llm_from_env",
    "create_stt_from_env",
    "create_tts_from_env",
    "create_vision_from_env",
    "detect_llm",
    "detect_stt",
    "detect_tts",
    "env_vars",
]
