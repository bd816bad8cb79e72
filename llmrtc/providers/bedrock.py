"""AWS Bedrock through ``aioboto3`` (bedrock-runtime Converse and ConverseStream).

One request shape for every Bedrock model family (Claude, Nova, Llama, Mistral...): ``system`` blocks,
``messages`` of content blocks (``text``, ``image`` with raw bytes, ``toolUse``, ``toolResult``),
``toolConfig`` and ``inferenceConfig``. Credentials come from the standard AWS chain (environment, shared
config and credentials files, SSO, container and instance roles) unless given explicitly.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

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
from llmrtc.providers._messages import speaker_text, system_and_turns, tool_call_id
from llmrtc.providers._validate import check_content_type, check_shape, media_type, wrong_answer
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
    Usage,
)

log = logging.getLogger("llmrtc.providers.bedrock")

PROVIDER = "bedrock"
_STOP_REASONS: dict[str, StopReason] = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
}
_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
# Bedrock error codes (HTTP ones are capitalised, in-stream ones camel-cased) to the status they stand for.
_CODE_STATUS = {
    "throttlingexception": 429,
    "servicequotaexceededexception": 429,
    "serviceunavailableexception": 503,
    "internalserverexception": 500,
    "modelstreamerrorexception": 500,
    "modelnotreadyexception": 503,
    "modeltimeoutexception": 408,
    "validationexception": 400,
    "modelerrorexception": 400,
    "resourcenotfoundexception": 404,
    "accessdeniedexception": 403,
    "unrecognizedclientexception": 401,
    "expiredtokenexception": 401,
}


@dataclass(frozen=True, slots=True)
class AWSCredentials:
    """Explicit AWS credentials; leave them out to use the standard credential chain."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, str | None]) -> AWSCredentials:
        """Accepts snake_case, camelCase (``accessKeyId``) or the AWS env names (``aws_access_key_id``)."""
        norm = {k.lower().replace("_", "").removeprefix("aws"): v for k, v in data.items()}
        key, secret = norm.get("accesskeyid"), norm.get("secretaccesskey")
        if not key or not secret:
            raise ConfigError("Bedrock credentials need access_key_id and secret_access_key")
        return cls(key, secret, norm.get("sessiontoken"))


class BedrockLLMProvider(LLMProvider):
    """A Bedrock model through Converse / ConverseStream, with tools and images."""

    name = PROVIDER
    capabilities = LLMCapabilities(streaming=True, tools=True, streaming_tools=True, vision=True)

    def __init__(
        self,
        region: str = "us-east-1",
        model: str = "anthropic.claude-sonnet-4-20250514-v1:0",
        credentials: AWSCredentials | Mapping[str, str | None] | None = None,
        endpoint_url: str | None = None,
        max_tokens: int = 4096,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        profile: str | None = None,
        *,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        max_retries: int | None = None,
    ) -> None:
        self.region = region
        self.model = model
        self.credentials = (
            credentials
            if credentials is None or isinstance(credentials, AWSCredentials)
            else AWSCredentials.from_mapping(credentials)
        )
        self.endpoint_url = endpoint_url
        self.max_tokens = max_tokens
        check_timeouts(timeout_s, connect_timeout_s)
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.retry = retry_policy(retry, max_retries)
        self.profile = profile
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._lock = asyncio.Lock()

    async def _sdk(self) -> Any:
        async with self._lock:
            if self._client is None:
                try:
                    import aioboto3
                    from botocore.config import Config
                except ImportError as exc:  # pragma: no cover - depends on the installed extras
                    raise ConfigError(
                        "Bedrock needs the 'bedrock' extra: pip install 'llmrtc[bedrock]'"
                    ) from exc
                creds = self.credentials
                session = aioboto3.Session(
                    aws_access_key_id=creds.access_key_id if creds else None,
                    aws_secret_access_key=creds.secret_access_key if creds else None,
                    aws_session_token=creds.session_token if creds else None,
                    region_name=self.region,
                    profile_name=self.profile,
                )
                config = Config(
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    connect_timeout=self.connect_timeout_s,
                    read_timeout=self.timeout_s,
                )
                stack = AsyncExitStack()
                try:
                    self._client = await stack.enter_async_context(
                        session.client("bedrock-runtime", endpoint_url=self.endpoint_url, config=config)
                    )
                except Exception as exc:
                    await stack.aclose()
                    raise map_error(exc) from exc
                self._stack = stack
            return self._client

    async def aclose(self) -> None:
        async with self._lock:
            if self._stack is not None:
                await self._stack.aclose()
            self._stack = None
            self._client = None

    # ------------------------------------------------------------------------------------------ calls

    async def complete(self, request: LLMRequest) -> LLMResult:
        params = build_params(request, self.model, self.max_tokens)

        async def once() -> LLMResult:
            client = await self._sdk()
            with mapped_errors(map_error):
                response = await client.converse(**params)
            _check_answer(response, "json")
            check_shape(PROVIDER, response, {"output": dict})
            return _result(response)

        return await call_with_retries(once, self.retry)

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        params = build_params(request, self.model, self.max_tokens)
        async for chunk in stream_with_retries(lambda: self._stream_once(params), self.retry):
            yield chunk

    async def _stream_once(self, params: dict[str, Any]) -> AsyncIterator[LLMChunk]:
        client = await self._sdk()
        tools = ToolCallAccumulator(PROVIDER)
        usage: Usage | None = None
        stop_reason: StopReason | None = None
        events: Any = None
        try:
            response = await client.converse_stream(**params)
            _check_answer(response, "eventstream")
            events = response["stream"]
            async for event in events:
                if "contentBlockStart" in event:
                    start = event["contentBlockStart"]
                    use = (start.get("start") or {}).get("toolUse")
                    if use:
                        delta = ToolCallDelta(
                            index=start.get("contentBlockIndex", 0),
                            call_id=use["toolUseId"],
                            name=use["name"],
                        )
                        tools.add(delta)
                        yield LLMChunk(tool_call_deltas=[delta])
                elif "contentBlockDelta" in event:
                    block = event["contentBlockDelta"]
                    piece = block.get("delta") or {}
                    if piece.get("text"):
                        yield LLMChunk(content=piece["text"])
                    elif "toolUse" in piece and piece["toolUse"].get("input"):
                        delta = ToolCallDelta(
                            index=block.get("contentBlockIndex", 0), arguments_delta=piece["toolUse"]["input"]
                        )
                        tools.add(delta)
                        yield LLMChunk(tool_call_deltas=[delta])
                elif "messageStop" in event:
                    stop_reason = _STOP_REASONS.get(event["messageStop"].get("stopReason", ""), "end_turn")
                elif "metadata" in event:
                    usage = _usage(event["metadata"].get("usage"))
        except ProviderError:
            raise
        except Exception as exc:
            raise map_error(exc) from exc
        finally:
            if events is not None:
                events.close()  # release the connection, also when cut or abandoned mid-way
        if stop_reason is None:
            raise truncated_stream(PROVIDER, "messageStop")
        yield LLMChunk(done=True, stop_reason=stop_reason, usage=usage, tool_calls=tools.calls())


