"""Importable callables referenced by dotted paths in the test playbook files."""

from __future__ import annotations

from typing import Any

ENTERED: list[str] = []


def vip_customer(ctx: Any) -> bool:
    return bool(ctx.context.get("vip"))


async def async_vip(ctx: Any) -> bool:
    return bool(ctx.context.get("vip"))


def record_enter(ctx: Any) -> None:
    ENTERED.append(ctx.stage.id)


NOT_CALLABLE = 42
