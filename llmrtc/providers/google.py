"""Google Gemini through the ``google-genai`` async client (Gemini Developer API).

System messages become ``system_instruction``; tools become ``function_declarations`` (JSON Schema
parameters); tool calls and results travel as ``function_call`` / ``function_response`` parts; images as
``inline_data`` parts. Streams use ``:streamGenerateContent?alt=sse``; Gemini sends each function call whole,
so a streamed call arrives as one delta carrying all of its arguments.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from llmrtc.errors import (
    AuthenticationError,
    ConfigError,
    InvalidRequestError,
    ProviderError,
    ProviderResponseError,
)
from llmrtc.providers._errors import (
    connection_error,
    error_from_status,
    mapped_errors,
    timeout_error,
    truncated_stream,
)
from llmrtc.providers._messages import speaker_text, system_and_turns
from llmrtc.providers._validate import wrong_answer
from llmrtc.providers.base import LLMCapabilities, LLMProvider, ToolCallAccumulator
from llmrtc.providers.resilience import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    RetryPolicy,
    call_with_retries,
    check_timeouts,
    read_within,
    retry_policy,
    stream_with_retries,
    within,
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
    Usage,
)

if TYPE_CHECKING:
    from google.genai import Client

log = logging.getLogger("llmrtc.providers.google")

PROVIDER = "google"
_GENERATED_ID = "gemini_call_"
"""Prefix of call ids made up locally when Gemini sent none; they are not sent back to the API."""
_MAX_SIGNATURES = 256


class GeminiLLMProvider(LLMProvider):
    """Gemini with streaming, function calling and inline images."""

    name = PROVIDER
    capabilities = LLMCapabilities(streaming=True, tools=True, streaming_tools=True, vision=True)

    def __init__(
        self,
        api_key: str | None = None,
        model: str = "gemini-2.5-flash",
        base_url: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        api_version: str | None = None,
        *,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        max_retries: int | None = None,
    ) -> None:
        self.api_key = api_key or os.environ.get("GOOGLE_API_KEY") or os.environ.get("GEMINI_API_KEY")
        if not self.api_key:
            raise ConfigError("Gemini needs an API key: pass api_key or set GOOGLE_API_KEY")
        self.model = model
        self.base_url = base_url
        check_timeouts(timeout_s, connect_timeout_s)
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.retry = retry_policy(retry, max_retries)
        self.api_version = api_version
        self._client: Client | None = None
        # Gemini's thinking models sign their function calls; the signature must travel back with the call.
        self._signatures: OrderedDict[str, bytes] = OrderedDict()

    def _sdk(self) -> Client:
        if self._client is None:
            try:
                from google.genai import Client, types
            except ImportError as exc:  # pragma: no cover - depends on the installed extras
                raise ConfigError("Gemini needs the 'google' extra: pip install 'llmrtc[google]'") from exc
            # The client only knows a total timeout (which would cut long streams): the limits are applied
            # here instead, per request and per streamed chunk.
            options = types.HttpOptions(base_url=self.base_url, api_version=self.api_version)
            self._client = Client(api_key=self.api_key, vertexai=False, http_options=options)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aio.aclose()
            self._client = None

    def _timed_out(self) -> ProviderError:
        return timeout_error(PROVIDER, self.timeout_s)

    # ------------------------------------------------------------------------------------------ calls

    async def complete(self, request: LLMRequest) -> LLMResult:
        contents, config = self._build(request)
        model = request.model or self.model

        async def once() -> LLMResult:
            with mapped_errors(map_error):
                response = await within(
                    self._sdk().aio.models.generate_content(model=model, contents=contents, config=config),
                    self.connect_timeout_s + self.timeout_s,
                    self._timed_out,
                )
            return self._result(response.model_dump(exclude_none=True))

        return await call_with_retries(once, self.retry)

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        contents, config = self._build(request)
        model = request.model or self.model
        async for chunk in stream_with_retries(
            lambda: self._stream_once(model, contents, config), self.retry
        ):
            yield chunk

    async def _stream_once(self, model: str, contents: list[Any], config: Any) -> AsyncIterator[LLMChunk]:
        tools = ToolCallAccumulator(PROVIDER)
        usage = Usage()
        finish: str | None = None
        n_calls = 0
        with mapped_errors(map_error):
            stream = await within(
                self._sdk().aio.models.generate_content_stream(model=model, contents=contents, config=config),
                self.connect_timeout_s + self.timeout_s,
                self._timed_out,
            )
            async for response in read_within(stream, self.timeout_s, self._timed_out):
                data = response.model_dump(exclude_none=True)
                _check_shape(data)
                usage = _usage(data) or usage
                _raise_if_blocked(data)
                candidate = (data.get("candidates") or [{}])[0]
                for part in (candidate.get("content") or {}).get("parts") or []:
                    if part.get("text") and not part.get("thought"):
                        yield LLMChunk(content=part["text"])
                    elif "function_call" in part:
                        call = self._call_from_part(part)
                        delta = ToolCallDelta(
                            index=n_calls,
                            call_id=call.call_id,
                            name=call.name,
                            arguments_delta=json.dumps(call.arguments),
                        )
                        n_calls += 1
                        tools.add(delta)
                        yield LLMChunk(tool_call_deltas=[delta])
                finish = candidate.get("finish_reason") or finish
        if finish is None:
            raise truncated_stream(PROVIDER, "a finish reason")
        calls = tools.calls()
        yield LLMChunk(
            done=True, stop_reason=_stop_reason(finish, bool(calls)), usage=usage, tool_calls=calls
        )

    # ------------------------------------------------------------------------------------------ translation

    def _build(self, request: LLMRequest) -> tuple[list[Any], Any]:
        from google.genai import types

        system, contents = self.convert_messages(request.messages)
        config = types.GenerateContentConfig(
            system_instruction=system or None,
            temperature=request.temperature,
            top_p=request.top_p,
            max_output_tokens=request.max_tokens,
            stop_sequences=request.stop or None,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )
        if request.tools:
            config.tools = [
                types.Tool(
                    function_declarations=[
                        types.FunctionDeclaration(
                            name=tool.name,
                            description=tool.description,
                            parameters_json_schema=tool.parameters,
                        )
                        for tool in request.tools
                    ]
                )
            ]
            config.tool_config = types.ToolConfig(
                function_calling_config=convert_tool_choice(request.tool_choice)
            )
        return contents, config

    def convert_messages(self, messages: list[Message]) -> tuple[str, list[dict[str, Any]]]:
        """The system instruction and the ``contents`` list (roles ``user`` and ``model``)."""
        system, contents = system_and_turns(messages, self._parts, assistant_role="model", key="parts")
        return "\n\n".join(system), contents

    def _parts(self, msg: Message) -> list[dict[str, Any]]:
        if msg.role == "tool":
            if not msg.tool_name:
                raise ProviderResponseError("a tool message needs tool_name for Gemini", provider=PROVIDER)
            response: dict[str, Any] = {"name": msg.tool_name, "response": _tool_response(msg.content)}
            if msg.tool_call_id and not msg.tool_call_id.startswith(_GENERATED_ID):
                response["id"] = msg.tool_call_id
            return [{"function_response": response}]
        parts: list[dict[str, Any]] = []
        for att in msg.attachments:
            parts.append({"inline_data": {"mime_type": att.mime_type, "data": att.to_bytes()}})
        text = speaker_text(msg)
        if text:
            parts.append({"text": text})
        for call in msg.tool_calls:
            fc: dict[str, Any] = {"name": call.name, "args": call.arguments}
            if not call.call_id.startswith(_GENERATED_ID):
                fc["id"] = call.call_id
            part: dict[str, Any] = {"function_call": fc}
            signature = self._signatures.get(call.call_id)
            if signature is not None:
                part["thought_signature"] = signature
            parts.append(part)
        return parts

    def _call_from_part(self, part: dict[str, Any]) -> ToolCallRequest:
        fc = part["function_call"]
        args = fc.get("args") or {}
        if not isinstance(args, dict):
            raise ProviderResponseError(f"function call args are not an object: {args!r}", provider=PROVIDER)
        call_id = fc.get("id") or f"{_GENERATED_ID}{uuid.uuid4().hex[:12]}"
        signature = part.get("thought_signature")
        if isinstance(signature, bytes):
            self._signatures[call_id] = signature
            while len(self._signatures) > _MAX_SIGNATURES:
                self._signatures.popitem(last=False)
        return ToolCallRequest(call_id=call_id, name=fc.get("name") or "", arguments=args)

    def _result(self, data: dict[str, Any]) -> LLMResult:
        _check_shape(data)
        _raise_if_blocked(data)
        candidate = (data.get("candidates") or [{}])[0]
        text: list[str] = []
        calls: list[ToolCallRequest] = []
        for part in (candidate.get("content") or {}).get("parts") or []:
            if part.get("text") and not part.get("thought"):
                text.append(part["text"])
            elif "function_call" in part:
                calls.append(self._call_from_part(part))
        return LLMResult(
            full_text="".join(text),
            tool_calls=calls,
            stop_reason=_stop_reason(candidate.get("finish_reason"), bool(calls)),
            usage=_usage(data),
            raw=data,
        )


def convert_tool_choice(choice: ToolChoice) -> Any:
    from google.genai import types

    if choice == "auto":
        return types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.AUTO)
    if choice == "none":
        return types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.NONE)
    if choice == "required":
        return types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.ANY)
    return types.FunctionCallingConfig(
        mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=[choice.name]
    )


def _check_shape(data: dict[str, Any]) -> None:
    """A ``GenerateContentResponse`` has candidates, a prompt verdict or usage; anything else is another
    server's answer (the client parses any JSON object into an empty response)."""
    if not any(data.get(key) for key in ("candidates", "prompt_feedback", "usage_metadata")):
        raise wrong_answer(PROVIDER, "a Gemini answer", retryable=False, detail=str(sorted(data))[:200])


