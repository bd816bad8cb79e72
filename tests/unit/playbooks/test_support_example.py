"""The example support playbook: it validates, and scripted conversations walk it from greeting to farewell."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from llmrtc.events import StageChangeEvent
from llmrtc.playbooks import (
    TRANSITION_TOOL_NAME,
    PlaybookEngine,
    load_playbook,
    load_tools,
    validate_playbook,
)
from llmrtc.playbooks.__main__ import chat, main
from llmrtc.playbooks.orchestrator import PlaybookOrchestrator
from llmrtc.testing import ScriptedLLM, ScriptedReply
from llmrtc.tools import ToolRegistry

ROOT = Path(__file__).resolve().parents[3]
PLAYBOOK = ROOT / "examples" / "support_playbook.yaml"
TOOLS = ROOT / "examples" / "support_tools.py"


def registry() -> ToolRegistry:
    return load_tools(str(TOOLS))


def calls(*specs: tuple[str, dict[str, Any]]) -> ScriptedReply:
    return ScriptedReply(
        tool_calls=[{"name": n, "call_id": f"{n}-{i}", "arguments": a} for i, (n, a) in enumerate(specs)]
    )


def test_example_validates_cleanly() -> None:
    tools = registry()
    playbook = load_playbook(PLAYBOOK, registry=tools)
    result = validate_playbook(playbook, tools)
    assert result.valid and result.issues == []
    assert [s.id for s in playbook.stages] == ["greeting", "auth", "triage", "resolution", "farewell"]
    kinds = {t.condition.type for t in playbook.transitions}
    assert kinds == {"keyword", "max_turns", "tool_call", "llm_decision"}


async def test_scripted_walk_from_greeting_to_farewell() -> None:
    tools = registry()
    llm = ScriptedLLM(
        [
            # 1 greeting: "login" (priority 1) beats "help" -> auth
            "Hi, I'm Sam! I can help: let's login to your account first.",
            # 2 auth: wrong PIN -> verify_user fails -> back to greeting
            calls(("verify_user", {"account_id": "1001", "pin": "0000"})),
            "",
            "Sorry, those details did not match.",
            # 3 greeting -> auth again
            "No problem, let's try the login again.",
            # 4 auth: right PIN -> verify_user succeeds -> triage
            calls(("verify_user", {"account_id": "1001", "pin": "4321"})),
            "",
            "Thanks Ada, you're verified. What's wrong?",
            # 5 triage: research, open a ticket, then decide -> resolution
            calls(
                ("search_knowledge_base", {"query": "slow internet"}), ("create_ticket", {"summary": "slow"})
            ),
            calls(
                (
                    TRANSITION_TOOL_NAME,
                    {
                        "target_stage": "resolution",
                        "reason": "likely fix found",
                        "data": {"ticket_id": "T-0001"},
                    },
                )
            ),
            "Please restart your router.",
            # 6 resolution: not fixed -> escalate -> triage
            calls(("escalate", {"ticket_id": "T-0001", "reason": "still slow"})),
            "",
            "I've escalated ticket T-0001.",
            # 7 triage: the engineer found the fix -> resolution
            calls((TRANSITION_TOOL_NAME, {"target_stage": "resolution", "reason": "line reset"})),
            "We reset your line; please check now.",
            # 8 resolution: fixed -> resolve_issue succeeds -> farewell (final)
            calls(("resolve_issue", {"ticket_id": "T-0001", "resolution": "line reset"})),
            "",
            "Great, it's all fixed.",
        ]
    )
    orch = PlaybookOrchestrator(llm, load_playbook(PLAYBOOK, registry=tools), tools)
    user_says = [
        "Hello, I need to check my account",
        "1001, PIN 0000",
        "Oh sorry",
        "1001, PIN 4321",
        "My internet is slow",
        "Still slow",
        "OK",
        "It works now!",
    ]
    path: list[tuple[str, str]] = []
    for text in user_says:
        async for event in orch.stream_turn(text):
            if isinstance(event, StageChangeEvent):
                path.append((event.transition_id, event.to_stage))
    assert path == [
        ("greeting-to-auth", "auth"),
        ("auth-failed", "greeting"),
        ("greeting-to-auth", "auth"),
        ("auth-verified", "triage"),
        ("triage-to-resolution", "resolution"),
        ("escalated", "triage"),
        ("triage-to-resolution", "resolution"),
        ("resolved", "farewell"),
    ]
    engine = orch.engine
    assert engine.is_complete and engine.current_stage.id == "farewell"
    assert engine.state.turn_count == 8 and engine.state.context["ticket_id"] == "T-0001"
    # tools are offered per stage; the transition tool only where an llm_decision applies
    offered = [[t.name for t in r.tools] for r in llm.requests]
    assert offered[0] == []  # greeting
    assert ["verify_user"] in offered
    assert ["search_knowledge_base", "run_diagnostic", "create_ticket", TRANSITION_TOOL_NAME] in offered
    assert ["resolve_issue", "escalate"] in offered
    assert len(llm.requests) == 19


async def test_max_turns_fallback_and_goodbye_keyword() -> None:
    tools = registry()
    llm = ScriptedLLM(["Hi there.", "Mm-hm.", "Tell me more."])
    engine = PlaybookEngine(load_playbook(PLAYBOOK, registry=tools), registry=tools)
    orch = PlaybookOrchestrator(llm, engine, tools)
    for text in ("hi", "hmm", "well"):
        await orch.execute_turn(text)
    assert engine.current_stage.id == "triage"  # 3 turns in greeting (its max_turns)
    triage_llm = ScriptedLLM(["", "Goodbye, have a nice day!"])
    orch.llm = triage_llm
    result = await orch.execute_turn("bye")
    assert result.transition is not None and result.transition.id == "triage-goodbye"
    assert engine.is_complete


async def test_repl_shows_tool_calls_and_stage_changes() -> None:
    tools = registry()
    llm = ScriptedLLM(
        [
            "Sure, let's login first.",
            calls(("verify_user", {"account_id": "1002", "pin": "1111"})),
            "",
            "You're verified, Alan.",
        ]
    )
    orch = PlaybookOrchestrator(llm, load_playbook(PLAYBOOK, registry=tools), tools)
    out = io.StringIO()
    code = await chat(orch, ["hello", "/stage", "1002 1111", "/state", "/quit", "never read"], out)
    text = out.getvalue()
    assert code == 0
    assert "[stage] greeting -> auth via greeting-to-auth" in text
    assert '[tool] verify_user({"account_id": "1002", "pin": "1111"})' in text
    assert "[tool] verify_user -> " in text and "Alan Turing" in text
    assert "[stage] auth -> triage via auth-verified" in text
    assert "assistant: You're verified, Alan." in text
    assert "[stage] auth (Authentication); tools: verify_user" in text
    assert "path greeting -> auth -> triage" in text


def test_cli_validate_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(PLAYBOOK), "--tools", str(TOOLS)]) == 0
    assert "valid (5 stages, 9 transitions)" in capsys.readouterr().out
    bad = ROOT / "tests" / "unit" / "playbooks" / "files" / "duplicate_ids.yaml"
    assert main(["validate", str(bad)]) == 1
    assert "duplicate_stage_id" in capsys.readouterr().out
    assert main(["validate", str(PLAYBOOK), "--tools", "no/such/tools.py"]) == 2
    assert main(["validate", str(PLAYBOOK), "--tools", "tests.unit.playbooks.helpers"]) == 2
    assert "build_registry" in capsys.readouterr().out


def test_cli_chat_with_injected_llm(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n"))
    code = main(
        ["chat", str(PLAYBOOK), "--tools", str(TOOLS)], llm_factory=lambda: ScriptedLLM(["Hi! Need help?"])
    )
    out = capsys.readouterr().out
    assert code == 0 and "assistant: Hi! Need help?" in out and "[stage] greeting -> triage" in out
