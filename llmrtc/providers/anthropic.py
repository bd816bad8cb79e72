"""Anthropic Claude over the Messages API (the official ``anthropic`` SDK).

System messages become the ``system`` parameter; tools become ``tools`` with ``input_schema``; tool calls
and results travel as ``tool_use`` / ``tool_result`` content blocks; images as base64 ``image`` blocks.
Streams assemble ``input_json_delta`` pieces into complete tool calls.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from llmrtc.errors import ConfigError, ProviderError, ProviderResponseError
from llmrtc.providers._errors import (
    connection_error,
    error_from_status,
    mapped_errors,
    timeout_error,
    truncated_stream,
)
from llmrtc.providers._messages import speaker_text, system_and_turns, tool_call_id
from llmrtc.providers._validate import accepts, json_object, unexpected_body, wrong_answer
from llmrtc.providers.base import LLMCapabilities, LLMProvider, ToolCallAccumulator
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
    ToolCallRequest,
    ToolChoice,
    ToolDefinition,
    Usage,
)

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic

log = logging.getLogger("llmrtc.providers.anthropic")

PROVIDER = "anthropic"
_STOP_REASONS: dict[str, StopReason] = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
}
# Errors delivered inside a 200 SSE stream carry only a type: map it to the status the API uses for it.
_ERROR_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


class AnthropicLLMProvider(LLMProvider):
    """Claude through the Messages API, with streaming, tools and image input."""

    name = PROVIDER
    capabilities = LLMCapabilities(streaming=True, tools=True, streaming_tools=True, vision=True)

    def __init__(
        self,
        api_key: str | None = None,
        model: str = "claude-sonnet-5-5",
        max_tokens: int = 4096,
        base_url: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        *,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        max_retries: int | None = None,
    ) -> None:
        self.api_key = api_key or os.environ.get("ANTHROPIC_API_KEY")
        if not self.api_key:
            raise ConfigError("Anthropic needs an API key: pass api_key or set ANTHROPIC_API_KEY")
        self.model = model
        self.max_tokens = max_tokens
        self.base_url = base_url
        check_timeouts(timeout_s, connect_timeout_s)
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.retry = retry_policy(retry, max_retries)
        self._client: AsyncAnthropic | None = None

    def _sdk(self) -> AsyncAnthropic:
        if self._client is None:
            try:
                import httpx2
                from anthropic import AsyncAnthropic
            except ImportError as exc:  # pragma: no cover - depends on the installed extras
                raise ConfigError(
                    "Anthropic needs the 'anthropic' extra: pip install 'llmrtc[anthropic]'"
                ) from exc
            from anthropic import DefaultAsyncHttpxClient

            from llmrtc.providers._tls import shared_ssl_context

            timeout = httpx2.Timeout(self.timeout_s, connect=self.connect_timeout_s)
            self._client = AsyncAnthropic(
                api_key=self.api_key,
                base_url=self.base_url,
                timeout=timeout,
                max_retries=0,
                http_client=DefaultAsyncHttpxClient(verify=shared_ssl_context(), timeout=timeout),
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    # ------------------------------------------------------------------------------------------ calls

    async def complete(self, request: LLMRequest) -> LLMResult:
        params = build_params(request, self.model, self.max_tokens)

        async def once() -> LLMResult:
            with mapped_errors(map_error):
                raw = await self._sdk().messages.with_raw_response.create(**params)
                body = await raw.read()
            message = json_object(PROVIDER, body, raw.headers.get("content-type"), required={"content": list})
            return _result_from_message(message)

        return await call_with_retries(once, self.retry)

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        params = build_params(request, self.model, self.max_tokens)
        async for chunk in stream_with_retries(lambda: self._stream_once(params), self.retry):
            yield chunk

    async def _stream_once(self, params: dict[str, Any]) -> AsyncIterator[LLMChunk]:
        tools = ToolCallAccumulator(PROVIDER)
        usage = Usage()
        stop_reason: StopReason = "end_turn"
        finished = False
        with mapped_errors(map_error):
            events = await self._sdk().messages.create(**params, stream=True)
            content_type = events.response.headers.get("content-type")
            if not accepts(content_type, "sse"):
                body = await events.response.aread()
                await events.close()
                raise unexpected_body(PROVIDER, body, content_type, "sse")
            async with events:
                async for event in events:
                    kind = event.type
                    if kind == "message_start":
                        usage.input_tokens = event.message.usage.input_tokens or 0
                    elif kind == "content_block_start":
                        block = event.content_block
                        if block.type == "tool_use":
                            delta = ToolCallDelta(index=event.index, call_id=block.id, name=block.name)
                            tools.add(delta)
                            yield LLMChunk(tool_call_deltas=[delta])
                    elif kind == "content_block_delta":
                        piece = event.delta
                        if piece.type == "text_delta" and piece.text:
                            yield LLMChunk(content=piece.text)
                        elif piece.type == "input_json_delta" and piece.partial_json:
                            delta = ToolCallDelta(index=event.index, arguments_delta=piece.partial_json)
                            tools.add(delta)
                            yield LLMChunk(tool_call_deltas=[delta])
                    elif kind == "message_delta":
                        stop_reason = _STOP_REASONS.get(event.delta.stop_reason or "", "end_turn")
                        if event.usage is not None and event.usage.output_tokens is not None:
                            usage.output_tokens = event.usage.output_tokens
                    elif kind == "message_stop":
                        finished = True
        if not finished:
            raise truncated_stream(PROVIDER, "message_stop")
        yield LLMChunk(done=True, stop_reason=stop_reason, usage=usage, tool_calls=tools.calls())


# ---------------------------------------------------------------------------------------------- translation


def build_params(request: LLMRequest, model: str, max_tokens: int) -> dict[str, Any]:
    """The keyword arguments of ``messages.create`` for ``request``."""
    system, messages = convert_messages(request.messages)
    params: dict[str, Any] = {
        "model": request.model or model,
        "max_tokens": request.max_tokens or max_tokens,
        "messages": messages,
    }
    if system:
        params["system"] = system
    # This SDK no longer lists the sampling fields as arguments; the API still takes them in the body
    # (recent models accept one of the two, so temperature wins).
    sampling: dict[str, Any] = {}
    if request.temperature is not None:
        sampling["temperature"] = min(request.temperature, 1.0)
    elif request.top_p is not None:
        sampling["top_p"] = request.top_p
    if sampling:
        params["extra_body"] = sampling
    if request.stop:
        params["stop_sequences"] = request.stop
    if request.tools:
        params["tools"] = [convert_tool(tool) for tool in request.tools]
        params["tool_choice"] = convert_tool_choice(request.tool_choice)
    return params


def convert_tool(tool: ToolDefinition) -> dict[str, Any]:
    return {"name": tool.name, "description": tool.description, "input_schema": tool.parameters}


def convert_tool_choice(choice: ToolChoice) -> dict[str, Any]:
    if choice == "auto":
        return {"type": "auto"}
    if choice == "none":
        return {"type": "none"}
    if choice == "required":
        return {"type": "any"}
    return {"type": "tool", "name": choice.name}


def convert_messages(messages: list[Message]) -> tuple[str, list[dict[str, Any]]]:
    """Split out the system prompt and turn the rest into alternating user/assistant block lists."""
    system_parts, out = system_and_turns(messages, _blocks)
    return "\n\n".join(system_parts), out


def _blocks(msg: Message) -> list[dict[str, Any]]:
    if msg.role == "tool":
        return [{"type": "tool_result", "tool_use_id": tool_call_id(msg, PROVIDER), "content": msg.content}]
    blocks: list[dict[str, Any]] = []
    for att in msg.attachments:
        blocks.append(
            {
                "type": "image",
                "source": {"type": "base64", "media_type": att.mime_type, "data": att.base64_data},
            }
        )
    text = speaker_text(msg)
    if text:
        blocks.append({"type": "text", "text": text})
    for call in msg.tool_calls:
        blocks.append({"type": "tool_use", "id": call.call_id, "name": call.name, "input": call.arguments})
    return blocks


def _result_from_message(message: dict[str, Any]) -> LLMResult:
    text: list[str] = []
    calls: list[ToolCallRequest] = []
    for block in message.get("content") or []:
        if block.get("type") == "text":
            text.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            args = block.get("input") or {}
            if not isinstance(args, dict):
                raise ProviderResponseError(f"tool_use input is not an object: {args!r}", provider=PROVIDER)
            calls.append(ToolCallRequest(call_id=block["id"], name=block["name"], arguments=args))
    usage = message.get("usage") or {}
    return LLMResult(
        full_text="".join(text),
        tool_calls=calls,
        stop_reason=_STOP_REASONS.get(message.get("stop_reason") or "", "end_turn"),
        usage=Usage(
            input_tokens=usage.get("input_tokens") or 0, output_tokens=usage.get("output_tokens") or 0
        ),
        raw=message,
    )


# ---------------------------------------------------------------------------------------------- errors


def map_error(exc: BaseException) -> ProviderError:
    """The :mod:`llmrtc.errors` error for an exception raised by the SDK or its transport."""
    if isinstance(exc, ProviderError):
        return exc
    import anthropic
    import httpx2

    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        if status < 400:  # an ``error`` event inside a 200 stream
            status = _ERROR_TYPE_STATUS.get(exc.type or "", 500)
        message = exc.api_message or str(exc)
        return error_from_status(PROVIDER, status, message, exc.response.headers.get("retry-after"))
    if isinstance(exc, anthropic.APITimeoutError | httpx2.TimeoutException):
        return timeout_error(PROVIDER)
    if isinstance(exc, anthropic.APIConnectionError | httpx2.TransportError):
        return connection_error(PROVIDER, exc)
    if isinstance(exc, json.JSONDecodeError | ValueError):
        return wrong_answer(PROVIDER, "a readable answer", detail=str(exc))
    if isinstance(exc, anthropic.AnthropicError):
        return ProviderError(str(exc), provider=PROVIDER)
    return ProviderError(f"unexpected failure: {type(exc).__name__}: {exc}", provider=PROVIDER)


__all__ = ["AnthropicLLMProvider", "build_params", "convert_messages", "map_error"]