def _raise_if_blocked(data: dict[str, Any]) -> None:
    """Gemini refuses some prompts outright: no candidates, only ``prompt_feedback.block_reason``."""
    reason = (data.get("prompt_feedback") or {}).get("block_reason")
    if reason and not data.get("candidates"):
        name = str(getattr(reason, "value", reason))
        log.warning("prompt blocked", extra={"provider": PROVIDER, "block_reason": name})
        raise InvalidRequestError(f"Gemini blocked the prompt ({name})", provider=PROVIDER)


def _tool_response(content: str) -> dict[str, Any]:
    """Gemini wants an object: a JSON object result as is, anything else under ``output``."""
    try:
        value = json.loads(content)
    except (json.JSONDecodeError, ValueError):
        return {"output": content}
    return value if isinstance(value, dict) else {"output": value}


def _stop_reason(finish: Any, has_calls: bool) -> StopReason:
    if has_calls:
        return "tool_use"
    name = str(getattr(finish, "value", finish) or "")
    if name == "MAX_TOKENS":
        return "max_tokens"
    return "end_turn"


def _usage(data: dict[str, Any]) -> Usage | None:
    meta = data.get("usage_metadata")
    if not meta:
        return None
    return Usage(
        input_tokens=meta.get("prompt_token_count") or 0,
        output_tokens=meta.get("candidates_token_count") or 0,
    )


