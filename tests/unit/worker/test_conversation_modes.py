"""Modes chosen by config: the plain assistant (with TOOLS) or a playbook file, behind the same session."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from llmrtc.errors import ConfigError
from llmrtc.orchestrator import ConversationOrchestrator
from llmrtc.playbooks.voice import VoicePlaybookOrchestrator
from llmrtc.testing import FakeSTT, FakeTTS, ScriptedLLM
from tests.unit.worker.conftest import FakeListener, FakeRoom
from worker.config import WorkerSettings
from worker.conversation import Providers, build_conversation
from worker.listeners import SpeechCallbacks
from worker.room import ParticipantInfo
from worker.session import RoomSession

ROOT = Path(__file__).resolve().parents[3]
PLAYBOOK = ROOT / "examples" / "support_playbook.yaml"
TOOLS = ROOT / "examples" / "support_tools.py"


def _providers(replies: list[Any]) -> Providers:
    return Providers(llm=ScriptedLLM(replies), stt=FakeSTT([]), tts=FakeTTS())


def test_plain_assistant_gets_the_system_prompt_and_tools() -> None:
    settings = WorkerSettings(_env_file=None, SYSTEM_PROMPT="Be brief.", TOOLS=str(TOOLS))
    conv = build_conversation(settings, _providers([]), session_id="room-a")
    assert isinstance(conv.orchestrator, ConversationOrchestrator)
    assert conv.orchestrator.config.system_prompt == "Be brief."
    assert "verify_user" in conv.orchestrator.tools.names()


def test_bad_playbook_or_tools_are_config_errors(tmp_path: Path) -> None:
    bad = ROOT / "tests" / "unit" / "playbooks" / "files" / "unknown_tools.yaml"
    with pytest.raises(ConfigError, match="PLAYBOOK"):
        build_conversation(WorkerSettings(_env_file=None, PLAYBOOK=str(bad)), _providers([]))
    with pytest.raises(ConfigError):
        build_conversation(WorkerSettings(_env_file=None, TOOLS=str(tmp_path / "none.py")), _providers([]))


async def test_playbook_mode_answers_through_the_session() -> None:
    settings = WorkerSettings(_env_file=None, PLAYBOOK=str(PLAYBOOK), TOOLS=str(TOOLS))
    providers = _providers(["Hi, I am Sam. How can I help you today?"])
    conv = build_conversation(settings, providers, session_id="room-b")
    assert isinstance(conv.orchestrator, VoicePlaybookOrchestrator)
    room = FakeRoom()

    def factory(identity: str, callbacks: SpeechCallbacks) -> FakeListener:
        return FakeListener(identity, callbacks)

    session = RoomSession(settings, room, conv, factory, room_name="room-b")
    session.start()
    try:
        session.on_participant_joined(ParticipantInfo("alice", "Alice"))
        session.on_data("alice", json.dumps({"type": "text", "text": "Hello there"}).encode())
        await room.wait_for(lambda e: e.type == "tts_complete")
        assert room.events("llm")[0].text == "Hi, I am Sam. How can I help you today?"
        request = providers.llm.requests[0]  # type: ignore[attr-defined]
        assert "Acme Internet" in request.messages[0].content, "the playbook's prompt is used"
        assert request.messages[-1].name == "Alice"
    finally:
        await session.aclose()
    await asyncio.sleep(0)
