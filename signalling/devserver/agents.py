"""Agent workers of the development server: the ``/agent`` WebSocket, the worker registry and dispatch.

livekit-agents workers connect to ``/agent`` with a token carrying the ``agent`` grant and register. Rooms get
jobs through *dispatches*: an unnamed dispatch is made automatically when a room without configured agents is
created, named ones come from the token's room configuration or the AgentDispatch API. Each job is offered to
the least-loaded available worker registered for its agent name (``AvailabilityRequest``); the first that
accepts gets a ``JobAssignment`` with a token minted here. A job ends when the last non-agent participant
leaves, when its dispatch is deleted or its room closes; when a worker disconnects mid-job, the job is offered
again to the other workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web
from google.protobuf.message import DecodeError
from livekit import api
from livekit.protocol import agent as agent_pb
from livekit.protocol import agent_dispatch as dispatch_pb
from livekit.protocol import models
from livekit.protocol import room as room_pb

from signalling.devserver.auth import Authenticator, TokenError, extract_token
from signalling.devserver.rooms import Participant, Room, RoomError, RoomManager, new_sid

logger = logging.getLogger(__name__)

#: How long a worker has to answer an ``AvailabilityRequest`` before the next worker is asked.
AVAILABILITY_TIMEOUT = 7.5
#: How long a job with no available worker waits before it is offered again (also woken by worker changes).
RETRY_INTERVAL = 2.0
#: Server-side WebSocket heartbeat: a worker that stops answering pings is dropped after about this long.
HEARTBEAT_INTERVAL = 15.0

_ENDED = (agent_pb.JobStatus.JS_SUCCESS, agent_pb.JobStatus.JS_FAILED, agent_pb.JobStatus.JS_CANCELLED)


def _now_ns() -> int:
    return time.time_ns()


@dataclass
class Worker:
    """One registered worker connection."""

    id: str
    agent_name: str
    job_type: agent_pb.JobType
    version: str
    permissions: models.ParticipantPermission
    ws: web.WebSocketResponse
    status: agent_pb.WorkerStatus = agent_pb.WorkerStatus.WS_AVAILABLE
    load: float = 0.0
    reported_jobs: int = 0
    draining: bool = False
    jobs: dict[str, Job] = field(default_factory=dict)
    pending: dict[str, asyncio.Future[agent_pb.AvailabilityResponse]] = field(default_factory=dict)
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    connected: bool = True

    def effective_load(self, fallback_job_load: float) -> float:
        """The reported load plus an estimate for jobs assigned since that report.

        Status reports come every few seconds, so a burst of rooms would otherwise all go to the worker whose
        last report was lowest. The per-job load is learnt from the worker's own report (load / job count), or
        ``fallback_job_load`` (learnt from the other workers) before it has reported a job.
        """
        unreported = max(0, len(self.jobs) - self.reported_jobs)
        per_job = self.load / self.reported_jobs if self.reported_jobs else fallback_job_load
        return self.load + unreported * per_job

    @property
    def available(self) -> bool:
        """Whether the worker may be offered a job (connected and not full)."""
        return self.connected and not self.draining and self.status == agent_pb.WorkerStatus.WS_AVAILABLE

    async def send(self, msg: agent_pb.ServerMessage) -> None:
        """Send one ``ServerMessage`` (binary protobuf)."""
        async with self.send_lock:
            await self.ws.send_bytes(msg.SerializeToString())


@dataclass
class Job:
    """One job: a dispatch's claim on one worker for one room."""

    proto: agent_pb.Job
    dispatch: Dispatch
    worker_id: str = ""

    @property
    def id(self) -> str:
        return self.proto.id

    @property
    def ended(self) -> bool:
        return self.proto.state.status in _ENDED


