"""One small error hierarchy for the whole framework.

Every error carries a stable ``code`` (for wire events and logs) and a message a user can act on.
Provider errors say whether a retry may help (``retryable``) and, when the vendor said so, after how long.
"""

from __future__ import annotations

from typing import Any


class LLMRTCError(Exception):
    """Base class of every error raised by llmrtc."""

    code: str = "llmrtc_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe summary (code and message only: never secrets or payloads)."""
        return {"code": self.code, "message": self.message}


class ConfigError(LLMRTCError):
    """The configuration is missing or invalid; the message says what to set."""

    code = "config_error"


# ---------------------------------------------------------------------------------------------- providers


class ProviderError(LLMRTCError):
    """A vendor call failed.

    ``retryable`` is true when the same request may succeed later (rate limits, server errors, timeouts,
    dropped connections) and false when it will not (bad credentials, invalid requests).
    """

    code = "provider_error"
    default_retryable = False

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        retryable: bool | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.provider = provider
        self.retryable = self.default_retryable if retryable is None else retryable
        self.status_code = status_code
        self.retry_after = retry_after

    def __str__(self) -> str:
        prefix = f"[{self.provider}] " if self.provider else ""
        status = f" (HTTP {self.status_code})" if self.status_code else ""
        return f"{prefix}{self.message}{status}"

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.update(provider=self.provider, retryable=self.retryable)
        if self.status_code is not None:
            out["status_code"] = self.status_code
        return out


class AuthenticationError(ProviderError):
    """The vendor refused the credentials (401/403). Never retried."""

    code = "provider_auth"


class InvalidRequestError(ProviderError):
    """The vendor rejected the request as malformed (400/404/422). Never retried."""

    code = "provider_invalid_request"


class RateLimitError(ProviderError):
    """The vendor throttled the caller (429). Retried, honouring ``retry_after``."""

    code = "provider_rate_limited"
    default_retryable = True


class ProviderServerError(ProviderError):
    """The vendor failed (5xx). Retried."""

    code = "provider_server_error"
    default_retryable = True


class ProviderTimeoutError(ProviderError):
    """The vendor did not answer in time. Retried."""

    code = "provider_timeout"
    default_retryable = True


class ProviderConnectionError(ProviderError):
    """The connection failed or dropped, including a stream cut mid-way. Retried when nothing was consumed."""

    code = "provider_connection"
    default_retryable = True


class ProviderResponseError(ProviderError):
    """The vendor answered something that could not be understood."""

    code = "provider_bad_response"


# ---------------------------------------------------------------------------------------------- tools


class ToolError(LLMRTCError):
    """A tool could not be run; the executor turns these into error results for the LLM."""

    code = "tool_error"

    def __init__(self, message: str, *, tool_name: str = "", code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.tool_name = tool_name


class ToolNotFoundError(ToolError):
    code = "tool_not_found"


class ToolValidationError(ToolError):
    """Arguments do not match the tool's JSON Schema, or a definition is invalid."""

    code = "tool_invalid_arguments"


class ToolTimeoutError(ToolError):
    code = "tool_timeout"


class ToolExecutionError(ToolError):
    """The tool's handler raised."""

    code = "tool_execution_failed"


# ---------------------------------------------------------------------------------------------- playbooks


class PlaybookError(LLMRTCError):
    """A playbook is invalid or a playbook operation failed."""

    code = "playbook_error"


class PlaybookValidationError(PlaybookError):
    """A playbook failed validation; ``issues`` lists every problem with its location."""

    code = "playbook_invalid"

    def __init__(self, message: str, issues: list[Any] | None = None) -> None:
        super().__init__(message)
        self.issues = list(issues or [])


# ---------------------------------------------------------------------------------------------- turns & audio


class GuardrailError(LLMRTCError):
    """A hook (``on_llm_end``) withheld the LLM's answer."""

    code = "guardrail_blocked"


class AudioError(LLMRTCError):
    """Audio could not be decoded, resampled or analysed."""

    code = "audio_error"


class CodecError(AudioError):
    code = "codec_error"


class ProtocolError(LLMRTCError):
    """A message from a client or peer did not match the protocol."""

    code = "protocol_error"


# ---------------------------------------------------------------------------------------------- sessions


class SessionStoreError(LLMRTCError):
    """The conversation session store failed (unreachable, timed out, or held an unreadable state).

    Callers (the worker) treat it as "no stored session": the conversation starts fresh, never crashes.
    """

    code = "session_store_error"


class SessionConflictError(SessionStoreError):
    """A save was refused because another writer saved a newer version of the session first."""

    code = "session_conflict"

    def __init__(
        self, message: str, *, session_id: str = "", expected_version: int = 0, stored_version: int = 0
    ) -> None:
        super().__init__(message)
        self.session_id = session_id
        self.expected_version = expected_version
        self.stored_version = stored_version


__all__ = [
    "AudioError",
    "AuthenticationError",
    "CodecError",
    "ConfigError",
    "GuardrailError",
    "InvalidRequestError",
    "LLMRTCError",
    "PlaybookError",
    "PlaybookValidationError",
    "ProtocolError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderResponseError",
    "ProviderServerError",
    "ProviderTimeoutError",
    "RateLimitError",
    "SessionConflictError",
    "SessionStoreError",
    "ToolError",
    "ToolExecutionError",
    "ToolNotFoundError",
    "ToolTimeoutError",
    "ToolValidationError",
]
