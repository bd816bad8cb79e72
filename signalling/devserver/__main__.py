"""``python -m signalling.devserver``: run the development server, like ``livekit-server --dev``.

Prints ``LIVEKIT_URL``, ``LIVEKIT_API_KEY`` and ``LIVEKIT_API_SECRET`` lines once it listens, and shuts down
cleanly on SIGINT or SIGTERM. A development stand-in only: single node, in memory, no TURN, no simulcast.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from llmrtc.errors import ConfigError
from signalling.devserver.server import DevServer

logger = logging.getLogger("signalling.devserver")

DEV_API_KEY = "devkey"
DEV_API_SECRET = "secret"
DEFAULT_PORT = 7880


@dataclass(frozen=True)
class Settings:
    """What the command line resolved to."""

    host: str
    port: int
    api_key: str
    api_secret: str
    log_level: str


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used for ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m signalling.devserver",
        description=(
            "LiveKit-compatible development server for local runs and tests: the official LiveKit SDKs, "
            "livekit-agents workers and livekit-api connect to it unchanged. Single node, in memory, no TURN, "
            "no simulcast: not for production (use livekit-server)."
        ),
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--host",
        "--bind",
        dest="host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 for other machines)",
    )
    parser.add_argument(
        "--dev",
        action="store_true",
        help=f"development keys: API key {DEV_API_KEY!r}, secret {DEV_API_SECRET!r} (as livekit-server --dev)",
    )
    parser.add_argument(
        "--keys", help="one key pair in livekit-server's format: 'KEY: SECRET' (or env LIVEKIT_KEYS)"
    )
    parser.add_argument("--api-key", help="API key (with --api-secret)")
    parser.add_argument("--api-secret", help="API secret (with --api-key)")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (default INFO)",
    )
    return parser


def parse_keys(value: str) -> tuple[str, str]:
    """Parse livekit-server's ``"KEY: SECRET"`` format (exactly one pair)."""
    pairs = [line.strip() for line in value.replace(",", "\n").splitlines() if line.strip()]
    if len(pairs) != 1:
        raise ConfigError(f"--keys needs exactly one 'KEY: SECRET' pair, got {len(pairs)}")
    key, sep, secret = pairs[0].partition(":")
    if not sep or not key.strip() or not secret.strip():
        raise ConfigError("--keys must look like 'KEY: SECRET'")
    return key.strip(), secret.strip()


def resolve(args: argparse.Namespace, env: dict[str, str] | None = None) -> Settings:
    """Turn parsed arguments into :class:`Settings`; raises :class:`ConfigError` on bad input."""
    env = dict(os.environ) if env is None else env
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, got {args.port}")
    if args.keys and (args.api_key or args.api_secret):
        raise ConfigError("give either --keys or --api-key/--api-secret, not both")
    if args.keys:
        key, secret = parse_keys(args.keys)
    elif args.api_key or args.api_secret:
        if not (args.api_key and args.api_secret):
            raise ConfigError("--api-key and --api-secret go together")
        key, secret = args.api_key, args.api_secret
    elif env.get("LIVEKIT_KEYS", "").strip():  # blank means unset
        key, secret = parse_keys(env["LIVEKIT_KEYS"])
    elif args.dev:
        key, secret = DEV_API_KEY, DEV_API_SECRET
    else:
        raise ConfigError(
            "no API key: pass --dev (devkey/secret), --keys 'KEY: SECRET', or --api-key/--api-secret"
        )
    return Settings(host=args.host, port=args.port, api_key=key, api_secret=secret, log_level=args.log_level)


async def serve(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run the server until ``stop`` is set or SIGINT/SIGTERM arrives, then shut it down."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signal support
            pass
    server = DevServer(
        host=settings.host, port=settings.port, api_key=settings.api_key, api_secret=settings.api_secret
    )
    try:
        await server.start()
        print(f"LIVEKIT_URL={server.url}", flush=True)
        print(f"LIVEKIT_API_KEY={settings.api_key}", flush=True)
        print(f"LIVEKIT_API_SECRET={settings.api_secret}", flush=True)
        logger.info("development server ready on %s (Ctrl-C to stop)", server.url)
        await stop.wait()
        logger.info("shutting down")
    finally:
        await server.stop()
        for sig in installed:
            loop.remove_signal_handler(sig)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``llmrtc-devserver``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = resolve(args)
    except ConfigError as exc:
        logging.getLogger("signalling.devserver").error("bad command line: %s", exc.message)
        parser.error(exc.message)
    logging.basicConfig(
        level=getattr(logging, settings.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(serve(settings))
    except OSError as exc:
        logger.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
        sys.exit(1)


if __name__ == "__main__":
    main()
