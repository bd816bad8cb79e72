"""``python -m signalling``: run the token service (and serve the web client)."""

from __future__ import annotations

import argparse
import logging
import sys

from pydantic import ValidationError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m signalling", description="llmrtc token service")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--open", action="store_true", help="local development only: issue tokens without an API key"
    )
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    from signalling.service import TokenServiceSettings, create_app
    from signalling.service.server import run

    try:
        settings = TokenServiceSettings(TOKEN_SERVICE_OPEN_MODE=True) if args.open else TokenServiceSettings()
    except ValidationError as exc:
        for err in exc.errors():
            print(f"token service: {err['msg']}", file=sys.stderr)
        raise SystemExit(2) from None
    run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        drain_timeout_s=settings.drain_timeout_s,
    )


if __name__ == "__main__":
    main()
