"""What the room is told when something fails: a stable code and a safe message, never a vendor's text.

Vendor error texts can hold masked keys, internal URLs or request ids; they go to the worker's log (with the
room, participant and turn ids), while clients get :func:`error_message`'s ``error`` event: the error's
``code``, a short message written here for people, the component that failed and whether trying again may
help.
"""

from __future__ import annotations

import logging
from typing import Any

from llmrtc.errors import (
    AuthenticationError,
    GuardrailError,
    InvalidRequestError,
    LLMRTCError,
    ProviderConnectionError,
    ProviderError,
    ProviderResponseError,
    ProviderServerError,
    ProviderTimeoutError,
    RateLimitError,
    ToolError,
)
from worker.protocol import ErrorMsg

log = logging.getLogger("llmrtc.worker.errors")

_SERVICE = {
    "stt": "The speech recognition service",
    "llm": "The language model",
    "tts": "The speech synthesis service",
    "vision": "The vision service",
    "tool": "A tool",
    "playbook": "The conversation flow",
    "orchestrator": "The agent",
    "worker": "The agent",
}


def _what(component: str) -> str:
    return _SERVICE.get(component, "The agent")


def safe_text(error: BaseException, component: str) -> str:
    """A message about ``error`` that is safe to show anyone in the room."""
    what = _what(component)
    if isinstance(error, ProviderTimeoutError):
        return f"{what} took too long to answer. Please try again."
    if isinstance(error, RateLimitError):
        return f"{what} is busy right now. Please try again in a moment."
    if isinstance(error, ProviderConnectionError):
        return f"{what} could not be reached. Please try again."
    if isinstance(error, ProviderServerError):
        return f"{what} had a problem. Please try again."
    if isinstance(error, AuthenticationError):
        return f"{what} refused the agent's credentials. The operator has to fix its configuration."
    if isinstance(error, ProviderResponseError):
        return f"{what} sent an answer the agent could not use. Please try again."
    if isinstance(error, InvalidRequestError):
        return f"{what} could not handle that request."
    if isinstance(error, ProviderError):
        return f"{what} failed."
    if isinstance(error, GuardrailError):
        return "The agent will not answer that."
    if isinstance(error, ToolError):
        return "A tool the agent used failed."
    if isinstance(error, LLMRTCError):
        return f"{what} failed."
    return "The agent had an internal problem."


def is_retryable(error: BaseException) -> bool:
    """Whether saying it again may work (provider errors say so; other failures are not transient)."""
    if isinstance(error, ProviderError):
        return error.retryable
    return not isinstance(error, GuardrailError)


def error_message(
    error: BaseException, component: str, *, turn_id: str | None = None, extra: dict[str, Any] | None = None
) -> ErrorMsg:
    """The ``error`` event for ``error``; its details are logged here, not sent."""
    code = error.code if isinstance(error, LLMRTCError) else "internal_error"
    log.warning(
        "%s error [%s]: %s",
        component,
        code,
        error,
        extra={**(extra or {}), "turn": turn_id, "component": component},
    )
    return ErrorMsg(
        code=code,
        message=safe_text(error, component),
        turn_id=turn_id,
        component=component,
        retryable=is_retryable(error),
    )


__all__ = ["error_message", "is_retryable", "safe_text"]
