"""Conversion steps from :class:`~llmrtc.types.Message` that several vendors' formats share.

Only what is the same logic lives here (the speaker-name rendering, system-prompt extraction with merging of
consecutive same-role turns, the tool-result id check, OpenAI-style function tool schemas); each vendor's
block shapes stay in its own module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmrtc.errors import ProviderResponseError
from llmrtc.types import Message, ToolDefinition


def speaker_text(msg: Message) -> str:
    """The message text, prefixed ``"<name>: "`` for a named user (who said it, in a multi-party room)."""
    return f"{msg.name}: {msg.content}" if msg.name and msg.role == "user" and msg.content else msg.content


def tool_call_id(msg: Message, provider: str) -> str:
    """The id a tool-result message answers; vendors that pair results by id cannot do without it."""
    if not msg.tool_call_id:
        raise ProviderResponseError("a tool message needs tool_call_id", provider=provider)
    return msg.tool_call_id


def system_and_turns(
    messages: list[Message],
    blocks: Callable[[Message], list[dict[str, Any]]],
    *,
    assistant_role: str = "assistant",
    key: str = "content",
) -> tuple[list[str], list[dict[str, Any]]]:
    """The system prompts, and the other messages as alternating ``{"role", key: blocks}`` turns.

    ``blocks`` renders one message; messages that render to nothing are dropped, and consecutive messages of
    one role (a tool result is the user's) are merged into one turn, as vendors that require alternation need.
    """
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for msg in messages:
        if msg.role == "system":
            if msg.content:
                system.append(msg.content)
            continue
        role = assistant_role if msg.role == "assistant" else "user"
        rendered = blocks(msg)
        if not rendered:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1][key].extend(rendered)
        else:
            turns.append({"role": role, key: rendered})
    return system, turns


def function_tools(tools: list[ToolDefinition]) -> list[dict[str, Any]]:
    """Tools as OpenAI-style ``{"type": "function", "function": {...}}`` entries (OpenAI, Ollama)."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]
