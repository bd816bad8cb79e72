"""The conversation history window: the last N messages, never splitting a tool call from its results."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import ValidationError

from llmrtc.errors import ConfigError
from llmrtc.types import Message

log = logging.getLogger("llmrtc.history")


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


def restored_history(
    messages: Iterable[Message | dict[str, Any]], limit: int | None, *, session_id: str | None = None
) -> list[Message]:
    """A stored history made safe to continue from: what every orchestrator's ``load_history`` keeps.

    The items (messages, or their JSON dicts) are validated and deep-copied; at most ``limit`` are kept
    (``None``: all), never starting inside a tool exchange. Tool calls without results and results without
    calls are dropped; when calls and results are out of order (other messages between them), every tool
    exchange is dropped and only the words are kept, so a damaged stored history cannot make the next LLM
    request invalid. Raises :class:`~llmrtc.errors.ConfigError` when an item is not a message. A warning
    (with ``session_id``) says when messages were dropped or repaired.
    """
    try:
        loaded = [Message.model_validate(m).model_copy(deep=True) for m in messages]
    except ValidationError as exc:
        reason = exc.errors()[0].get("msg", "invalid") if exc.errors() else "invalid"
        log.warning("load_history refused (session=%s): an item is not a message: %s", session_id, reason)
        raise ConfigError(f"load_history needs Message items: {reason}") from exc
    except TypeError as exc:  # not iterable, or an item pydantic cannot even look at
        log.warning("load_history refused (session=%s): %s", session_id, exc)
        raise ConfigError(f"load_history needs a sequence of Message items: {exc}") from exc
    kept = window(loaded, limit if limit is not None else len(loaded))
    repaired = not is_consistent(kept)
    if repaired:  # calls and results out of order: keep the words, drop the tool exchanges
        kept = [
            m.model_copy(update={"tool_calls": []}) if m.tool_calls else m
            for m in kept
            if m.role != "tool" and not (m.tool_calls and not m.content.strip())
        ]
    if repaired or len(kept) != len(loaded):
        log.warning(
            "load_history (session=%s): kept %d of %d messages (limit or broken tool exchanges)",
            session_id,
            len(kept),
            len(loaded),
        )
    return kept


__all__ = ["is_consistent", "restored_history", "window"]
