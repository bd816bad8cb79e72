"""Real livekit-agents workers on the dev server.

Automatic and named dispatch, rooms shared by load, full workers skipped, job end when a room empties, and
re-dispatch when a worker is killed mid-job. One server and four workers serve the whole module: A and B are
unnamed; C1 and C2 are named ``cap`` and report themselves full with one job.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator

import pytest
from livekit import api, rtc

from tests.integration.devserver_agents.conftest import (
    ServerProc,
    WorkerProc,
    agents_in,
    join,
    launch_worker,
    stop_processes,
    wait_for,
    wait_registered,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NAMED = "cap"


@pytest.fixture(scope="module")
def workers(
    devserver: ServerProc, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, WorkerProc]]:
    """Unnamed workers A and B; named workers C1 and C2, full (load 0.6 >= 0.5) with one job."""
    tmp = tmp_path_factory.mktemp("workers")
    procs = {
        "A": launch_worker(devserver, tmp, "A"),
        "B": launch_worker(devserver, tmp, "B"),
        "C1": launch_worker(devserver, tmp, "C1", agent_name=NAMED, job_load=0.6, threshold=0.5),
        "C2": launch_worker(devserver, tmp, "C2", agent_name=NAMED, job_load=0.6, threshold=0.5),
    }
    try:
        wait_registered(list(procs.values()))
        yield procs
    finally:
        stop_processes([w.proc for w in procs.values()])


async def _agent(room: rtc.Room, within: float = 15.0) -> rtc.RemoteParticipant:
    return (await wait_for(lambda: agents_in(room), within, f"an agent in {room.name}"))[0]


async def test_unnamed_agent_dispatched_automatically_and_job_ends_when_room_empties(
    devserver: ServerProc, workers: dict[str, WorkerProc]
) -> None:
    alice = await join(devserver, "auto-room", "alice")
    try:
        agent = await _agent(alice)
        assert agent.attributes["worker"] in ("A", "B")
        assert agent.identity.startswith("agent-")
        job_id = agent.attributes["job"]
    finally:
        await alice.disconnect()
    async with devserver.api() as lk:
        dispatches: list[api.AgentDispatch] = []

        async def ended() -> bool:
            dispatches[:] = await lk.agent_dispatch.list_dispatch("auto-room")
            jobs = [j for d in dispatches for j in d.state.jobs if j.id == job_id]
            return bool(jobs) and jobs[0].state.status == api.JobStatus.JS_SUCCESS

        for _ in range(100):
            if await ended():
                break
            await asyncio.sleep(0.1)
        assert dispatches and dispatches[0].agent_name == ""
        job = next(j for j in dispatches[0].state.jobs if j.id == job_id)
        assert job.state.status == api.JobStatus.JS_SUCCESS
        assert job.state.ended_at >= job.state.started_at > 0
        participants = await _participants(lk, "auto-room")
        assert participants == [], "the agent should have been removed when alice left"


async def test_two_workers_share_rooms_by_load(devserver: ServerProc, workers: dict[str, WorkerProc]) -> None:
    rooms = [await join(devserver, f"shared-{i}", f"user-{i}") for i in range(4)]
    try:
        tags = [(await _agent(r)).attributes["worker"] for r in rooms]
        assert sorted(tags) == ["A", "A", "B", "B"], tags
    finally:
        for r in rooms:
            await r.disconnect()


async def test_named_agent_dispatched_through_token_room_config(
    devserver: ServerProc, workers: dict[str, WorkerProc]
) -> None:
    config = api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=NAMED, metadata="from-token")])
    bob = await join(devserver, "named-by-token", "bob", config)
    try:
        agent = await _agent(bob)
        assert agent.attributes["worker"] in ("C1", "C2")
        assert agent.attributes["dispatch_metadata"] == "from-token"
        await asyncio.sleep(1.0)
        assert len(agents_in(bob)) == 1, "only the named agent joins"
    finally:
        await bob.disconnect()


async def test_named_agent_dispatched_through_the_api_and_deleted(
    devserver: ServerProc, workers: dict[str, WorkerProc]
) -> None:
    carol = await join(devserver, "named-by-api", "carol")
    try:
        unnamed = await _agent(carol)
        assert unnamed.attributes["worker"] in ("A", "B")
        async with devserver.api() as lk:
            made = await lk.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(agent_name=NAMED, room="named-by-api", metadata="from-api")
            )
            assert made.id.startswith("AD_") and made.agent_name == NAMED
            named = await wait_for(
                lambda: [a for a in agents_in(carol) if a.attributes["worker"].startswith("C")],
                15,
                "the named agent",
            )
            assert named[0].attributes["dispatch_metadata"] == "from-api"
            listed = await lk.agent_dispatch.list_dispatch("named-by-api")
            assert {d.agent_name for d in listed} == {"", NAMED}
            running = next(d for d in listed if d.id == made.id)
            assert running.state.jobs[0].state.status in (api.JobStatus.JS_RUNNING, api.JobStatus.JS_PENDING)
            assert running.state.jobs[0].state.worker_id.startswith("AW_")

            deleted = await lk.agent_dispatch.delete_dispatch(made.id, "named-by-api")
            assert deleted.id == made.id and deleted.state.deleted_at > 0
            await wait_for(
                lambda: not [a for a in agents_in(carol) if a.attributes["worker"].startswith("C")],
                15,
                "the named agent to leave after DeleteDispatch",
            )
            assert [d.id for d in await lk.agent_dispatch.list_dispatch("named-by-api")] != [made.id]
    finally:
        await carol.disconnect()


async def _participants(lk: api.LiveKitAPI, room: str) -> list[str]:
    try:
        res = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
    except api.TwirpError as exc:
        if exc.code == "not_found":
            return []
        raise
    return [p.identity for p in res.participants]


async def test_full_workers_skipped_and_killed_worker_redispatched(
    devserver: ServerProc, workers: dict[str, WorkerProc]
) -> None:
    config = api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=NAMED)])
    dave = await join(devserver, "cap-1", "dave", config)
    erin = frank = None
    try:
        first = (await _agent(dave)).attributes["worker"]
        erin = await join(devserver, "cap-2", "erin", config)
        second = (await _agent(erin)).attributes["worker"]
        assert {first, second} == {"C1", "C2"}, "the full worker was not skipped"

        frank = await join(devserver, "cap-3", "frank", config)
        await asyncio.sleep(3.0)
        assert agents_in(frank) == [], "both named workers are full: nobody may take cap-3"
        await frank.disconnect()
        frank = None

        await erin.disconnect()  # frees the second worker
        erin = None
        os.killpg(workers[first].proc.pid, signal.SIGKILL)
        replacement = await wait_for(
            lambda: [a for a in agents_in(dave) if a.attributes["worker"] == second],
            20,
            f"cap-1 re-dispatched to {second} after {first} was killed",
        )
        assert replacement[0].attributes["job"] != ""
        await wait_for(
            lambda: all(a.attributes["worker"] == second for a in agents_in(dave)), 15, "the dead agent to go"
        )
        async with devserver.api() as lk:
            (dispatch,) = await lk.agent_dispatch.list_dispatch("cap-1")
            states = [(j.state.status, j.state.error) for j in dispatch.state.jobs]
            assert states[0] == (api.JobStatus.JS_FAILED, "worker disconnected")
            assert states[-1][0] in (api.JobStatus.JS_PENDING, api.JobStatus.JS_RUNNING)
    finally:
        for client in (dave, erin, frank):
            if client is not None:
                await client.disconnect()
