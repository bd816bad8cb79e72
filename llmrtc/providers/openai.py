"""OpenAI: chat completions (streaming, tools, vision), transcription (whisper-1 and newer) and speech.

Uses the official ``openai`` SDK with its own retries off (``max_retries=0``); retries, backoff and
``Retry-After`` go through :mod:`llmrtc.providers.resilience`. Every SDK failure becomes an
:mod:`llmrtc.errors` error with ``provider`` set.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from llmrtc.errors import CodecError, ConfigError, ProviderError, ProviderResponseError
from llmrtc.providers._audio import pcm_chunks
from llmrtc.providers._errors import (
    connection_error,
    error_from_payload,
    error_from_status,
    timeout_error,
)
from llmrtc.providers._messages import function_tools
from llmrtc.providers._validate import (
    SNIFF_BYTES,
    accepts,
    check_content_type,
    checked_audio,
    json_object,
    looks_like_a_document,
    unexpected_body,
)
from llmrtc.providers.base import (
    LLMCapabilities,
    LLMProvider,
    STTProvider,
    ToolCallAccumulator,
    TTSCapabilities,
    TTSProvider,
)
from llmrtc.providers.resilience import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    RetryPolicy,
    call_with_retries,
    check_timeouts,
    retry_policy,
    stream_with_retries,
)
from llmrtc.types import (
    LLMChunk,
    LLMRequest,
    LLMResult,
    Message,
    StopReason,
    STTConfig,
    STTResult,
    ToolCallDelta,
    ToolCallRequest,
    ToolChoice,
    ToolDefinition,
    TTSChunk,
    TTSConfig,
    TTSResult,
    Usage,
)

if TYPE_CHECKING:
    from openai import AsyncOpenAI

log = logging.getLogger("llmrtc.providers.openai")

DEFAULT_LLM_MODEL = "gpt-5.2"
DEFAULT_STT_MODEL = "whisper-1"
DEFAULT_TTS_MODEL = "tts-1"
DEFAULT_TTS_VOICE = "nova"
#: OpenAI's ``pcm`` speech format: 16-bit little-endian mono at 24 kHz.
OPENAI_PCM_RATE = 24000

_FINISH: dict[str, StopReason] = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "length": "max_tokens",
    "content_filter": "end_turn",
}
_NAME_OK = re.compile(r"[^A-Za-z0-9_-]")


# ---------------------------------------------------------------------------------------------- client & errors


def make_client(
    *,
    api_key: str,
    base_url: str | None,
    timeout_s: float,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    default_headers: Mapping[str, str] | None = None,
    organization: str | None = None,
) -> AsyncOpenAI:
    """An ``AsyncOpenAI`` client with the SDK's own retries off; ``timeout_s`` bounds each read, so a long
    stream is fine while a stalled one is not."""
    try:
        import httpx2
        from openai import AsyncOpenAI
    except ImportError as exc:
        raise ConfigError("the OpenAI providers need the openai SDK: pip install 'llmrtc[openai]'") from exc
    from openai import DefaultAsyncHttpx2Client

    from llmrtc.providers._tls import shared_ssl_context

    timeout = httpx2.Timeout(timeout_s, connect=connect_timeout_s)
    return AsyncOpenAI(
        api_key=api_key,
        base_url=base_url,
        organization=organization,
        timeout=timeout,
        max_retries=0,
        default_headers=dict(default_headers) if default_headers else None,
        # the process's one TLS context: no CA bundle loaded per client (and per room)
        http_client=DefaultAsyncHttpx2Client(verify=shared_ssl_context(), timeout=timeout),
    )


def map_openai_error(provider: str, exc: BaseException, timeout_s: float | None = None) -> ProviderError:
    """The :mod:`llmrtc.errors` error for an exception raised by the openai SDK (or its transport)."""
    import httpx2
    import openai

    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, openai.APIStatusError):
        headers = exc.response.headers
        retry_after: str | float | None = headers.get("retry-after")
        ms = headers.get("retry-after-ms")
        if retry_after is None and ms is not None:
            try:
                retry_after = float(ms) / 1000.0
            except ValueError:
                retry_after = None
        return error_from_status(provider, exc.status_code, _status_message(exc), retry_after)
    if isinstance(exc, (openai.APITimeoutError, httpx2.TimeoutException)):
        return timeout_error(provider, timeout_s)
    if isinstance(exc, (openai.APIConnectionError, httpx2.TransportError, httpx2.StreamError)):
        cause = exc.__cause__ or exc
        return connection_error(provider, cause)
    if isinstance(exc, openai.APIError) and not isinstance(exc, openai.APIResponseValidationError):
        # an ``{"error": {...}}`` event inside a 200 stream: typed by its type/code like an HTTP error
        body = exc.body if isinstance(exc.body, dict) else {"message": exc.message}
        return error_from_payload(provider, body)
    if isinstance(exc, (openai.APIResponseValidationError, ValueError)):
        return ProviderResponseError(f"unexpected response: {exc}", provider=provider)
    log.warning("unexpected openai SDK error", extra={"provider": provider, "error": type(exc).__name__})
    return ProviderError(f"{type(exc).__name__}: {exc}", provider=provider)


def _status_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return str(getattr(exc, "message", "") or exc)


def _sdk_errors() -> tuple[type[BaseException], ...]:
    import httpx2
    import openai

    return (openai.OpenAIError, httpx2.HTTPError, httpx2.StreamError)


# ---------------------------------------------------------------------------------------------- translation


def to_openai_messages(messages: list[Message], *, speaker_names: bool = True) -> list[dict[str, Any]]:
    """Messages in the chat-completions format (images as ``image_url`` data URLs)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id or "", "content": m.content})
            continue
        entry: dict[str, Any] = {"role": m.role}
        if m.attachments and m.role == "user":
            parts: list[dict[str, Any]] = []
            if m.content:
                parts.append({"type": "text", "text": m.content})
            for a in m.attachments:
                parts.append({"type": "image_url", "image_url": {"url": a.data_url()}})
            entry["content"] = parts
        else:
            entry["content"] = m.content
        if m.role == "assistant" and m.tool_calls:
            entry["content"] = m.content or None
            entry["tool_calls"] = [
                {
                    "id": c.call_id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                }
                for c in m.tool_calls
            ]
        if m.name and speaker_names and m.role in ("user", "assistant"):
            safe = _NAME_OK.sub("_", m.name)[:64]
            if safe:
                entry["name"] = safe
        out.append(entry)
    return out


