"""Code-first agents: your providers, tools, hooks and playbook, run by the llmrtc worker.

A user writes ``my_agent.py``::

    from llmrtc.tools import define_tool
    from worker import Agent

    @define_tool
    async def get_weather(city: str) -> dict[str, str]:
        \"\"\"Current weather for a city.\"\"\"
        return {"city": city, "sky": "clear"}

    agent = Agent(
        instructions="You are a helpful voice assistant.",
        tts=lambda: MyTTS(base_url="http://localhost:3456"),  # your own provider class
        tools=[get_weather],
    )

    if __name__ == "__main__":
        agent.run()  # python my_agent.py dev | start | connect --room R | console

and runs ``python my_agent.py dev``. ``python -m worker`` is the same thing configured only from the
environment (``Agent()`` with nothing given).

Define the agent at module level: with ``WORKER_EXECUTOR=process`` each job runs in a fresh process that
imports your script again (without running the ``__main__`` block), and the :class:`Agent` made at import
is the one its jobs use. Providers, tools and hooks are given as *factories* (a class or a function with no
arguments), called once per room off the room's event loop, because provider clients hold connections
bound to the loop that uses them. Whatever is not given comes from the environment (``LLM_PROVIDER``,
``OPENAI_API_KEY``, ``TOOLS``, ``PLAYBOOK``, ... see ``.env.example``).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from llmrtc.errors import ConfigError
from llmrtc.playbooks.types import Playbook
from llmrtc.providers.base import LLMProvider, STTProvider, TTSProvider, VisionProvider
from llmrtc.tools import Tool, ToolRegistry
from worker.config import WorkerSettings, load_settings
from worker.conversation import Providers, load_room_playbook

if TYPE_CHECKING:
    from llmrtc.mcp import MCPServerSpec, MCPToolset

log = logging.getLogger("llmrtc.worker.agent")

P = TypeVar("P")
Factory = Callable[[], P]
"""A class or function with no arguments that makes one (a provider, the hooks, a tool registry)."""

_lock = threading.RLock()
_current: Agent | None = None


def current_agent() -> Agent:
    """The agent this process runs: the last :class:`Agent` made (at module level of the user's script),
    else the environment-configured one of ``python -m worker``."""
    global _current
    with _lock:
        if _current is None:
            _current = Agent()
        return _current


def _check_factory(name: str, value: object, kind: type) -> None:
    if value is None:
        return
    if isinstance(value, kind):
        raise ConfigError(
            f"Agent({name}=...) needs a factory, not a ready {kind.__name__}: each room builds its own "
            f"client on its own event loop. Pass the class, or e.g. {name}=lambda: "
            f"{type(value).__name__}(...)"
        )
    if not callable(value):
        raise ConfigError(f"Agent({name}=...) must be a class or a function with no arguments")


class Agent:
    """A voice agent: what it says and does (prompt or playbook, tools, hooks) and which providers it uses.

    ``llm``, ``stt``, ``tts``, ``vision``: factories of your own or llmrtc providers (unset: from the
    environment). ``instructions``: the system prompt of a plain assistant (default ``SYSTEM_PROMPT``).
    ``playbook``: a :class:`~llmrtc.playbooks.types.Playbook` or a playbook file (default ``PLAYBOOK``);
    with one, ``instructions`` may not be set (the playbook has its prompts). ``tools``: tools (functions
    made with :func:`~llmrtc.tools.define_tool`), a :class:`~llmrtc.tools.ToolRegistry`, or a factory of
    one (default ``TOOLS``). ``hooks``: a :class:`~llmrtc.hooks.Hooks` factory (one per room).
    ``mcp_servers``: MCP servers whose tools join each room's registry (stdio or streamable HTTP specs,
    see :func:`llmrtc.mcp.parse_mcp_servers`; default ``MCP_SERVERS``).
    ``greeting``: spoken when a human joins (default ``GREETING``). ``settings``: the worker settings
    (default: read from the environment and ``.env`` when the agent runs).
    """

    def __init__(
        self,
        *,
        llm: Factory[LLMProvider] | None = None,
        stt: Factory[STTProvider] | None = None,
        tts: Factory[TTSProvider] | None = None,
        vision: Factory[VisionProvider] | None = None,
        instructions: str | None = None,
        playbook: Playbook | str | Path | None = None,
        tools: Sequence[Tool] | ToolRegistry | Factory[ToolRegistry] | None = None,
        hooks: Factory[Any] | None = None,
        mcp_servers: Sequence[Mapping[str, Any]] | str | None = None,
        greeting: str | None = None,
        settings: WorkerSettings | None = None,
    ) -> None:
        global _current
        for name, value, kind in (
            ("llm", llm, LLMProvider),
            ("stt", stt, STTProvider),
            ("tts", tts, TTSProvider),
            ("vision", vision, VisionProvider),
        ):
            _check_factory(name, value, kind)
        if hooks is not None and not callable(hooks):
            raise ConfigError("Agent(hooks=...) needs a factory: the Hooks class, or a function making one")
        if instructions is not None and playbook is not None:
            raise ConfigError(
                "Agent(instructions=..., playbook=...): a playbook has its own prompts (global_system_prompt "
                "and each stage's system_prompt); give one or the other"
            )
        self._llm, self._stt, self._tts, self._vision = llm, stt, tts, vision
        self.instructions = instructions
        self.playbook = playbook
        self._tools = tools
        self._hooks = hooks
        self._mcp_servers = mcp_servers
        self.greeting = greeting
        self._settings = settings
        with _lock:
            _current = self

    # ------------------------------------------------------------------------------------------ settings

    @property
    def settings(self) -> WorkerSettings:
        """The worker settings with this agent's own choices applied (read from the environment once)."""
        if self._settings is None:
            self._settings = load_settings()
        updates: dict[str, Any] = {}
        if self.instructions is not None:
            updates["system_prompt"] = self.instructions
        if self.greeting is not None:
            updates["greeting"] = self.greeting
        if isinstance(self.playbook, str | Path):
            updates["playbook"] = Path(self.playbook)
        return self._settings.model_copy(update=updates) if updates else self._settings

    def check(self) -> None:
        """Refuse settings that this agent's mode would ignore (a clear :class:`ConfigError`)."""
        settings = self.settings
        defaults = WorkerSettings.model_fields
        # set, and to something other than its default (a copied .env.example may spell defaults out)
        explicit = {
            name
            for name in settings.model_fields_set
            if name in defaults
            and getattr(settings, name) != defaults[name].get_default(call_default_factory=True)
        }
        playbook_mode = self.playbook is not None or settings.playbook is not None
        problems: list[str] = []
        if playbook_mode and "system_prompt" in explicit and self.instructions is None:
            problems.append(
                "SYSTEM_PROMPT is ignored with a playbook (its global_system_prompt and stages give the "
                "prompts): unset SYSTEM_PROMPT or PLAYBOOK"
            )
        if settings.floor_policy != "name" and "wake_words" in explicit:
            problems.append("WAKE_WORDS only applies with FLOOR_POLICY=name")
        if settings.floor_policy != "designated" and "floor_attribute" in explicit:
            problems.append("FLOOR_ATTRIBUTE only applies with FLOOR_POLICY=designated")
        if not settings.barge_in:
            for field, var in (
                ("resume_false_interruption", "RESUME_FALSE_INTERRUPTION"),
                ("false_interruption_timeout_s", "FALSE_INTERRUPTION_TIMEOUT"),
                ("barge_in_min_speech_ms", "BARGE_IN_MIN_SPEECH_MS"),
                ("barge_in_threshold", "BARGE_IN_THRESHOLD"),
            ):
                if field in explicit:
                    problems.append(f"{var} only applies with BARGE_IN=true")
        if not settings.resume_false_interruption and "false_interruption_timeout_s" in explicit:
            problems.append("FALSE_INTERRUPTION_TIMEOUT only applies with RESUME_FALSE_INTERRUPTION=true")
        if self._tools is not None and settings.tools:
            problems.append("TOOLS is ignored when the agent's code gives its tools: unset TOOLS")
        if problems:
            raise ConfigError("settings this agent would ignore:\n  " + "\n  ".join(problems))

    # ------------------------------------------------------------------------------------------ per room

    def create_providers(self) -> Providers:
        """One room's providers: the factories given, the environment's for the rest.

        Blocking (clients build SSL contexts): the worker calls it off the room's event loop.
        """
        from llmrtc.providers.registry import (
            create_llm_from_env,
            create_stt_from_env,
            create_tts_from_env,
            create_vision_from_env,
        )

        problems: list[str] = []

        def make(
            kind: str, factory: Callable[[], Any] | None, from_env: Callable[[], Any], base: type
        ) -> Any:
            if factory is not None:
                made = factory()
                if not isinstance(made, base):
                    raise ConfigError(
                        f"the agent's {kind} factory returned {type(made).__name__}, not a {base.__name__}"
                    )
                return made
            try:
                return from_env()
            except ConfigError as exc:
                problems.append(f"{kind.upper()}: {exc.message}")
                return None

        stt = make("stt", self._stt, create_stt_from_env, STTProvider)
        llm = make("llm", self._llm, create_llm_from_env, LLMProvider)
        tts = make("tts", self._tts, create_tts_from_env, TTSProvider)
        vision = self._vision() if self._vision is not None else None
        if (
            vision is None
            and llm is not None
            and not llm.capabilities.vision
            and self.settings.vision != "off"
        ):
            # the LLM cannot see: the environment's vision provider (VISION_PROVIDER=llava) describes frames
            vision = make("vision", None, create_vision_from_env, VisionProvider)
        if problems:
            raise ConfigError(
                "no provider is configured for "
                + ", ".join(p.split(":", 1)[0] for p in problems)
                + ".\n  "
                + "\n  ".join(problems)
                + "\n  The quickest start: OPENAI_API_KEY=... (OpenAI for all three), or OPENAI_BASE_URL=... "
                "pointing at any OpenAI-compatible server, or LOCAL_ONLY=true (Ollama, Faster-Whisper, Piper)."
            )
        return Providers(llm=llm, stt=stt, tts=tts, vision=vision)

    def create_tools(self) -> ToolRegistry:
        """One room's tool registry."""
        from llmrtc.playbooks.loader import load_tools

        tools = self._tools
        if tools is None:
            return load_tools(self.settings.tools or None)
        if isinstance(tools, ToolRegistry):
            return tools
        if callable(tools) and not isinstance(tools, Tool):
            made = tools()
            if not isinstance(made, ToolRegistry):
                raise ConfigError("Agent(tools=...) factory must return a ToolRegistry")
            return made
        return ToolRegistry(list(tools))

    def mcp_specs(self) -> list[MCPServerSpec]:
        """The MCP servers of this agent (code first, else ``MCP_SERVERS``)."""
        from llmrtc.mcp import parse_mcp_servers

        value = self._mcp_servers if self._mcp_servers is not None else self.settings.mcp_servers
        return parse_mcp_servers(value or None)

    async def open_mcp(self, registry: ToolRegistry) -> MCPToolset | None:
        """Connect this room's MCP servers and add their tools to ``registry`` (``None`` without servers).

        A server that cannot be reached is skipped with a warning (unless its spec says ``required``);
        the caller closes the toolset when the room ends.
        """
        specs = self.mcp_specs()
        if not specs:
            return None
        from llmrtc.mcp import MCPToolset

        toolset = MCPToolset(specs)
        await toolset.start()
        toolset.register_into(registry)
        return toolset

    def create_hooks(self) -> Any:
        """One room's hooks (``None`` when the agent has none)."""
        return self._hooks() if self._hooks is not None else None

    def create_playbook(self, tools: ToolRegistry) -> Playbook | None:
        """One room's playbook (a copy, so rooms never share stage state), or ``None``."""
        if isinstance(self.playbook, Playbook):
            return self.playbook.model_copy(deep=True)
        return load_room_playbook(self.settings, tools)

    # ------------------------------------------------------------------------------------------ running

    def run(self, argv: Sequence[str] | None = None) -> int:
        """Run the agent: ``dev``, ``start``, ``connect --room NAME`` (livekit-agents' CLI) or ``console``."""
        from worker.cli import run_agent

        code = run_agent(self, list(sys.argv[1:] if argv is None else argv))
        if argv is None:
            sys.exit(code)
        return code


__all__ = ["Agent", "Factory", "current_agent"]
