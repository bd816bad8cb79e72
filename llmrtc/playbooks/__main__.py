"""``python -m llmrtc.playbooks``: validate a playbook file, or chat with it in a text REPL.

    python -m llmrtc.playbooks validate FILE [--tools SPEC]
    python -m llmrtc.playbooks chat FILE [--tools SPEC]

``SPEC`` names the tools the playbook uses: ``path/to/tools.py`` or ``package.module`` (its
``build_registry()`` or ``registry``), optionally ``:name`` of a function returning a ToolRegistry or of a
registry. ``chat`` uses the LLM configured in the environment (``.env`` / ``LLM_PROVIDER`` and the vendor's
key, see ``llmrtc.providers.registry``) and shows tool calls and stage changes as they happen.
REPL commands: ``/stage``, ``/state``, ``/reset``, ``/quit``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, TextIO

from llmrtc.errors import ConfigError, LLMRTCError, PlaybookError, PlaybookValidationError
from llmrtc.events import ErrorEvent, LLMChunkEvent, StageChangeEvent, ToolCallEvent, ToolResultEvent
from llmrtc.playbooks.loader import load_playbook, load_tools
from llmrtc.playbooks.orchestrator import PlaybookOrchestrator
from llmrtc.playbooks.types import Playbook
from llmrtc.playbooks.validation import validate_playbook
from llmrtc.providers.base import LLMProvider

log = logging.getLogger("llmrtc.playbooks.repl")


def _short(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def _lines_from_stdin(prompt: str, out: TextIO) -> AsyncIterator[str]:
    while True:
        out.write(prompt)
        out.flush()
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            return
        yield line.rstrip("\n")


async def _iterate(lines: Iterable[str] | AsyncIterator[str]) -> AsyncIterator[str]:
    if isinstance(lines, AsyncIterator):
        async for line in lines:
            yield line
    else:
        for line in lines:
            yield line


async def chat(
    orchestrator: PlaybookOrchestrator, lines: Iterable[str] | AsyncIterator[str], out: TextIO
) -> int:
    """Run the REPL over ``lines`` (user inputs), writing the conversation to ``out``. Returns an exit code."""
    engine = orchestrator.engine
    await engine.start()
    out.write(f"[playbook {orchestrator.playbook.id}] stage: {engine.current_stage.id}\n")
    async for raw in _iterate(lines):
        line = raw.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            break
        if line == "/stage":
            stage = engine.current_stage
            out.write(
                f"[stage] {stage.id} ({stage.label}); tools: {', '.join(engine.tool_names()) or 'none'}\n"
            )
            continue
        if line == "/state":
            state = engine.state
            visits = " -> ".join(v.stage_id for v in state.stage_history)
            out.write(f"[state] turns {state.turn_count}, in stage {state.stage_turn_count}; path {visits}\n")
            out.write(f"[state] context {_short(state.context)}\n")
            continue
        if line == "/reset":
            await engine.reset()
            await engine.start()
            orchestrator.clear_history()
            out.write(f"[reset] stage: {engine.current_stage.id}\n")
            continue
        fresh_line = True

        def note(text: str) -> None:
            nonlocal fresh_line
            out.write(("" if fresh_line else "\n") + f"  {text}\n")
            fresh_line = True

        async for event in orchestrator.stream_turn(line, speaker="user"):
            if isinstance(event, LLMChunkEvent):
                if fresh_line:
                    out.write("assistant: ")
                    fresh_line = False
                out.write(event.content)
            elif isinstance(event, ToolCallEvent):
                note(f"[tool] {event.call.name}({_short(event.call.arguments)})")
            elif isinstance(event, ToolResultEvent):
                res = event.result
                note(
                    f"[tool] {res.tool_name} -> {_short(res.result) if res.success else 'error: ' + str(res.error)}"
                )
            elif isinstance(event, StageChangeEvent):
                reason = f": {event.reason}" if event.reason else ""
                note(f"[stage] {event.from_stage} -> {event.to_stage} via {event.transition_id}{reason}")
            elif isinstance(event, ErrorEvent):
                note(f"[error] {event.error.code}: {event.error.message}")
        if not fresh_line:
            out.write("\n")
        out.flush()
        if engine.is_complete:
            out.write(f"[playbook complete] final stage: {engine.current_stage.id}\n")
            break
    return 0


def _print_issues(issues: Iterable[Any], out: TextIO) -> None:
    for issue in issues:
        out.write(f"  {issue}\n")


def main(argv: list[str] | None = None, *, llm_factory: Callable[[], LLMProvider] | None = None) -> int:
    """Entry point; ``llm_factory`` replaces the environment's LLM (tests)."""
    parser = argparse.ArgumentParser(prog="python -m llmrtc.playbooks", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("validate", "check a playbook file"), ("chat", "chat with a playbook")):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("file", help="playbook file (.yaml, .yml or .json)")
        cmd.add_argument("--tools", help="tools: path/to/tools.py or package.module[:name]")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = sys.stdout
    try:
        registry = load_tools(args.tools)
        playbook: Playbook = load_playbook(args.file, registry=registry if args.tools else None)
    except PlaybookValidationError as exc:
        out.write(f"{exc.message.splitlines()[0]}\n")
        _print_issues(exc.issues, out)
        return 1
    except (ConfigError, PlaybookError) as exc:
        out.write(f"error: {exc.message}\n")
        return 2
    if args.command == "validate":
        result = validate_playbook(playbook, registry if args.tools else None)
        out.write(
            f"{args.file}: valid ({len(playbook.stages)} stages, {len(playbook.transitions)} transitions)\n"
        )
        _print_issues(result.warnings, out)
        return 0
    try:
        if llm_factory is not None:
            llm = llm_factory()
        else:
            from llmrtc.providers.registry import create_llm_from_env

            llm = create_llm_from_env()
    except LLMRTCError as exc:
        out.write(f"error: no LLM configured: {exc.message}\n")
        return 2
    orchestrator = PlaybookOrchestrator(llm, playbook, registry)
    try:
        return asyncio.run(chat(orchestrator, _lines_from_stdin("you: ", out), out))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
