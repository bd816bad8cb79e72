"""Playbook turns through a real vendor SDK on the wire: the OpenAI provider against a local fake server,
in process and through the REPL (``python -m llmrtc.playbooks chat``) configured from the environment."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llmrtc.playbooks import load_playbook, load_tools
from llmrtc.playbooks.orchestrator import PlaybookOrchestrator
from llmrtc.providers.openai import OpenAILLMProvider
from tests.providers.fakes.openai import ChatTurn, FakeOpenAI, ToolCall

ROOT = Path(__file__).resolve().parents[3]
PLAYBOOK = ROOT / "examples" / "support_playbook.yaml"
TOOLS = ROOT / "examples" / "support_tools.py"


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAI]:
    fake = FakeOpenAI(api_key="sk-test")
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


async def test_two_phase_turn_over_openai_wire(server: FakeOpenAI) -> None:
    tools = load_tools(str(TOOLS))
    playbook = load_playbook(PLAYBOOK, registry=tools)
    server.push_chat(
        ChatTurn(text="I'd be glad to help you login."),
        ChatTurn(tool_calls=[ToolCall("call_1", "verify_user", {"account_id": "1001", "pin": "4321"})]),
        ChatTurn(text=""),
        ChatTurn(text="Thanks Ada, you are verified."),
    )
    llm = OpenAILLMProvider(api_key="sk-test", base_url=server.base_url, model="gpt-test")
    try:
        orch = PlaybookOrchestrator(llm, playbook, tools)
        first = await orch.execute_turn("I want to check my account")
        assert first.stage == "auth"
        second = await orch.execute_turn("1001 and 4321")
    finally:
        await llm.aclose()
    assert second.response == "Thanks Ada, you are verified." and second.stage == "triage"
    assert second.tool_results[0].success and second.tool_results[0].result["name"] == "Ada Lovelace"

    bodies = [r.body for r in server.requests]
    assert len(bodies) == 4
    assert "tools" not in bodies[0] or not bodies[0]["tools"]  # greeting offers no tools
    assert [t["function"]["name"] for t in bodies[1]["tools"]] == ["verify_user"]
    assert (
        bodies[1]["messages"][0]["role"] == "system"
        and "Acme Internet" in bodies[1]["messages"][0]["content"]
    )
    # the tool round goes back in OpenAI's format, then the answer is streamed without tools
    roles = [m["role"] for m in bodies[3]["messages"]]
    assert roles[-3:] == ["user", "assistant", "tool"]
    assert bodies[3]["messages"][-2]["tool_calls"][0]["id"] == "call_1"
    assert bodies[3]["messages"][-1]["tool_call_id"] == "call_1"
    assert bodies[3]["tool_choice"] == "none" and bodies[3]["stream"] is True
    assert bodies[1]["temperature"] == 0.4  # the playbook's default LLM config


async def test_repl_with_environment_configured_provider(server: FakeOpenAI) -> None:
    server.push_chat(ChatTurn(text="Hi! I'm happy to help with your problem."))
    env = {
        **os.environ,
        "LLM_PROVIDER": "openai",
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_MODEL": "gpt-test",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "llmrtc.playbooks",
        "chat",
        str(PLAYBOOK),
        "--tools",
        str(TOOLS),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(ROOT),
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(b"my internet is down\n/state\n"), 60)
    text = out.decode()
    assert proc.returncode == 0, err.decode()
    assert "assistant: Hi! I'm happy to help with your problem." in text
    assert "[stage] greeting -> triage via greeting-to-triage" in text
    assert "path greeting -> triage" in text
    assert len(server.requests) == 1 and server.requests[0].headers["Authorization"] == "Bearer sk-test"
