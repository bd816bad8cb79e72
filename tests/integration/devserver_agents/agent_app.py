"""A tiny livekit-agents worker for the dev-server dispatch tests.

Run as ``python -m tests.integration.devserver_agents.agent_app dev`` with LIVEKIT_URL/KEY/SECRET set. Its job
joins the room and sets the attributes ``worker`` (the ``TEST_WORKER_TAG`` env) and ``job`` (the job id), so a
test participant sees which worker took the room. ``TEST_AGENT_NAME`` names the agent (explicit dispatch
only); ``TEST_JOB_LOAD`` is the load each running job adds and ``TEST_LOAD_THRESHOLD`` the load at which the
worker reports itself full (default: never, as livekit-agents' dev mode).
"""

from __future__ import annotations

import os

from livekit.agents import AgentServer, JobContext, JobExecutorType, WorkerOptions, cli

WORKER_TAG = os.environ.get("TEST_WORKER_TAG", "worker")
JOB_LOAD = float(os.environ.get("TEST_JOB_LOAD", "0.1"))
LOAD_THRESHOLD = float(os.environ.get("TEST_LOAD_THRESHOLD", "inf"))


async def entrypoint(ctx: JobContext) -> None:
    """Join the room and say who we are; the job then runs until the room or the server ends it."""
    await ctx.connect()
    await ctx.room.local_participant.set_attributes(
        {"worker": WORKER_TAG, "job": ctx.job.id, "dispatch_metadata": ctx.job.metadata}
    )


def load(server: AgentServer) -> float:
    """Each running job adds ``JOB_LOAD``: deterministic, unlike CPU load on a shared machine."""
    return min(1.0, len(server.active_jobs) * JOB_LOAD)


def options() -> WorkerOptions:
    """Worker options from the environment."""
    return WorkerOptions(
        entrypoint_fnc=entrypoint,
        agent_name=os.environ.get("TEST_AGENT_NAME", ""),
        load_fnc=load,
        load_threshold=LOAD_THRESHOLD,
        job_executor_type=JobExecutorType.THREAD,
        num_idle_processes=1,
    )


if __name__ == "__main__":
    cli.run_app(options())
