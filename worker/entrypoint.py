"""One job = one room: connect, wire the room to the conversation, run until the room empties.

``server_options()`` builds livekit-agents' worker options from :class:`worker.config.WorkerSettings`:
named dispatch as ``AGENT_NAME`` (default ``llmrtc-agent``), automatic dispatch when it is set empty; the
agent joins as ``AGENT_DISPLAY_NAME`` (:func:`make_request_fnc`); jobs run on threads of one process by
default (``WORKER_EXECUTOR=thread``), so many rooms share the imports, the provider modules, the one Silero
VAD model loaded by :func:`prewarm` and the one session store (:mod:`worker.store`).

A job restores the room's stored conversation before its first turn and saves it after every change
(:mod:`worker.persistence`), so a room re-dispatched to another worker continues where it was.

What a job runs is the process's :func:`worker.agent.current_agent`: a code-first agent, or the
environment-configured one of ``python -m worker``. Its providers are built off the job's event loop (client
construction builds SSL contexts, which would block the loop for hundreds of milliseconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from livekit import agents
from livekit.agents import AgentServer, JobContext, JobExecutorType, JobProcess, JobRequest, WorkerOptions

from llmrtc.audio.turn_detection import get_shared_runner
from llmrtc.audio.vad import VADEngine, get_shared_engine
from llmrtc.mcp import MCPToolset
from llmrtc.metrics import MetricNames
from llmrtc.providers._tls import shared_ssl_context
from llmrtc.sessions import create_session_store
from worker.agent import Agent, current_agent
from worker.config import WorkerSettings, load_settings
from worker.conversation import Providers, build_conversation
from worker.errors import error_message
from worker.listeners import ListenerFactory
from worker.load import load_fnc, monitor, watch_loop
from worker.observability import READINESS, humans_in_room, process_metrics, room_closed, room_opened
from worker.persistence import PersistentConversation, RoomPersistence
from worker.room import RoomIO
from worker.room_vision import RoomVision
from worker.session import RoomSession
from worker.shedding import cannot_serve, refuse_offer, serve_busy
from worker.store import process_session_store

if TYPE_CHECKING:
    from llmrtc.mcp import MCPToolset

log = logging.getLogger("llmrtc.worker")


def prewarm(proc: JobProcess) -> None:
    """Load the VAD model (and the end-of-turn model) once per worker process, shared by its jobs."""
    proc.userdata["vad"] = get_shared_engine()
    shared_ssl_context()  # every room's provider clients share it: no CA bundle loaded on a room's loop
    READINESS.vad_loaded = True
    kind = current_agent().settings.turn_detection
    if kind != "vad":
        get_shared_runner(kind)  # the end-of-turn model (TURN_DETECTION), loaded once per process


def make_request_fnc(settings: WorkerSettings) -> Callable[[JobRequest], Awaitable[None]]:
    """The job request handler: accept a job, joining as ``AGENT_DISPLAY_NAME``, unless the worker's load
    (rooms just accepted included, at ``WORKER_ROOM_CPU`` each) is at ``WORKER_LOAD_THRESHOLD``: then
    decline it, so LiveKit offers it to another worker."""
    monitor().room_cpu_cores = settings.room_cpu
    monitor().count_machine = settings.load_machine

    async def accept_job(request: JobRequest) -> None:
        if refuse_offer(settings.load_threshold):
            log.warning("full: declining job", extra={"room": request.room.name, "job": request.id})
            process_metrics().increment(MetricNames.WORKER_SHED, 1, {"what": "job"})
            await request.reject(terminate=False)
            return
        load = monitor().admit()  # counted at once: the next offer of a burst sees this room
        log.info(
            "accepting job", extra={"room": request.room.name, "job": request.id, "load": round(load, 2)}
        )
        await request.accept(name=settings.agent_display_name)

    return accept_job


async def entrypoint(ctx: JobContext) -> None:
    """Run the agent in ``ctx.room`` until the last human leaves or the room closes."""
    agent = current_agent()
    settings = agent.settings
    engine: VADEngine = ctx.proc.userdata.get("vad") or get_shared_engine()
    providers = await asyncio.to_thread(agent.create_providers)  # off the loop: SSL contexts block
    metrics = process_metrics()
    await ctx.connect(auto_subscribe=agents.AutoSubscribe.AUDIO_ONLY)
    room = ctx.room
    extra = {"room": room.name, "job": ctx.job.id}
    log.info("joined room", extra=extra)
    room_opened()
    room_io = RoomIO(room, sample_rate=settings.tts_sample_rate)
    probe = asyncio.create_task(watch_loop(), name="llmrtc-loop-probe")  # this loop's lag -> worker load
    if cannot_serve():  # turns would be late here: say so and leave (worker/shedding.py)
        try:
            rate = settings.tts_sample_rate
            await serve_busy(room_io, providers.tts, metrics, room=room.name, sample_rate=rate)
        finally:
            probe.cancel()
            await providers.aclose()
            room_closed(room.name)
            with contextlib.suppress(Exception):
                ctx.shutdown(reason="worker busy")
        return
    room_io.set_agent_state("initializing")
    session: RoomSession | None = None
    vision: RoomVision | None = None
    mcp: MCPToolset | None = None
    persistence: RoomPersistence | None = None
    ended_empty = False
    disconnected = asyncio.Event()
    room.on("disconnected", lambda *_: disconnected.set())
    try:
        tools = agent.create_tools()
        mcp = await agent.open_mcp(tools)  # the room's MCP servers' tools join its registry
        vision = RoomVision.create(  # VISION=off: None, and no video is subscribed
            settings.vision_config(),
            llm=providers.llm,
            vision=providers.vision,
            send=room_io.send,
            metrics=metrics,
            room_name=room.name,
        )
        if vision is not None:
            vision.add_tools(tools)  # VISION=tool: the look tool
            vision.start(room)  # subscribe to the humans' cameras and screen shares
        conversation = build_conversation(
            settings,
            providers,
            session_id=room.name,
            tools=tools,
            playbook=agent.create_playbook(tools),
            hooks=agent.create_hooks(),
            metrics=metrics,
        )
        store = process_session_store(settings.session_store_url, ttl_s=settings.session_ttl_s)
        persistence = RoomPersistence(
            store, room.name, conversation.orchestrator, metadata={"job": ctx.job.id}
        )
        await persistence.restore()  # before the first turn and the first "joined" note
        session = RoomSession(
            settings,
            room_io,
            PersistentConversation(conversation, persistence),
            ListenerFactory(settings, engine),
            room_name=room.name,
            metrics=metrics,
            on_humans=functools.partial(humans_in_room, room.name),
            attachments=vision.attachments if vision is not None and vision.mode == "turn" else None,
        )
        await room_io.start(session)
        session.start()
        for event in persistence.lost_turn_events():  # a turn the previous worker never ended
            room_io.send(event)
        empty = asyncio.ensure_future(session.wait_empty())
        waiters = [empty, asyncio.ensure_future(disconnected.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            ended_empty = empty.done() and not empty.cancelled()
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        log.info("room is empty or closed: ending the job", extra=extra)
    except Exception as exc:
        log.exception("job failed", extra=extra)
        room_io.send(error_message(exc, "worker", extra=extra))
        raise
    finally:
        probe.cancel()
        if session is not None:
            await session.aclose()
            if session.shutdown_turn and persistence is not None and not room.isconnected():
                # its turn_end could not reach the room: the worker that takes the room over sends it
                persistence.mark_lost(session.shutdown_turn)
        if vision is not None:
            await vision.aclose()
        if persistence is not None:
            # the last human left: the room ended normally (its state expires after SESSION_TTL_S, or
            # goes now with SESSION_DELETE_ON_END); otherwise keep it for the worker that takes over
            await persistence.aclose(delete=ended_empty and settings.session_delete_on_end)
        await room_io.aclose()
        await providers.aclose()
        if mcp is not None:
            await mcp.aclose()
        room_closed(room.name)
        with contextlib.suppress(Exception):
            ctx.shutdown(reason="room empty")


def server_options(settings: WorkerSettings | None = None) -> WorkerOptions:
    """livekit-agents worker options for these settings."""
    settings = settings or load_settings()
    executor = JobExecutorType.THREAD if settings.executor == "thread" else JobExecutorType.PROCESS
    kwargs: dict[str, Any] = {}
    if settings.livekit_url:
        kwargs["ws_url"] = settings.livekit_url
    if settings.livekit_api_key:
        kwargs["api_key"] = settings.livekit_api_key
    if settings.livekit_api_secret:
        kwargs["api_secret"] = settings.livekit_api_secret
    return WorkerOptions(
        entrypoint_fnc=entrypoint,
        request_fnc=make_request_fnc(settings),
        prewarm_fnc=prewarm,
        agent_name=settings.agent_name,
        job_executor_type=executor,
        drain_timeout=settings.drain_timeout_s,
        load_fnc=load_fnc,  # worker/load.py: CPU, loop lag, VAD lag, underruns; 1.0 = turns late
        load_threshold=settings.load_threshold,  # in dev as in start (livekit's dev default: no limit)
        port=0,  # livekit-agents' own HTTP server: ephemeral (health is METRICS_PORT's /healthz, /readyz)
        **kwargs,
    )


def server_for(agent: Agent, settings: WorkerSettings | None = None) -> AgentServer:
    """The livekit-agents server running ``agent``; it reports registration and draining to ``/readyz``."""
    server = AgentServer.from_server_options(server_options(settings or agent.settings))

    def registered(*_: Any) -> None:
        READINESS.registered = True

    server.on("worker_registered", registered)
    READINESS.draining_probe = lambda: server.draining
    return server


def check_startup(agent: Agent | None = None) -> Providers:
    """Validate what a job will need before the worker registers: LiveKit settings, the agent's mode and
    settings, providers, playbook and tools; load the VAD model. Raises :class:`ConfigError` saying what
    to fix. Returns the providers it built (closed)."""
    agent = agent or current_agent()
    settings = agent.settings
    settings.require_livekit()
    create_session_store(settings.session_store_url, ttl_s=settings.session_ttl_s)  # ConfigError if bad
    agent.check()
    providers = agent.create_providers()
    tools = agent.create_tools()
    build_conversation(settings, providers, tools=tools, playbook=agent.create_playbook(tools))
    asyncio.run(providers.aclose())
    if settings.turn_detection != "vad":
        get_shared_runner(settings.turn_detection)  # a missing end-of-turn model fails the start
    if settings.executor == "process":
        # jobs load the model in their own processes; load it here once too, so a broken model fails the
        # start and /readyz means "the model loads" (thread executor: prewarm loads it in this process)
        get_shared_engine()
        READINESS.vad_loaded = True
    return providers


__all__ = ["check_startup", "entrypoint", "make_request_fnc", "prewarm", "server_for", "server_options"]
