"""The LiveKit worker: one job per room, running the llmrtc voice pipeline for every human in it.

``from worker import Agent`` is the code-first API (:mod:`worker.agent`); ``python -m worker`` runs the agent
configured from the environment only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.agent import Agent


def __getattr__(name: str) -> Any:
    # lazy: importing the package (e.g. worker.protocol from a client) must not load livekit-agents
    if name == "Agent":
        from worker.agent import Agent

        return Agent
    raise AttributeError(name)


__all__ = ["Agent"]