def to_openai_tools(tools: list[ToolDefinition]) -> list[dict[str, Any]]:
    return function_tools(tools)


def to_openai_tool_choice(choice: ToolChoice) -> str | dict[str, Any]:
    if isinstance(choice, str):
        return choice
    return {"type": "function", "function": {"name": choice.name}}


def _parse_arguments(provider: str, name: str, raw: str | None) -> dict[str, Any]:
    text = (raw or "").strip() or "{}"
    try:
        args = json.loads(text)
    except ValueError as exc:
        raise ProviderResponseError(
            f"tool call {name!r} has arguments that are not JSON: {text[:200]!r}", provider=provider
        ) from exc
    if not isinstance(args, dict):
        raise ProviderResponseError(f"tool call {name!r} arguments must be a JSON object", provider=provider)
    return args


def _usage(raw: Any) -> Usage | None:
    if raw is None:
        return None
    return Usage(input_tokens=raw.prompt_tokens or 0, output_tokens=raw.completion_tokens or 0)


_Limits = tuple[float, float, "RetryPolicy | None", "int | None"]
"""``(timeout_s, connect_timeout_s, retry, max_retries)`` as each constructor received them."""


def _require_key(name: str, api_key: str | None, client: AsyncOpenAI | None) -> None:
    if not api_key and client is None:
        raise ConfigError(f"{name}: an API key is required (pass api_key= or set OPENAI_API_KEY)")


