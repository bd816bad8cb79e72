"""The command line of an agent: ``dev``, ``start``, ``connect`` (livekit-agents' worker) and ``console``.

Before the worker registers, the agent's settings and providers are checked (a missing or invalid variable
ends the program with a message saying what to set, exit status 2), the VAD model is loaded, and, with
``METRICS_PORT``, ``/metrics``, ``/healthz`` and ``/readyz`` are served (:mod:`worker.observability`).
``console`` talks to the agent in the terminal without a room or a server (:mod:`worker.console`).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import TYPE_CHECKING

from llmrtc.errors import ConfigError

if TYPE_CHECKING:
    from worker.agent import Agent

log = logging.getLogger("llmrtc.worker")

_QUIET_LOGGERS = ("aioice", "aiortc", "livekit", "websockets", "httpx", "httpcore", "asyncio")


def quiet_third_party_logs() -> None:
    """Third-party chatter at WARNING (ICE candidates, HTTP requests); llmrtc's own logs at INFO."""
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("livekit.agents").setLevel(logging.INFO)
    logging.getLogger("llmrtc").setLevel(logging.INFO)


PRELOAD_LOCAL_INFERENCE_ENV = "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE"


def skip_unused_preload(turn_detection: str) -> None:
    """Keep livekit-agents from loading local models this worker does not use.

    At a process's first job, livekit-agents' warm-up (``livekit.agents.ipc._preload``) loads its own local
    VAD and, in a thread-executor worker, LiveKit's end-of-turn weights: about 250 MB of RSS. This worker
    runs Silero for VAD and needs those weights only with ``TURN_DETECTION=livekit``; otherwise
    ``LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE`` defaults to ``0`` here (a value set by the user stays).
    Set in this process's environment before the server starts, job processes inherit it.
    """
    if turn_detection != "livekit":
        os.environ.setdefault(PRELOAD_LOCAL_INFERENCE_ENV, "0")


class _NoLkCliHint(logging.Filter):
    """livekit-agents suggests ``lk agent dev``; this worker's own commands are the ones that apply here."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "lk agent" not in message and "deprecated; use the LiveKit CLI" not in message


def run_agent(agent: Agent, args: list[str]) -> int:
    """Run ``agent`` with command-line ``args``; the exit status."""
    from dotenv import load_dotenv

    from worker.config import env_file_path

    load_dotenv(env_file_path(), override=False)  # providers read os.environ; the environment wins
    if args and args[0] == "console":
        from worker.console import main as console_main

        return console_main(agent, args[1:])
    wants_help = not args or args[0] in ("-h", "--help", "download-files")
    if not wants_help and args[0] in ("dev", "start"):
        try:
            processes = agent.settings.worker_processes
        except ConfigError as exc:
            print(f"llmrtc worker: {exc.message}", file=sys.stderr)
            return 2
        if processes > 1:  # N supervised worker processes, each running this command (worker/supervisor.py)
            from worker.supervisor import supervise

            s = agent.settings
            return supervise(processes, metrics_port=s.metrics_port, drain_timeout_s=s.drain_timeout_s)
    shared_metrics: str | None = None
    serving = not wants_help and args[0] in ("dev", "start")  # the settings were checked just above
    if serving and agent.settings.metrics_port is not None and agent.settings.executor == "process":
        from worker.observability import share_job_metrics

        shared_metrics = share_job_metrics()  # before livekit-agents imports prometheus_client
    from worker.entrypoint import check_startup, server_for
    from worker.observability import READINESS, ObservabilityServer, end_job_metrics

    try:
        settings = agent.settings
        if not wants_help:
            check_startup(agent)
    except ConfigError as exc:
        print(f"llmrtc worker: {exc.message}", file=sys.stderr)
        return 2
    skip_unused_preload(settings.turn_detection)
    from livekit.agents import cli

    quiet_third_party_logs()
    for handler_owner in (logging.getLogger(), logging.getLogger("livekit.agents")):
        handler_owner.addFilter(_NoLkCliHint())
    metrics_server: ObservabilityServer | None = None
    if settings.metrics_port is not None and not wants_help:
        metrics_server = ObservabilityServer(settings.metrics_host, settings.metrics_port)
        try:
            port = metrics_server.start()
        except OSError as exc:
            print(f"llmrtc worker: METRICS_PORT={settings.metrics_port}: {exc}", file=sys.stderr)
            return 2
        print(f"llmrtc worker: metrics and health on port {port}", file=sys.stderr)
    READINESS.providers_built = True
    sys.argv = [sys.argv[0], *args]
    from worker.store import close_process_session_store

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            cli.run_app(server_for(agent, settings))
    finally:
        close_process_session_store()  # the store the jobs of this process shared
        if metrics_server is not None:
            metrics_server.stop()
        end_job_metrics(shared_metrics)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m worker``: the agent configured from the environment only."""
    from worker.agent import current_agent

    try:
        agent = current_agent()
    except ConfigError as exc:
        print(f"llmrtc worker: {exc.message}", file=sys.stderr)
        return 2
    return run_agent(agent, sys.argv[1:] if argv is None else argv)


__all__ = [
    "PRELOAD_LOCAL_INFERENCE_ENV",
    "main",
    "quiet_third_party_logs",
    "run_agent",
    "skip_unused_preload",
]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
