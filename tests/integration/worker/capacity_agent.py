"""The llmrtc worker with faults and load injected from outside, for the capacity tests.

Run as ``python -m tests.integration.worker.capacity_agent dev`` with the worker's usual environment plus
``CAPACITY_CONTROL``: a file whose content (a number) is injected as the worker's load
(:func:`worker.load.inject_load`, re-read every 0.1 s). The real entrypoint and request handler run, with
three kinds of rooms treated specially by name:

- ``crash-*``: the job raises an exception 2 s after it joined (a job that fails on its own);
- ``stuck-*``: the job blocks its event loop for 6 s, 2 s after it joined (a job that hangs);
- ``busy-*``: the load jumps to 1.0 between the offer and the job's start (the race a load report cannot
  close), so the job finds the worker unable to serve the room in time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from pathlib import Path

from livekit.agents import JobContext

import worker.entrypoint as ep
from worker.agent import current_agent
from worker.cli import run_agent
from worker.load import current_load, inject_load

log = logging.getLogger("capacity_agent")
_real_entrypoint = ep.entrypoint


def _control_thread(path: Path) -> None:
    last = ""
    while True:
        try:
            text = path.read_text().strip()
        except OSError:
            text = ""
        if text != last:
            last = text
            inject_load(float(text or 0.0))
            current_load()
            print(f"capacity_agent: injected load {text or 0}", file=sys.stderr, flush=True)
        time.sleep(0.1)


async def faulty_entrypoint(ctx: JobContext) -> None:
    name = ctx.room.name
    if name.startswith("busy-"):
        inject_load(1.0)
        current_load()  # the reading the job sees at its start
    job = asyncio.ensure_future(_real_entrypoint(ctx))
    if name.startswith("busy-"):
        await asyncio.sleep(1.0)
        inject_load(0.0)
        current_load()
        await job
        return
    if not name.startswith(("crash-", "stuck-")):
        await job
        return
    await asyncio.sleep(2.0)
    if name.startswith("stuck-"):
        print(f"capacity_agent: blocking the loop of {name}", file=sys.stderr, flush=True)
        time.sleep(6.0)  # noqa: ASYNC251 - the point: a hung job, its event loop does nothing for 6 s
        await job
        return
    print(f"capacity_agent: crashing the job of {name}", file=sys.stderr, flush=True)
    job.cancel()
    await asyncio.gather(job, return_exceptions=True)
    raise RuntimeError(f"injected crash in {name}")


def main() -> int:
    control = os.environ.get("CAPACITY_CONTROL")
    if control:
        threading.Thread(target=_control_thread, args=(Path(control),), daemon=True).start()
    ep.entrypoint = faulty_entrypoint  # type: ignore[assignment]
    return run_agent(current_agent(), sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
