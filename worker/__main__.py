"""``python -m worker dev|start|connect``: the livekit-agents CLI around this worker.

Settings and providers are validated first; a missing or invalid variable ends the program with a message
saying what to set (exit status 2).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import warnings

from llmrtc.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    wants_help = not args or args[0] in ("-h", "--help", "download-files")
    from dotenv import load_dotenv

    from worker.config import env_file_path, load_settings

    load_dotenv(env_file_path(), override=False)  # providers read os.environ; the environment wins
    from worker.entrypoint import check_startup, server_options

    try:
        settings = load_settings()
        if not wants_help:
            providers = check_startup(settings)
            asyncio.run(providers.aclose())
    except ConfigError as exc:
        print(f"llmrtc worker: {exc.message}", file=sys.stderr)
        return 2
    from livekit.agents import cli

    logging.getLogger("llmrtc").setLevel(logging.INFO)
    sys.argv = [sys.argv[0], *args]
    from worker.store import close_process_session_store

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            cli.run_app(server_options(settings))
    finally:
        close_process_session_store()  # the store the jobs of this process shared
    return 0


if __name__ == "__main__":
    sys.exit(main())
