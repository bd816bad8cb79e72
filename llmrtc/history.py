"""The conversation history window: the last N messages, never splitting a tool call from its results."""

from __future__ import annotations

from collections.abc import Sequence

from llmrtc.types import Message


def window(messages: Sequence[Message], limit: int) -> list[Message]:
    """The last ``limit`` messages of ``messages`` (``limit <= 0``: none), made self-contained.

    The window never starts inside a tool exchange: ``tool`` messages whose assistant ``tool_calls`` message
    fell outside are dropped from the front, and an assistant ``tool_calls`` message is only kept with all
    its results. The result may therefore hold fewer than ``limit`` messages, never more.
    """
    if limit <= 0 or not messages:
        return []
    start = max(0, len(messages) - limit)
    out = list(messages[start:])
    while out and out[0].role == "tool":
        out.pop(0)
    return _drop_orphans(out)


def _drop_orphans(messages: list[Message]) -> list[Message]:
    """Remove tool calls without results and results without calls."""
    answered = {m.tool_call_id for m in messages if m.role == "tool" and m.tool_call_id}
    asked: set[str] = set()
    out: list[Message] = []
    for m in messages:
        if m.role == "assistant" and m.tool_calls:
            kept = [c for c in m.tool_calls if c.call_id in answered]
            if not kept:
                if m.content.strip():
                    out.append(m.model_copy(update={"tool_calls": []}))
                continue
            if len(kept) != len(m.tool_calls):
                m = m.model_copy(update={"tool_calls": kept})
            asked.update(c.call_id for c in kept)
            out.append(m)
        elif m.role == "tool":
            if m.tool_call_id in asked:
                out.append(m)
        else:
            out.append(m)
    return out


def is_consistent(messages: Sequence[Message]) -> bool:
    """Whether every assistant tool call has exactly one result and every result follows its call."""
    pending: set[str] = set()
    for m in messages:
        if m.role == "assistant" and m.tool_calls:
            if pending:
                return False
            pending = {c.call_id for c in m.tool_calls}
        elif m.role == "tool":
            if m.tool_call_id not in pending:
                return False
            pending.discard(m.tool_call_id)
        elif pending:
            return False
    return not pending


__all__ = ["is_consistent", "window"]