class _OpenAIClient:
    """The SDK client, endpoint, timeout and retry policy each OpenAI-API provider holds."""

    name: str
    base_url: str | None
    timeout_s: float
    connect_timeout_s: float
    retry: RetryPolicy
    _client: AsyncOpenAI

    def _connect(
        self,
        api_key: str | None,
        base_url: str | None,
        limits: _Limits,
        default_headers: Mapping[str, str] | None,
        client: AsyncOpenAI | None,
        *,
        organization: str | None = None,
    ) -> None:
        """Check for a key (unless a client is given) and make the client (the SDK's own retries off)."""
        _require_key(self.name, api_key, client)
        timeout_s, connect_timeout_s, retry, max_retries = limits
        check_timeouts(timeout_s, connect_timeout_s)
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.retry = retry_policy(retry, max_retries)
        self._client = client or make_client(
            api_key=api_key or "",
            base_url=base_url,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            default_headers=default_headers,
            organization=organization,
        )

    async def aclose(self) -> None:
        await self._client.close()


# ---------------------------------------------------------------------------------------------- LLM


class OpenAILLMProvider(_OpenAIClient, LLMProvider):
    """OpenAI chat completions: streaming text, streamed tool calls assembled from deltas, images.

    ``vision=False`` declares a model that takes no images (``capabilities.vision``): images are then
    described by the vision provider instead of being sent. Unset: the class's default (True).
    """

    name = "openai"
    capabilities = LLMCapabilities(streaming=True, tools=True, streaming_tools=True, vision=True)
    #: The request field that caps output tokens (OpenAI's newer models reject ``max_tokens``).
    max_tokens_field = "max_completion_tokens"
    #: Ask for a final usage chunk in streams (``stream_options.include_usage``).
    stream_usage = True

    def __init__(
        self,
        api_key: str | None = None,
        model: str = DEFAULT_LLM_MODEL,
        base_url: str | None = None,
        *,
        organization: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
        default_headers: Mapping[str, str] | None = None,
        client: AsyncOpenAI | None = None,
        vision: bool | None = None,
    ) -> None:
        limits = (timeout_s, connect_timeout_s, retry, max_retries)
        self._connect(api_key, base_url, limits, default_headers, client, organization=organization)
        self.model = model
        if vision is not None:
            self.capabilities = replace(type(self).capabilities, vision=vision)

    def _params(self, request: LLMRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": request.model or self.model,
            "messages": to_openai_messages(request.messages),
        }
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.top_p is not None:
            params["top_p"] = request.top_p
        if request.max_tokens is not None:
            params[self.max_tokens_field] = request.max_tokens
        if request.stop:
            params["stop"] = request.stop
        if request.tools:
            params["tools"] = to_openai_tools(request.tools)
            params["tool_choice"] = to_openai_tool_choice(request.tool_choice)
        return params

    def _error(self, exc: BaseException) -> ProviderError:
        return map_openai_error(self.name, exc, self.timeout_s)

    async def complete(self, request: LLMRequest) -> LLMResult:
        params = self._params(request)

        async def once() -> LLMResult:
            try:
                raw = await self._client.chat.completions.with_raw_response.create(**params)
                json_object(
                    self.name, raw.content, raw.headers.get("content-type"), required={"choices": list}
                )
                resp = raw.parse()
            except _sdk_errors() as exc:
                raise self._error(exc) from exc
            if not resp.choices:
                raise ProviderResponseError("the answer has no choices", provider=self.name)
            choice = resp.choices[0]
            calls = [
                ToolCallRequest(
                    call_id=tc.id,
                    name=tc.function.name,
                    arguments=_parse_arguments(self.name, tc.function.name, tc.function.arguments),
                )
                for tc in (choice.message.tool_calls or [])
                if getattr(tc, "function", None) is not None
            ]
            stop = _FINISH.get(choice.finish_reason or "stop", "end_turn")
            if calls:
                stop = "tool_use"
            return LLMResult(
                full_text=choice.message.content or "",
                tool_calls=calls,
                stop_reason=stop,
                usage=_usage(resp.usage),
                raw=resp,
            )

        return await call_with_retries(once, self.retry)

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        params = self._params(request)
        async for chunk in stream_with_retries(lambda: self._stream_once(params), self.retry):
            yield chunk

    async def _stream_once(self, params: dict[str, Any]) -> AsyncIterator[LLMChunk]:
        extra: dict[str, Any] = {"stream": True}
        if self.stream_usage:
            extra["stream_options"] = {"include_usage": True}
        try:
            sdk_stream = await self._client.chat.completions.create(**params, **extra)
            content_type = sdk_stream.response.headers.get("content-type")
            if not accepts(content_type, "sse"):
                body = await sdk_stream.response.aread()
                raise unexpected_body(self.name, body, content_type, "sse")
        except _sdk_errors() as exc:
            raise self._error(exc) from exc
        acc = ToolCallAccumulator(self.name)
        finish: str | None = None
        usage: Usage | None = None
        try:
            async for event in sdk_stream:
                if event.usage is not None:
                    usage = _usage(event.usage)
                for choice in event.choices:
                    delta = choice.delta
                    deltas: list[ToolCallDelta] = []
                    for tc in delta.tool_calls or []:
                        fn = tc.function
                        d = ToolCallDelta(
                            index=tc.index,
                            call_id=tc.id,
                            name=fn.name if fn else None,
                            arguments_delta=(fn.arguments or "") if fn else "",
                        )
                        acc.add(d)
                        deltas.append(d)
                    if delta.content or deltas:
                        yield LLMChunk(content=delta.content or "", tool_call_deltas=deltas)
                    if choice.finish_reason:
                        finish = choice.finish_reason
        except _sdk_errors() as exc:
            raise self._error(exc) from exc
        finally:
            await sdk_stream.close()
        if finish is None:
            raise connection_error(self.name, "the stream ended before the answer was complete")
        calls = acc.calls()
        stop = "tool_use" if calls else _FINISH.get(finish, "end_turn")
        yield LLMChunk(done=True, stop_reason=stop, tool_calls=calls, usage=usage)


