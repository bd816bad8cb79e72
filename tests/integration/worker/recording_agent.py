"""A code-first agent for the tests: the environment's providers, and hooks that record every hook point.

Each call is appended as one JSON line ``{"hook", "participant", "turn", "pid"}`` to ``HOOK_LOG``.
Run as ``python -m tests.integration.worker.recording_agent dev``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from llmrtc.hooks import HOOK_NAMES, HookContext, Hooks
from worker import Agent


def _recorder(name: str) -> Any:
    def record(self: Recorder, ctx: HookContext, *args: Any) -> None:
        line = {"hook": name, "participant": ctx.participant, "turn": ctx.turn_id, "pid": os.getpid()}
        with open(os.environ["HOOK_LOG"], "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")

    record.__name__ = name
    return record


class Recorder(Hooks):
    """Records every hook point (see the module doc)."""


for _name in HOOK_NAMES:
    setattr(Recorder, _name, _recorder(_name))

agent = Agent(hooks=Recorder)

if __name__ == "__main__":
    agent.run()
