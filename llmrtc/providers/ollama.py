"""Ollama's native API: ``/api/chat`` with NDJSON streaming, tools and images; LLaVA vision on top.

Ollama sends tool calls whole (arguments as a JSON object, not string pieces); each one becomes one
:class:`ToolCallDelta` so consumers see the same stream shape as with OpenAI. Plain aiohttp, no SDK.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from llmrtc.errors import ProviderResponseError
from llmrtc.providers._errors import connection_error
from llmrtc.providers._http import (
    TRANSPORT_ERRORS,
    SessionHolder,
    join_url,
    map_transport_error,
    ndjson_objects,
    raise_for_status,
)
from llmrtc.providers._messages import function_tools, speaker_text
from llmrtc.providers._validate import json_object, wrong_answer
from llmrtc.providers.base import LLMCapabilities, LLMProvider, ToolCallAccumulator, VisionProvider
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
    ToolCallDelta,
    ToolDefinition,
    Usage,
    VisionRequest,
    VisionResult,
)

log = logging.getLogger("llmrtc.providers.ollama")

OLLAMA_BASE_URL = "http://localhost:11434"
DEFAULT_OLLAMA_MODEL = "llama3.2"
DEFAULT_LLAVA_MODEL = "llava:7b"

_VISION_MODEL_WORDS = (
    "llava",
    "vision",
    "moondream",
    "minicpm-v",
    "gemma3",
    "llama4",
    "mistral-small3",
    "pixtral",
    "qwen2-vl",
    "qwen2.5vl",
    "qwen2.5-vl",
    "qwen3-vl",
    "internvl",
    "-vl",
    "vl:",
)


def model_sees_images(model: str) -> bool:
    """Whether a local model (an Ollama or LM Studio name) takes images, guessed from its name: LLaVA and
    its kin, ``*-vision``, Moondream, MiniCPM-V, Gemma 3, Llama 4, Mistral Small 3.x, Pixtral, Qwen-VL,
    InternVL. Pass ``vision=`` (``LLM_VISION``) to the provider when the guess is wrong."""
    name = model.lower()
    return any(word in name for word in _VISION_MODEL_WORDS)


_DONE: dict[str, StopReason] = {"stop": "end_turn", "length": "max_tokens", "load": "end_turn"}


def to_ollama_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Messages in Ollama's chat format (images as raw base64, tool results with ``tool_name``)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        entry: dict[str, Any] = {"role": m.role, "content": speaker_text(m)}
        if m.attachments:
            entry["images"] = [a.base64_data for a in m.attachments]
        if m.role == "assistant" and m.tool_calls:
            entry["tool_calls"] = [
                {"id": c.call_id, "function": {"name": c.name, "arguments": c.arguments}}
                for c in m.tool_calls
            ]
        if m.role == "tool":
            entry["tool_name"] = m.tool_name or ""
            if m.tool_call_id:
                entry["tool_call_id"] = m.tool_call_id
        out.append(entry)
    return out


def to_ollama_tools(tools: list[ToolDefinition]) -> list[dict[str, Any]]:
    """Ollama takes tools in the OpenAI function format."""
    return function_tools(tools)


class _OllamaClient:
    """The HTTP side shared by the LLM and vision providers."""

    name = "ollama"

    def _setup_http(
        self,
        base_url: str,
        api_key: str | None,
        limits: tuple[float, float, RetryPolicy | None, int | None],
    ) -> None:
        timeout_s, connect_timeout_s, retry, max_retries = limits
        check_timeouts(timeout_s, connect_timeout_s)
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.retry = retry_policy(retry, max_retries)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = SessionHolder(timeout_s, headers, connect_timeout_s=connect_timeout_s)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _chat_once(self, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            async with self._http.get().post(join_url(self.base_url, "/api/chat"), json=payload) as resp:
                await raise_for_status(self.name, resp)
                body = await resp.read()
                content_type = resp.headers.get("Content-Type")
        except TRANSPORT_ERRORS as exc:
            raise map_transport_error(self.name, exc, self.timeout_s) from exc
        return json_object(self.name, body, content_type, required={"message": dict})


def _tool_delta(index: int, raw: dict[str, Any]) -> ToolCallDelta:
    fn = raw.get("function") or {}
    args = fn.get("arguments", {})
    arguments = args if isinstance(args, str) else json.dumps(args)
    return ToolCallDelta(
        index=index,
        call_id=raw.get("id") or f"call_{index}",
        name=fn.get("name", ""),
        arguments_delta=arguments,
    )


def _usage(data: dict[str, Any]) -> Usage | None:
    if "prompt_eval_count" not in data and "eval_count" not in data:
        return None
    return Usage(
        input_tokens=int(data.get("prompt_eval_count", 0)), output_tokens=int(data.get("eval_count", 0))
    )


class OllamaLLMProvider(_OllamaClient, LLMProvider):
    """A model served by Ollama: NDJSON streaming, tools (streamed whole), images for vision models.

    ``vision`` says whether the model takes images (``capabilities.vision``); unset, it is guessed from the
    model's name (:func:`model_sees_images`). A model that cannot see gets images described by the vision
    provider instead.
    """

    name = "ollama"
    capabilities = LLMCapabilities(streaming=True, tools=True, streaming_tools=True, vision=True)

    def __init__(
        self,
        model: str = DEFAULT_OLLAMA_MODEL,
        base_url: str = OLLAMA_BASE_URL,
        *,
        api_key: str | None = None,
        keep_alive: str | None = None,
        options: dict[str, Any] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
        vision: bool | None = None,
    ) -> None:
        self.model = model
        sees = model_sees_images(model) if vision is None else vision
        self.capabilities = replace(type(self).capabilities, vision=sees)
        self.keep_alive = keep_alive
        self.options = dict(options or {})
        self._setup_http(base_url, api_key, (timeout_s, connect_timeout_s, retry, max_retries))

    def _payload(self, request: LLMRequest, stream: bool) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": request.model or self.model,
            "messages": to_ollama_messages(request.messages),
            "stream": stream,
        }
        options = dict(self.options)
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.top_p is not None:
            options["top_p"] = request.top_p
        if request.max_tokens is not None:
            options["num_predict"] = request.max_tokens
        if request.stop:
            options["stop"] = request.stop
        if options:
            payload["options"] = options
        if self.keep_alive is not None:
            payload["keep_alive"] = self.keep_alive
        tools = request.tools
        choice = request.tool_choice
        if choice == "none":
            tools = []
        elif not isinstance(choice, str):
            tools = [t for t in tools if t.name == choice.name]
        if tools:
            payload["tools"] = to_ollama_tools(tools)
        return payload

    async def complete(self, request: LLMRequest) -> LLMResult:
        payload = self._payload(request, stream=False)

        async def once() -> LLMResult:
            data = await self._chat_once(payload)
            message = data.get("message") or {}
            acc = ToolCallAccumulator(self.name)
            for i, raw in enumerate(message.get("tool_calls") or []):
                acc.add(_tool_delta(i, raw))
            calls = acc.calls()
            stop: StopReason = (
                "tool_use" if calls else _DONE.get(str(data.get("done_reason", "stop")), "end_turn")
            )
            return LLMResult(
                full_text=str(message.get("content") or ""),
                tool_calls=calls,
                stop_reason=stop,
                usage=_usage(data),
                raw=data,
            )

        return await call_with_retries(once, self.retry)

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        payload = self._payload(request, stream=True)
        async for chunk in stream_with_retries(lambda: self._stream_once(payload), self.retry):
            yield chunk

    async def _stream_once(self, payload: dict[str, Any]) -> AsyncIterator[LLMChunk]:
        acc = ToolCallAccumulator(self.name)
        final: dict[str, Any] | None = None
        n_calls = 0
        try:
            async with self._http.get().post(join_url(self.base_url, "/api/chat"), json=payload) as resp:
                await raise_for_status(self.name, resp)
                async for obj in ndjson_objects(self.name, resp):
                    if obj.get("error"):
                        raise ProviderResponseError(str(obj["error"]), provider=self.name)
                    if "message" not in obj and "done" not in obj:
                        raise wrong_answer(
                            self.name, "an Ollama chat stream", retryable=False, detail=str(obj)[:200]
                        )
                    message = obj.get("message") or {}
                    deltas: list[ToolCallDelta] = []
                    for raw in message.get("tool_calls") or []:
                        d = _tool_delta(n_calls, raw)
                        n_calls += 1
                        acc.add(d)
                        deltas.append(d)
                    content = str(message.get("content") or "")
                    if content or deltas:
                        yield LLMChunk(content=content, tool_call_deltas=deltas)
                    if obj.get("done"):
                        final = obj
                        break
        except TRANSPORT_ERRORS as exc:
            raise map_transport_error(self.name, exc, self.timeout_s) from exc
        if final is None:
            raise connection_error(self.name, "the stream ended before the answer was complete")
        calls = acc.calls()
        reason = str(final.get("done_reason") or "stop")
        stop: StopReason = "tool_use" if calls else _DONE.get(reason, "end_turn")
        yield LLMChunk(done=True, stop_reason=stop, tool_calls=calls, usage=_usage(final))


class LlavaVisionProvider(_OllamaClient, VisionProvider):
    """Describes images with a LLaVA (or any vision) model served by Ollama."""

    name = "llava"

    def __init__(
        self,
        model: str = DEFAULT_LLAVA_MODEL,
        base_url: str = OLLAMA_BASE_URL,
        *,
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.model = model
        self._setup_http(base_url, api_key, (timeout_s, connect_timeout_s, retry, max_retries))

    async def describe(self, request: VisionRequest) -> VisionResult:
        if not request.attachments:
            raise ProviderResponseError("describe() needs at least one image attachment", provider=self.name)
        payload = {
            "model": self.model,
            "stream": False,
            "messages": [
                {
                    "role": "user",
                    "content": request.prompt,
                    "images": [a.base64_data for a in request.attachments],
                }
            ],
        }

        async def once() -> VisionResult:
            data = await self._chat_once(payload)
            text = str((data.get("message") or {}).get("content") or "").strip()
            if not text:
                raise ProviderResponseError("the model returned an empty description", provider=self.name)
            return VisionResult(description=text)

        return await call_with_retries(once, self.retry)


__all__ = [
    "DEFAULT_LLAVA_MODEL",
    "DEFAULT_OLLAMA_MODEL",
    "OLLAMA_BASE_URL",
    "LlavaVisionProvider",
    "OllamaLLMProvider",
    "model_sees_images",
    "to_ollama_messages",
    "to_ollama_tools",
]