# ---------------------------------------------------------------------------------------------- STT


class OpenAISTTProvider(_OpenAIClient, STTProvider):
    """OpenAI transcription: ``whisper-1`` (verbose JSON: language, duration) and newer models (JSON)."""

    name = "openai-stt"

    def __init__(
        self,
        api_key: str | None = None,
        model: str = DEFAULT_STT_MODEL,
        language: str | None = None,
        base_url: str | None = None,
        *,
        prompt: str | None = None,
        response_format: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
        default_headers: Mapping[str, str] | None = None,
        client: AsyncOpenAI | None = None,
    ) -> None:
        self._connect(
            api_key, base_url, (timeout_s, connect_timeout_s, retry, max_retries), default_headers, client
        )
        self.model = model
        self.language = language
        self.prompt = prompt
        self.response_format = response_format

    def _format_for(self, model: str) -> str:
        if self.response_format:
            return self.response_format
        return "verbose_json" if model.startswith("whisper") else "json"

    async def transcribe(self, audio: bytes, config: STTConfig | None = None) -> STTResult:
        cfg = config or STTConfig()
        model = cfg.model or self.model
        params: dict[str, Any] = {
            "file": ("audio.wav", audio, "audio/wav"),
            "model": model,
            "response_format": self._format_for(model),
        }
        language = cfg.language or self.language
        if language:
            params["language"] = language
        prompt = cfg.prompt or self.prompt
        if prompt:
            params["prompt"] = prompt
        if cfg.temperature is not None:
            params["temperature"] = cfg.temperature

        as_json = params["response_format"] in ("json", "verbose_json")

        async def once() -> STTResult:
            try:
                raw = await self._client.audio.transcriptions.with_raw_response.create(**params)
                body, content_type = raw.content, raw.headers.get("content-type")
            except _sdk_errors() as exc:
                raise map_openai_error(self.name, exc, self.timeout_s) from exc
            if not as_json:  # text, srt, vtt: the body is the transcript
                check_content_type(self.name, content_type, "text", head=body[:512])
                if looks_like_a_document(body[:SNIFF_BYTES]):
                    raise unexpected_body(self.name, body, content_type, "text")
                return STTResult(text=body.decode("utf-8", "replace").strip(), language=language)
            data = json_object(self.name, body, content_type, required={"text": str})
            duration = data.get("duration")
            return STTResult(
                text=data["text"].strip(),
                language=data.get("language") or language,
                duration_s=float(duration) if isinstance(duration, (int, float)) else None,
            )

        return await call_with_retries(once, self.retry)