@dataclass
class Dispatch:
    """An agent dispatch: which agent a room wants, and the jobs made for it."""

    id: str
    agent_name: str
    room: str
    metadata: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    created_at: int = field(default_factory=_now_ns)
    deleted_at: int = 0
    jobs: list[Job] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    idle: bool = False  # its job ended because the room emptied; a returning participant restarts it

    def to_proto(self) -> dispatch_pb.AgentDispatch:
        """The dispatch as a livekit ``AgentDispatch`` (with the state of its jobs)."""
        out = dispatch_pb.AgentDispatch(
            id=self.id,
            agent_name=self.agent_name,
            room=self.room,
            metadata=self.metadata,
            attributes=self.attributes,
        )
        out.state.created_at = self.created_at
        out.state.deleted_at = self.deleted_at
        for job in self.jobs:
            out.state.jobs.append(job.proto)
        return out


class AgentDispatcher:
    """Worker registry and job dispatcher; serves ``/agent`` and backs the AgentDispatch API."""

    def __init__(
        self,
        rooms: RoomManager,
        api_key: str,
        api_secret: str,
        *,
        server_info: Callable[[], models.ServerInfo] | None = None,
        availability_timeout: float = AVAILABILITY_TIMEOUT,
        retry_interval: float = RETRY_INTERVAL,
    ) -> None:
        self.rooms = rooms
        self._api_key = api_key
        self._api_secret = api_secret
        self._auth = Authenticator(api_key, api_secret)
        self._server_info = server_info or (lambda: models.ServerInfo(edition=models.ServerInfo.Standard))
        self.availability_timeout = availability_timeout
        self.retry_interval = retry_interval
        self.workers: dict[str, Worker] = {}
        self._dispatches: dict[str, dict[str, Dispatch]] = {}  # room name -> dispatch id -> dispatch
        self._changed = asyncio.Event()
        rooms.on_room_created(self._on_room_created)
        rooms.on_room_closed(self._on_room_closed)
        rooms.on_participant_joined(self._on_participant_joined)
        rooms.on_participant_left(self._on_participant_left)

    # routes ------------------------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        """Serve ``/agent`` on ``app``."""
        app.router.add_get("/agent", self.handle_agent)

    async def close(self) -> None:
        """Stop all dispatch tasks and disconnect every worker (server shutdown)."""
        for dispatches in list(self._dispatches.values()):
            for d in list(dispatches.values()):
                await self._stop_task(d)
        self._dispatches.clear()
        for worker in list(self.workers.values()):
            with contextlib.suppress(Exception):
                await worker.ws.close()

    # authentication ----------------------------------------------------------------------------------------
    def _verify_worker_token(self, request: web.Request) -> None:
        token = extract_token(request.headers.get("Authorization"), request.query.get("access_token"))
        claims = self._auth.verify(token)
        if claims.video is None or not claims.video.agent:
            raise TokenError("permissions denied: token has no agent grant")

    # the /agent WebSocket ----------------------------------------------------------------------------------
    async def handle_agent(self, request: web.Request) -> web.StreamResponse:
        """The worker WebSocket: register, then availability / status / job updates until it closes."""
        try:
            self._verify_worker_token(request)
        except TokenError as exc:
            logger.warning("agent worker refused from %s: %s", request.remote, exc.message)
            return web.Response(status=exc.status, text=exc.message)
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT_INTERVAL, max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        worker: Worker | None = None
        try:
            first = await ws.receive(timeout=10)
            if first.type != WSMsgType.BINARY:
                logger.warning("agent worker from %s sent no register message", request.remote)
                return ws
            msg = agent_pb.WorkerMessage()
            msg.ParseFromString(first.data)
            if msg.WhichOneof("message") != "register":
                logger.warning("agent worker's first message was %s, not register", msg.WhichOneof("message"))
                await ws.close(code=1008, message=b"expected register")
                return ws
            worker = self._register(msg.register, ws)
            await worker.send(
                agent_pb.ServerMessage(
                    register=agent_pb.RegisterWorkerResponse(
                        worker_id=worker.id, server_info=self._server_info()
                    )
                )
            )
            self._wake()
            async for raw in ws:
                if raw.type != WSMsgType.BINARY:
                    logger.warning(
                        "worker %s sent a non-binary message (%s); ignored", worker.id, raw.type.name
                    )
                    continue
                wmsg = agent_pb.WorkerMessage()
                try:
                    wmsg.ParseFromString(raw.data)
                except DecodeError:
                    logger.warning("worker %s sent an undecodable message; ignored", worker.id)
                    continue
                await self._on_worker_message(worker, wmsg)
        except (TimeoutError, DecodeError) as exc:
            logger.warning("agent worker from %s failed to register: %r", request.remote, exc)
        except (ConnectionError, RuntimeError) as exc:
            logger.info("agent worker connection from %s lost: %r", request.remote, exc)
        finally:
            if worker is not None:
                await self._unregister(worker)
        return ws

    def _register(self, req: agent_pb.RegisterWorkerRequest, ws: web.WebSocketResponse) -> Worker:
        worker = Worker(
            id=new_sid("AW_"),
            agent_name=req.agent_name,
            job_type=req.type,
            version=req.version,
            permissions=models.ParticipantPermission(),
            ws=ws,
        )
        worker.permissions.CopyFrom(req.allowed_permissions)
        self.workers[worker.id] = worker
        if req.type != agent_pb.JobType.JT_ROOM:
            logger.warning(
                "worker %s registered for job type %s: this server dispatches room jobs only",
                worker.id,
                agent_pb.JobType.Name(req.type),
            )
        logger.info(
            "worker registered id=%s agent_name=%r version=%s", worker.id, worker.agent_name, worker.version
        )
        return worker

    async def _unregister(self, worker: Worker) -> None:
        worker.connected = False
        self.workers.pop(worker.id, None)
        for job_id, fut in worker.pending.items():
            if not fut.done():
                fut.set_result(agent_pb.AvailabilityResponse(job_id=job_id, available=False))
        orphans = [job for job in worker.jobs.values() if not job.ended]
        worker.jobs.clear()
        logger.info("worker disconnected id=%s running_jobs=%d", worker.id, len(orphans))
        for job in orphans:
            self._set_status(job, agent_pb.JobStatus.JS_FAILED, error="worker disconnected")
            await self._redispatch(job)
        self._wake()

    async def _on_worker_message(self, worker: Worker, msg: agent_pb.WorkerMessage) -> None:
        which = msg.WhichOneof("message")
        if which == "availability":
            fut = worker.pending.pop(msg.availability.job_id, None)
            if fut is not None and not fut.done():
                fut.set_result(msg.availability)
            else:
                logger.warning("worker %s answered an unknown job %s", worker.id, msg.availability.job_id)
        elif which == "update_worker":
            upd = msg.update_worker
            was_available = worker.available
            worker.load = upd.load
            worker.reported_jobs = upd.job_count
            worker.draining = upd.draining
            if upd.HasField("status"):
                worker.status = upd.status
            if worker.available and not was_available:
                self._wake()
        elif which == "update_job":
            self._on_job_update(worker, msg.update_job)
        elif which == "ping":
            await worker.send(
                agent_pb.ServerMessage(
                    pong=agent_pb.WorkerPong(
                        last_timestamp=msg.ping.timestamp, timestamp=int(time.time() * 1000)
                    )
                )
            )
        elif which == "migrate_job":
            self._on_migrate(worker, msg.migrate_job)
        elif which == "register":
            logger.warning("worker %s registered twice; ignored", worker.id)
        else:
            logger.info("worker %s sent %s, which this server does not handle", worker.id, which)

    def _on_job_update(self, worker: Worker, upd: agent_pb.UpdateJobStatus) -> None:
        job = worker.jobs.get(upd.job_id)
        if job is None:
            known = self._find_job(upd.job_id)
            if known is None or not known.ended:  # a job the server ended already needs no news
                logger.warning("worker %s updated unknown job %s", worker.id, upd.job_id)
            return
        self._set_status(job, upd.status, error=upd.error)
        logger.info(
            "job status job=%s room=%s worker=%s status=%s",
            job.id,
            job.dispatch.room,
            worker.id,
            agent_pb.JobStatus.Name(upd.status),
        )
        if job.ended:
            worker.jobs.pop(job.id, None)

    def _on_migrate(self, worker: Worker, req: agent_pb.MigrateJobRequest) -> None:
        """A reconnected worker reports the jobs it still runs: it may take back only its own.

        A job is this worker's own when it is already assigned to it, or when the connection it was assigned
        to is gone (a worker that reconnects gets a new id) and the job is for the agent this worker serves.
        A job held by another live worker connection stays there: holding the agent grant is not enough to
        take over someone else's job (livekit-server leaves migration unimplemented altogether).
        """
        for job_id in req.job_ids:
            job = self._find_job(job_id)
            if job is None or job.ended:
                logger.info("worker %s migrates job %s, which is not running; ignored", worker.id, job_id)
                continue
            holder = self.workers.get(job.worker_id)
            if job.worker_id == worker.id:
                continue
            if holder is not None and holder.connected:
                logger.warning(
                    "worker %s tried to take over job %s of worker %s; refused", worker.id, job.id, holder.id
                )
                continue
            if job.proto.agent_name != worker.agent_name:
                logger.warning(
                    "worker %s (agent %r) tried to take over job %s of agent %r; refused",
                    worker.id,
                    worker.agent_name,
                    job.id,
                    job.proto.agent_name,
                )
                continue
            job.worker_id = worker.id
            job.proto.state.worker_id = worker.id
            worker.jobs[job.id] = job
            logger.info("job migrated job=%s room=%s worker=%s", job.id, job.dispatch.room, worker.id)

    # dispatch ----------------------------------------------------------------------------------------------
    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _on_room_created(self, room: Room, config: room_pb.RoomConfiguration) -> None:
        agents = list(config.agents)
        if not agents:
            self.create_dispatch(room.name, agent_name="")
            return
        for spec in agents:
            self.create_dispatch(
                room.name,
                agent_name=spec.agent_name,
                metadata=spec.metadata,
                attributes=dict(spec.attributes),
            )

    def create_dispatch(
        self,
        room: str,
        *,
        agent_name: str,
        metadata: str = "",
        attributes: Mapping[str, str] | None = None,
    ) -> Dispatch:
        """Record a dispatch for ``room`` and start offering its job to workers named ``agent_name``."""
        dispatch = Dispatch(
            id=new_sid("AD_"),
            agent_name=agent_name,
            room=room,
            metadata=metadata,
            attributes=dict(attributes or {}),
        )
        self._dispatches.setdefault(room, {})[dispatch.id] = dispatch
        logger.info("dispatch created id=%s room=%s agent_name=%r", dispatch.id, room, agent_name)
        self._start(dispatch, self._new_job(dispatch))
        return dispatch

    def list_dispatches(self, room: str, dispatch_id: str = "") -> list[Dispatch]:
        """The dispatches of ``room`` (only ``dispatch_id`` when given)."""
        found = list(self._dispatches.get(room, {}).values())
        return [d for d in found if not dispatch_id or d.id == dispatch_id]

    async def delete_dispatch(self, room: str, dispatch_id: str) -> Dispatch:
        """Delete a dispatch: its pending offer stops and its running job is terminated."""
        dispatch = self._dispatches.get(room, {}).pop(dispatch_id, None)
        if dispatch is None:
            raise RoomError(f"dispatch {dispatch_id!r} does not exist in room {room!r}")
        dispatch.deleted_at = _now_ns()
        await self._end_dispatch(dispatch, agent_pb.JobStatus.JS_CANCELLED)
        logger.info("dispatch deleted id=%s room=%s", dispatch.id, room)
        return dispatch

    def _new_job(self, dispatch: Dispatch) -> Job:
        proto = agent_pb.Job(
            id=new_sid("AJ_"),
            dispatch_id=dispatch.id,
            type=agent_pb.JobType.JT_ROOM,
            agent_name=dispatch.agent_name,
            metadata=dispatch.metadata,
            attributes=dispatch.attributes,
        )
        proto.state.status = agent_pb.JobStatus.JS_PENDING
        proto.state.updated_at = _now_ns()
        job = Job(proto=proto, dispatch=dispatch)
        dispatch.jobs.append(job)
        return job

    def _start(self, dispatch: Dispatch, job: Job) -> None:
        dispatch.task = asyncio.get_running_loop().create_task(
            self._offer(job), name=f"dispatch-{dispatch.id}-{job.id}"
        )

    async def _redispatch(self, job: Job) -> None:
        dispatch = job.dispatch
        if dispatch.deleted_at or self._dispatches.get(dispatch.room, {}).get(dispatch.id) is not dispatch:
            return
        room = self.rooms.get(dispatch.room)
        if room is None:
            return
        identity = job.proto.state.participant_identity
        if identity and identity in room.participants:
            with contextlib.suppress(RoomError):
                await self.rooms.remove_participant(room.name, identity)
        if not any(not p.is_agent for p in room.participants.values()):
            return
        logger.info("re-dispatching room=%s after job %s lost its worker", dispatch.room, job.id)
        self._start(dispatch, self._new_job(dispatch))

    def _candidates(self, agent_name: str, tried: set[str]) -> list[Worker]:
        workers = [
            w
            for w in self.workers.values()
            if w.available
            and w.agent_name == agent_name
            and w.job_type == agent_pb.JobType.JT_ROOM
            and w.id not in tried
        ]
        known = [w.load / w.reported_jobs for w in self.workers.values() if w.reported_jobs > 0]
        fallback = statistics.median(known) if known else 0.0
        # least load first; among equals, the one with fewer jobs
        workers.sort(key=lambda w: (round(w.effective_load(fallback), 3), len(w.jobs)))
        return workers

    async def _offer(self, job: Job) -> None:
        """Offer ``job`` to workers until one accepts, the room closes or the dispatch is deleted."""
        dispatch = job.dispatch
        tried: set[str] = set()
        try:
            while not dispatch.deleted_at and not job.ended:
                room = self.rooms.get(dispatch.room)
                if room is None:
                    self._set_status(job, agent_pb.JobStatus.JS_CANCELLED, error="room closed")
                    return
                candidates = self._candidates(dispatch.agent_name, tried)
                if not candidates:
                    tried.clear()
                    changed = self._changed
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), self.retry_interval)
                    continue
                worker = candidates[0]
                tried.add(worker.id)
                if await self._try_worker(worker, job, room):
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("dispatch %s of room %s failed", dispatch.id, dispatch.room)
            self._set_status(job, agent_pb.JobStatus.JS_FAILED, error="dispatch failed")

    async def _try_worker(self, worker: Worker, job: Job, room: Room) -> bool:
        job.proto.room.CopyFrom(room.to_proto())
        fut: asyncio.Future[agent_pb.AvailabilityResponse] = asyncio.get_running_loop().create_future()
        worker.pending[job.id] = fut
        try:
            await worker.send(
                agent_pb.ServerMessage(availability=agent_pb.AvailabilityRequest(job=job.proto))
            )
            answer = await asyncio.wait_for(fut, self.availability_timeout)
        except (TimeoutError, ConnectionError, RuntimeError) as exc:
            logger.info("worker %s did not take job %s: %s", worker.id, job.id, type(exc).__name__)
            return False
        finally:
            worker.pending.pop(job.id, None)
        if not answer.available:
            logger.info("worker %s declined job %s (room %s)", worker.id, job.id, room.name)
            return False
        if not worker.connected or job.dispatch.deleted_at or self.rooms.get(room.name) is not room:
            return False
        identity = answer.participant_identity or f"agent-{job.id}"
        token = self._job_token(worker, job, room, answer, identity)
        job.worker_id = worker.id
        job.proto.state.worker_id = worker.id
        job.proto.state.participant_identity = identity
        job.proto.state.started_at = _now_ns()
        self._set_status(job, agent_pb.JobStatus.JS_RUNNING)
        worker.jobs[job.id] = job
        try:
            await worker.send(
                agent_pb.ServerMessage(assignment=agent_pb.JobAssignment(job=job.proto, token=token))
            )
        except (ConnectionError, RuntimeError):
            worker.jobs.pop(job.id, None)
            self._set_status(job, agent_pb.JobStatus.JS_PENDING)
            return False
        logger.info(
            "job assigned job=%s room=%s worker=%s identity=%s load=%.2f",
            job.id,
            room.name,
            worker.id,
            identity,
            worker.load,
        )
        return True

    def _job_token(
        self, worker: Worker, job: Job, room: Room, answer: agent_pb.AvailabilityResponse, identity: str
    ) -> str:
        perm = worker.permissions
        sources = [models.TrackSource.Name(s).lower() for s in perm.can_publish_sources]
        grants = api.VideoGrants(
            room_join=True,
            room=room.name,
            can_publish=perm.can_publish,
            can_subscribe=perm.can_subscribe,
            can_publish_data=perm.can_publish_data,
            can_publish_sources=sources or None,
            can_update_own_metadata=perm.can_update_metadata,
            hidden=perm.hidden or None,
            agent=True,
        )
        token = (
            api.AccessToken(self._api_key, self._api_secret)
            .with_identity(identity)
            .with_kind("agent")
            .with_name(answer.participant_name or identity)
            .with_metadata(answer.participant_metadata)
            .with_attributes(dict(answer.participant_attributes))
            .with_grants(grants)
        )
        return token.to_jwt()

    def _set_status(self, job: Job, status: agent_pb.JobStatus, *, error: str = "") -> None:
        state = job.proto.state
        state.status = status
        state.error = error
        state.updated_at = _now_ns()
        if status in _ENDED and not state.ended_at:
            state.ended_at = state.updated_at

    # job ends ----------------------------------------------------------------------------------------------
    async def _stop_task(self, dispatch: Dispatch) -> None:
        task, dispatch.task = dispatch.task, None
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _end_dispatch(self, dispatch: Dispatch, status: agent_pb.JobStatus) -> None:
        await self._stop_task(dispatch)
        for job in dispatch.jobs:
            if job.ended:
                continue
            assigned = job.proto.state.status != agent_pb.JobStatus.JS_PENDING
            self._set_status(job, status if assigned else agent_pb.JobStatus.JS_CANCELLED)
            worker = self.workers.get(job.worker_id)
            if worker is None:
                continue
            worker.jobs.pop(job.id, None)
            with contextlib.suppress(ConnectionError, RuntimeError):
                await worker.send(agent_pb.ServerMessage(termination=agent_pb.JobTermination(job_id=job.id)))
            logger.info("job terminated job=%s room=%s worker=%s", job.id, dispatch.room, worker.id)

    async def _on_participant_left(self, room: Room, participant: Participant) -> None:
        if participant.is_agent or room.closed:
            return
        if any(not p.is_agent for p in room.participants.values()):
            return
        logger.info("last participant left room=%s: ending its agent jobs", room.name)
        for dispatch in list(self._dispatches.get(room.name, {}).values()):
            dispatch.idle = True
            await self._end_dispatch(dispatch, agent_pb.JobStatus.JS_SUCCESS)
        for other in list(room.participants.values()):
            if other.is_agent:
                with contextlib.suppress(RoomError):
                    await self.rooms.remove_participant(room.name, other.identity)

    async def _on_participant_joined(self, room: Room, participant: Participant) -> None:
        if participant.is_agent:
            return
        for dispatch in list(self._dispatches.get(room.name, {}).values()):
            if dispatch.idle:
                dispatch.idle = False
                logger.info("participant returned to room=%s: dispatching %s again", room.name, dispatch.id)
                self._start(dispatch, self._new_job(dispatch))

    async def _on_room_closed(self, room: Room) -> None:
        dispatches = self._dispatches.pop(room.name, {})
        for dispatch in dispatches.values():
            await self._end_dispatch(dispatch, agent_pb.JobStatus.JS_SUCCESS)

    def _find_job(self, job_id: str) -> Job | None:
        for dispatches in self._dispatches.values():
            for dispatch in dispatches.values():
                for job in dispatch.jobs:
                    if job.id == job_id:
                        return job
        return None
