"""Write ``docs/protocol.schema.json``: the JSON Schema of the llmrtc data-message protocol.

Generated from the pydantic models of ``worker/protocol.py`` so that Swift, Kotlin, Dart (or any) types can be
generated from it. ``tests/e2e/test_protocol_schema.py`` fails when the checked-in file is out of date.

Usage: ``python -m scripts.protocol_schema`` (writes the file) or ``--check`` (exit 1 when it differs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from worker import protocol

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = ROOT / "docs" / "protocol.schema.json"
REF = "#/$defs/{model}"


def build_schema() -> dict[str, Any]:
    """The protocol's JSON Schema (draft 2020-12): ``ServerEvent`` and ``ClientMessage`` unions in ``$defs``."""
    defs: dict[str, Any] = {}
    unions: dict[str, Any] = {}
    adapters: list[tuple[str, TypeAdapter[Any]]] = [
        ("ServerEvent", TypeAdapter(protocol.ServerEvent)),
        ("ClientMessage", TypeAdapter(protocol.ClientMessage)),
    ]
    for name, adapter in adapters:
        schema = adapter.json_schema(ref_template=REF, mode="validation")
        models: dict[str, Any] = schema.pop("$defs", {})
        for model in models.values():
            # the worker always sends v and type; clients must always send type (the discriminator)
            always = ["v", "type"] if name == "ServerEvent" else ["type"]
            model["required"] = always + [f for f in model.get("required", []) if f not in always]
            if name == "ServerEvent":
                # clients ignore fields they do not know, so newer workers stay readable
                model.pop("additionalProperties", None)
        defs.update(models)
        schema["description"] = (
            "A message the worker sends on the data topic; ignore unknown types and fields."
            if name == "ServerEvent"
            else "A message a client sends to the worker on the data topic (reliable)."
        )
        unions[name] = schema
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"llmrtc data-message protocol v{protocol.PROTOCOL_VERSION}",
        "description": (
            f"One JSON object per LiveKit data packet on topic '{protocol.TOPIC}'. Generated from "
            "worker/protocol.py by `python -m scripts.protocol_schema`; see docs/protocol.md."
        ),
        "x-topic": protocol.TOPIC,
        "x-version": protocol.PROTOCOL_VERSION,
        "x-max-client-message-bytes": protocol.MAX_CLIENT_MESSAGE_BYTES,
        "oneOf": [{"$ref": REF.format(model="ServerEvent")}, {"$ref": REF.format(model="ClientMessage")}],
        "$defs": {**dict(sorted(defs.items())), **unions},
    }


def render() -> str:
    return json.dumps(build_schema(), indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.protocol_schema", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when the checked-in schema is out of date"
    )
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = SCHEMA_PATH.read_text() if SCHEMA_PATH.is_file() else ""
        if current != text:
            print(f"{SCHEMA_PATH} is out of date: run `python -m scripts.protocol_schema`", file=sys.stderr)
            return 1
        return 0
    SCHEMA_PATH.write_text(text)
    print(f"wrote {SCHEMA_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