#: The reference's name for the OpenAI STT provider.
OpenAIWhisperProvider = OpenAISTTProvider


# ---------------------------------------------------------------------------------------------- TTS


#: The ``response_format`` values of ``/audio/speech``, and what a :class:`TTSConfig` ``format`` asks for.
TTS_FORMATS = ("pcm", "wav", "mp3", "opus", "aac", "flac")
_CONFIG_FORMAT = {"ogg": "opus"}  # OpenAI's opus is Ogg Opus


class OpenAITTSProvider(_OpenAIClient, TTSProvider):
    """OpenAI speech: models (``tts-1``, ``tts-1-hd``, ``gpt-4o-mini-tts``), voices, speed.

    Asks for raw ``pcm`` by default so streaming needs no decoding; other formats (``wav``, ``mp3``, ``opus``,
    ``aac``, ``flac``) are decoded. The raw ``pcm`` arrives at ``pcm_rate`` (24 kHz for OpenAI) and everything
    is handed on as PCM at :attr:`sample_rate` (or a call's ``TTSConfig.sample_rate``), resampled when the
    rates differ. A call's ``TTSConfig.format`` is asked of the server (``ogg`` as ``opus``); :meth:`speak`
    then returns the server's file itself when no other rate is asked. ``extra_body`` adds JSON fields to each
    request (for OpenAI-compatible servers such as Kokoro: ``lang_code``, ``normalization_options``, ...).
    """

    name = "openai-tts"
    capabilities = TTSCapabilities(streaming=True)

    def __init__(
        self,
        api_key: str | None = None,
        model: str = DEFAULT_TTS_MODEL,
        voice: str = DEFAULT_TTS_VOICE,
        speed: float | None = None,
        base_url: str | None = None,
        *,
        response_format: str = "pcm",
        sample_rate: int | None = None,
        pcm_rate: int = OPENAI_PCM_RATE,
        instructions: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
        default_headers: Mapping[str, str] | None = None,
        client: AsyncOpenAI | None = None,
    ) -> None:
        _require_key(self.name, api_key, client)
        if speed is not None and not 0.25 <= speed <= 4.0:
            raise ConfigError(f"{self.name}: speed must be between 0.25 and 4.0, got {speed}")
        if response_format not in TTS_FORMATS:
            raise ConfigError(
                f"{self.name}: unsupported response_format {response_format!r}; use one of {', '.join(TTS_FORMATS)}"
            )
        for label, rate in (("sample_rate", sample_rate), ("pcm_rate", pcm_rate)):
            if rate is not None and rate <= 0:
                raise ConfigError(f"{self.name}: {label} must be positive, got {rate}")
        self.model = model
        self.voice = voice
        self.speed = speed
        self.response_format = response_format
        self.pcm_rate = pcm_rate
        self.sample_rate = sample_rate or pcm_rate
        self.instructions = instructions
        self.extra_body = dict(extra_body or {})
        self._connect(
            api_key, base_url, (timeout_s, connect_timeout_s, retry, max_retries), default_headers, client
        )

    def _wire_format(self, config: TTSConfig) -> str | None:
        """The ``response_format`` a config's ``format`` asks for, or ``None`` when the server has no such."""
        if config.format is None:
            return None
        fmt = _CONFIG_FORMAT.get(config.format, config.format)
        return fmt if fmt in TTS_FORMATS else None

    def _params(self, text: str, config: TTSConfig, response_format: str) -> dict[str, Any]:
        params: dict[str, Any] = {
            "input": text,
            "model": config.model or self.model,
            "voice": config.voice or self.voice,
            "response_format": response_format,
        }
        speed = config.speed if config.speed is not None else self.speed
        if speed is not None:
            params["speed"] = speed
        if self.instructions:
            params["instructions"] = self.instructions
        if self.extra_body:
            params["extra_body"] = dict(self.extra_body)
        return params

    async def speak_stream(self, text: str, config: TTSConfig | None = None) -> AsyncIterator[TTSChunk]:
        if not text.strip():
            return
        cfg = config or TTSConfig()
        wire = self._wire_format(cfg) or self.response_format
        params = self._params(text, cfg, wire)
        rate = cfg.sample_rate or self.sample_rate
        async for chunk in stream_with_retries(lambda: self._stream_once(params, wire, rate), self.retry):
            yield chunk

    async def speak(self, text: str, config: TTSConfig | None = None) -> TTSResult:
        """The whole speech; a ``TTSConfig.format`` the server speaks (at its own rate) comes straight from it."""
        cfg = config or TTSConfig()
        wire = self._wire_format(cfg)
        native = cfg.sample_rate is None or cfg.sample_rate == self.pcm_rate
        if cfg.format in (None, "pcm") or wire is None or not native or not text.strip():
            return await super().speak(text, cfg)
        params = self._params(text, cfg, wire)

        async def once() -> bytes:
            return b"".join([piece async for piece in self._audio_body(params)])

        audio = await call_with_retries(once, self.retry)
        assert cfg.format is not None
        return TTSResult(audio=audio, format=cfg.format, sample_rate=self.pcm_rate)

    async def _audio_body(self, params: dict[str, Any]) -> AsyncIterator[bytes]:
        """The speech body as it arrives, once its type and first bytes show it is audio."""
        try:
            async with self._client.audio.speech.with_streaming_response.create(**params) as resp:
                async for piece in checked_audio(
                    self.name, resp.iter_bytes(), resp.headers.get("content-type")
                ):
                    yield piece
        except _sdk_errors() as exc:
            raise map_openai_error(self.name, exc, self.timeout_s) from exc

    async def _stream_once(self, params: dict[str, Any], wire: str, rate: int) -> AsyncIterator[TTSChunk]:
        try:
            async for chunk in pcm_chunks(self._audio_body(params), wire, rate, pcm_rate=self.pcm_rate):
                yield chunk
        except CodecError as exc:
            raise ProviderResponseError(
                f"could not decode the {wire} audio: {exc}", provider=self.name, retryable=True
            ) from exc


__all__ = [
    "DEFAULT_LLM_MODEL",
    "DEFAULT_STT_MODEL",
    "DEFAULT_TTS_MODEL",
    "DEFAULT_TTS_VOICE",
    "OPENAI_PCM_RATE",
    "TTS_FORMATS",
    "OpenAILLMProvider",
    "OpenAISTTProvider",
    "OpenAITTSProvider",
    "OpenAIWhisperProvider",
    "make_client",
    "map_openai_error",
    "to_openai_messages",
    "to_openai_tool_choice",
    "to_openai_tools",
]