_AUTH_REASONS = frozenset(
    {"API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED", "ACCESS_TOKEN_EXPIRED"}
)
"""``google.rpc.ErrorInfo.reason`` values that mean the credentials were refused (sent with HTTP 400)."""


def _error_details(body: Any) -> list[dict[str, Any]]:
    """The ``details`` list of a Google error body (``{"error": {...}}`` or the inner object)."""
    if not isinstance(body, dict):
        return []
    inner = body.get("error", body)
    details = inner.get("details") if isinstance(inner, dict) else None
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def _reasons(details: list[dict[str, Any]]) -> set[str]:
    return {str(d["reason"]) for d in details if d.get("reason")}


def _retry_delay(details: list[dict[str, Any]]) -> float | None:
    """Seconds from ``google.rpc.RetryInfo.retryDelay`` (a protobuf Duration in JSON: ``"25s"``, ``"1.5s"``)."""
    for detail in details:
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            delay = detail.get("retryDelay")
            if isinstance(delay, str) and delay.endswith("s"):
                try:
                    return max(0.0, float(delay[:-1]))
                except ValueError:
                    return None
            if isinstance(delay, dict):  # {"seconds": 2, "nanos": 5e8}
                return float(delay.get("seconds") or 0) + float(delay.get("nanos") or 0) / 1e9
    return None


def map_error(exc: BaseException) -> ProviderError:
    """The :mod:`llmrtc.errors` error for an exception raised by google-genai or its transport.

    The delay of a 429 comes from the body's ``google.rpc.RetryInfo`` (Gemini sends no ``Retry-After``);
    a 400 whose ``google.rpc.ErrorInfo`` reason is ``API_KEY_INVALID`` is an :class:`AuthenticationError`.
    """
    if isinstance(exc, ProviderError):
        return exc
    from google.genai import errors

    if isinstance(exc, errors.APIError):
        headers = getattr(exc.response, "headers", None) or {}
        retry_after: str | float | None = headers.get("retry-after") if hasattr(headers, "get") else None
        details = _error_details(exc.details)
        if retry_after is None:
            retry_after = _retry_delay(details)
        status = int(exc.code or 500)
        message = exc.message or str(exc)
        if status in (400, 403) and _reasons(details) & _AUTH_REASONS:
            log.warning("Gemini refused the API key", extra={"provider": PROVIDER, "status": status})
            return AuthenticationError(
                f"authentication failed: {message}", provider=PROVIDER, status_code=status, retryable=False
            )
        return error_from_status(PROVIDER, status, message, retry_after)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return timeout_error(PROVIDER)
    try:
        import aiohttp

        if isinstance(exc, aiohttp.ServerTimeoutError):
            return timeout_error(PROVIDER)
        if isinstance(exc, aiohttp.ClientError):
            return connection_error(PROVIDER, exc)
    except ImportError:  # pragma: no cover - aiohttp is a core dependency
        pass
    try:
        import httpx2

        if isinstance(exc, httpx2.TimeoutException):
            return timeout_error(PROVIDER)
        if isinstance(exc, httpx2.TransportError):
            return connection_error(PROVIDER, exc)
    except ImportError:  # pragma: no cover - depends on the installed SDK
        pass
    if isinstance(exc, ConnectionError):
        return connection_error(PROVIDER, exc)
    if isinstance(exc, errors.UnknownApiResponseError | ValueError):
        return wrong_answer(PROVIDER, "a Gemini answer", detail=str(exc))
    return ProviderError(f"unexpected failure: {type(exc).__name__}: {exc}", provider=PROVIDER)


__all__ = ["GeminiLLMProvider", "convert_tool_choice", "map_error"]