# ---------------------------------------------------------------------------------------------- translation


def build_params(request: LLMRequest, model: str, max_tokens: int) -> dict[str, Any]:
    """The keyword arguments of ``converse`` / ``converse_stream`` for ``request``."""
    system, messages = convert_messages(request.messages)
    params: dict[str, Any] = {"modelId": request.model or model, "messages": messages}
    if system:
        params["system"] = [{"text": text} for text in system]
    inference: dict[str, Any] = {"maxTokens": request.max_tokens or max_tokens}
    if request.temperature is not None:
        inference["temperature"] = min(request.temperature, 1.0)
    if request.top_p is not None:
        inference["topP"] = request.top_p
    if request.stop:
        inference["stopSequences"] = request.stop
    params["inferenceConfig"] = inference
    history_has_tools = any(msg.tool_calls or msg.role == "tool" for msg in request.messages)
    if request.tools and (request.tool_choice != "none" or history_has_tools):
        config: dict[str, Any] = {
            "tools": [
                {
                    "toolSpec": {
                        "name": tool.name,
                        "description": tool.description or tool.name,
                        "inputSchema": {"json": tool.parameters},
                    }
                }
                for tool in request.tools
            ]
        }
        choice = convert_tool_choice(request.tool_choice)
        if choice is not None:
            config["toolChoice"] = choice
        params["toolConfig"] = config
    return params


def convert_tool_choice(choice: ToolChoice) -> dict[str, Any] | None:
    """Bedrock's ``toolChoice``; ``None`` for "none", which Bedrock cannot express (tools are left out)."""
    if choice == "auto":
        return {"auto": {}}
    if choice == "required":
        return {"any": {}}
    if choice == "none":
        return None
    return {"tool": {"name": choice.name}}


def convert_messages(messages: list[Message]) -> tuple[list[str], list[dict[str, Any]]]:
    return system_and_turns(messages, _blocks)


