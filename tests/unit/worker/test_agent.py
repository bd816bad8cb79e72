"""The code-first Agent API: factories, mode checks, per-room tools, hooks and MCP servers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from llmrtc.errors import ConfigError
from llmrtc.hooks import Hooks
from llmrtc.testing import FakeSTT, FakeTTS, ScriptedLLM
from llmrtc.tools import ToolContext, ToolRegistry, define_tool
from llmrtc.types import ToolCallRequest
from worker.agent import Agent, current_agent
from worker.config import WorkerSettings

MCP_SERVER = str(Path(__file__).parents[1] / "core" / "mcp_test_server.py")
PLAYBOOK = Path(__file__).parents[3] / "examples" / "support_playbook.yaml"


@define_tool
async def echo(text: str) -> str:
    """Say it back."""
    return text


def settings(**env: object) -> WorkerSettings:
    return WorkerSettings(_env_file=None, **env)  # type: ignore[arg-type]


def test_providers_are_factories_not_instances() -> None:
    with pytest.raises(ConfigError, match="factory"):
        Agent(llm=ScriptedLLM(["hi"]))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="class or a function"):
        Agent(tts="openai")  # type: ignore[arg-type]
    agent = Agent(
        llm=lambda: ScriptedLLM(["hi"]), stt=lambda: FakeSTT(["x"]), tts=FakeTTS, settings=settings()
    )
    first, second = agent.create_providers(), agent.create_providers()
    assert isinstance(first.tts, FakeTTS) and first.llm is not second.llm, "one set per room"
    assert current_agent() is agent, "the last agent made is the one this process runs"


def test_a_factory_must_make_the_right_kind() -> None:
    agent = Agent(llm=lambda: FakeTTS(), stt=lambda: FakeSTT(["x"]), tts=FakeTTS, settings=settings())  # type: ignore[arg-type, return-value]
    with pytest.raises(ConfigError, match="not a LLMProvider"):
        agent.create_providers()


def test_missing_providers_name_each_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LLM_PROVIDER", "STT_PROVIDER", "TTS_PROVIDER"):
        monkeypatch.delenv(var, raising=False)
    agent = Agent(llm=lambda: ScriptedLLM(["hi"]), settings=settings())
    with pytest.raises(ConfigError) as caught:
        agent.create_providers()
    message = caught.value.message
    assert "STT" in message and "TTS" in message and "LLM:" not in message


def test_instructions_and_playbook_exclude_each_other() -> None:
    with pytest.raises(ConfigError, match="own prompts"):
        Agent(instructions="Be brief.", playbook=PLAYBOOK)


def test_settings_a_mode_would_ignore_are_refused() -> None:
    Agent(settings=settings(FLOOR_POLICY="name", WAKE_WORDS="robo")).check()  # applies: fine
    Agent(settings=settings(FLOOR_ATTRIBUTE="llmrtc.floor")).check()  # the default spelt out: fine
    cases = [
        (settings(WAKE_WORDS="robo"), "WAKE_WORDS"),
        (settings(FLOOR_ATTRIBUTE="x.floor"), "FLOOR_ATTRIBUTE"),
        (settings(BARGE_IN=False, BARGE_IN_MIN_SPEECH_MS=200), "BARGE_IN_MIN_SPEECH_MS"),
        (settings(PLAYBOOK=PLAYBOOK, SYSTEM_PROMPT="You are Sam."), "SYSTEM_PROMPT"),
    ]
    for given, named in cases:
        with pytest.raises(ConfigError, match=named):
            Agent(settings=given).check()
    with pytest.raises(ConfigError, match="TOOLS"):
        Agent(tools=[echo], settings=settings(TOOLS="examples/support_tools.py")).check()


def test_code_first_choices_override_the_environment() -> None:
    agent = Agent(instructions="Answer in French.", greeting="Bonjour !", settings=settings(GREETING="Hi"))
    assert agent.settings.system_prompt == "Answer in French."
    assert agent.settings.greeting == "Bonjour !"


def test_tools_and_hooks_are_made_per_room() -> None:
    class Recorder(Hooks):
        pass

    agent = Agent(tools=[echo], hooks=Recorder, settings=settings())
    one, two = agent.create_tools(), agent.create_tools()
    assert one.names() == ["echo"] and one is not two
    assert isinstance(agent.create_hooks(), Recorder) and agent.create_hooks() is not agent.create_hooks()
    shared = ToolRegistry([echo])
    assert Agent(tools=shared, settings=settings()).create_tools() is shared
    assert Agent(settings=settings()).create_hooks() is None


async def test_mcp_servers_add_their_tools_to_the_room() -> None:
    spec = {"name": "local", "command": sys.executable, "args": [MCP_SERVER, "stdio"]}
    agent = Agent(tools=[echo], mcp_servers=[spec], settings=settings())
    registry = agent.create_tools()
    toolset = await agent.open_mcp(registry)
    assert toolset is not None
    try:
        names = registry.names()
        assert "echo" in names and any(n.endswith("add") for n in names), names
        add = next(n for n in names if n.endswith("add"))
        from llmrtc.tools import ToolExecutor

        results = await ToolExecutor(registry).execute(
            [ToolCallRequest(call_id="c1", name=add, arguments={"a": 2, "b": 3})], ToolContext("room")
        )
        assert results[0].success and "5" in str(results[0].result)
    finally:
        await toolset.aclose()
    assert await Agent(settings=settings()).open_mcp(ToolRegistry()) is None


def test_mcp_servers_setting_is_validated() -> None:
    with pytest.raises(ValueError, match="MCP"):
        settings(MCP_SERVERS="not json")
    assert settings(MCP_SERVERS='[{"name":"x","url":"http://127.0.0.1:1/mcp"}]').mcp_servers