def _blocks(msg: Message) -> list[dict[str, Any]]:
    if msg.role == "tool":
        call_id = tool_call_id(msg, PROVIDER)
        content: list[dict[str, Any]]
        try:
            value = json.loads(msg.content)
        except (json.JSONDecodeError, ValueError):
            value = None
        content = [{"json": value}] if isinstance(value, dict) else [{"text": msg.content or "(empty)"}]
        status = "error" if isinstance(value, dict) and "error" in value and len(value) <= 2 else "success"
        return [{"toolResult": {"toolUseId": call_id, "content": content, "status": status}}]
    blocks: list[dict[str, Any]] = []
    for att in msg.attachments:
        fmt = _IMAGE_FORMATS.get(att.mime_type.lower())
        if fmt is None:
            raise ProviderResponseError(
                f"Bedrock takes png, jpeg, gif or webp images, not {att.mime_type}", provider=PROVIDER
            )
        blocks.append({"image": {"format": fmt, "source": {"bytes": att.to_bytes()}}})
    text = speaker_text(msg)
    if text:
        blocks.append({"text": text})
    for call in msg.tool_calls:
        blocks.append({"toolUse": {"toolUseId": call.call_id, "name": call.name, "input": call.arguments}})
    return blocks


def _check_answer(response: Mapping[str, Any], expect: str) -> None:
    """botocore reads any 200 body as the operation's answer (an HTML page parses as an empty one): the
    declared content type must be JSON, or the AWS event stream for ConverseStream."""
    headers = (response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
    content_type = headers.get("content-type")
    if expect == "eventstream":
        if media_type(content_type) not in ("", "application/vnd.amazon.eventstream"):
            raise wrong_answer(PROVIDER, "an event stream", detail=str(content_type))
    else:
        check_content_type(PROVIDER, content_type, "json")


def _usage(data: Mapping[str, Any] | None) -> Usage | None:
    if not data:
        return None
    return Usage(input_tokens=data.get("inputTokens") or 0, output_tokens=data.get("outputTokens") or 0)


def _result(response: Mapping[str, Any]) -> LLMResult:
    message = (response.get("output") or {}).get("message") or {}
    text: list[str] = []
    calls: list[ToolCallRequest] = []
    for block in message.get("content") or []:
        if "text" in block:
            text.append(block["text"])
        elif "toolUse" in block:
            use = block["toolUse"]
            args = use.get("input") or {}
            if not isinstance(args, dict):
                raise ProviderResponseError(f"toolUse input is not an object: {args!r}", provider=PROVIDER)
            calls.append(ToolCallRequest(call_id=use["toolUseId"], name=use["name"], arguments=args))
    return LLMResult(
        full_text="".join(text),
        tool_calls=calls,
        stop_reason=_STOP_REASONS.get(response.get("stopReason", ""), "end_turn"),
        usage=_usage(response.get("usage")),
        raw=dict(response),
    )


# ---------------------------------------------------------------------------------------------- errors


def map_error(exc: BaseException) -> ProviderError:
    """The :mod:`llmrtc.errors` error for an exception raised by botocore, aiobotocore or aiohttp."""
    if isinstance(exc, ProviderError):
        return exc
    import aiohttp
    from botocore import exceptions as bce

    if isinstance(exc, bce.ClientError):
        error = exc.response.get("Error") or {}
        meta = exc.response.get("ResponseMetadata") or {}
        code = str(error.get("Code") or "")
        status = int(meta.get("HTTPStatusCode") or 0)
        if status < 400:  # a modelled exception inside a 200 event stream
            status = _CODE_STATUS.get(code.lower(), 500)
        headers = meta.get("HTTPHeaders") or {}
        message = f"{code}: {error.get('Message') or exc}" if code else str(exc)
        return error_from_status(PROVIDER, status, message, headers.get("retry-after"))
    if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError | bce.NoRegionError):
        log.warning("no usable AWS credentials", extra={"provider": PROVIDER})
        return AuthenticationError(
            f"{exc}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or run with a role)",
            provider=PROVIDER,
        )
    if isinstance(exc, bce.ParamValidationError):
        return InvalidRequestError(f"invalid request: {exc}", provider=PROVIDER)
    if isinstance(exc, bce.ReadTimeoutError | bce.ConnectTimeoutError | TimeoutError | asyncio.TimeoutError):
        return timeout_error(PROVIDER)
    if isinstance(
        exc, bce.HTTPClientError | bce.EndpointConnectionError | aiohttp.ClientError | ConnectionError
    ):
        return connection_error(PROVIDER, exc)
    if isinstance(exc, bce.ChecksumError | ValueError):
        return wrong_answer(PROVIDER, "a readable answer", detail=f"{type(exc).__name__}: {exc}")
    from botocore.eventstream import ChecksumMismatch, InvalidHeadersLength, InvalidPayloadLength
    from botocore.parsers import ResponseParserError

    if isinstance(exc, ResponseParserError | ChecksumMismatch | InvalidHeadersLength | InvalidPayloadLength):
        return wrong_answer(PROVIDER, "a readable answer", detail=f"{type(exc).__name__}: {exc}")
    return ProviderError(f"unexpected failure: {type(exc).__name__}: {exc}", provider=PROVIDER)


__all__ = ["AWSCredentials", "BedrockLLMProvider", "build_params", "convert_messages", "map_error"]
