"""worker.room_vision: when a room uses vision, in which mode, the look tool, the vision message; settings."""

from __future__ import annotations

import pytest

from llmrtc.errors import ConfigError
from llmrtc.testing import FakeVision, ScriptedLLM
from llmrtc.tools import ToolRegistry, define_tool
from llmrtc.vision import VisionConfig, VisionMode
from worker.config import load_settings
from worker.protocol import ServerEvent, VisionMsg
from worker.room_vision import RoomVision


class NoTools(ScriptedLLM):
    def __init__(self, *, vision: bool) -> None:
        super().__init__([], vision=vision)
        self.capabilities = type(self.capabilities)(streaming=True, tools=False, vision=vision)


def make(
    mode: VisionMode, llm: ScriptedLLM, vision: FakeVision | None = None
) -> tuple[RoomVision | None, list[ServerEvent]]:
    sent: list[ServerEvent] = []
    made = RoomVision.create(VisionConfig(mode=mode), llm=llm, vision=vision, send=sent.append)
    return made, sent


async def test_modes_and_who_can_look() -> None:
    assert make("off", ScriptedLLM([], vision=True))[0] is None
    assert make("tool", ScriptedLLM([]))[0] is None  # blind LLM, no vision provider: nothing could look
    tool, _ = make("tool", ScriptedLLM([], vision=True))
    assert tool is not None and tool.mode == "tool" and tool.frames.config.mode == "tool"
    described, _ = make("turn", ScriptedLLM([]), FakeVision("x"))
    assert described is not None and described.mode == "turn"
    fallback, _ = make("tool", NoTools(vision=True))
    assert fallback is not None and fallback.mode == "turn"  # an LLM without tools gets frames with turns
    for made in (tool, described, fallback):
        assert made is not None
        await made.aclose()


async def test_look_tool_is_added_in_tool_mode_only() -> None:
    tool, sent = make("tool", ScriptedLLM([], vision=True))
    turn, _ = make("turn", ScriptedLLM([], vision=True))
    assert tool is not None and turn is not None
    registry, other = ToolRegistry(), ToolRegistry()
    tool.add_tools(registry)
    turn.add_tools(other)
    assert registry.names() == ["look"] and other.names() == []
    assert await tool.attachments(["alice"], "turn_1") == []  # tool mode: turns carry no frames

    @define_tool
    def look(source: str) -> str:
        """The app's own look tool."""
        return source

    own = ToolRegistry([look])
    tool.add_tools(own)
    assert own.get("look") is not None and own.get("look").handler is look.handler  # type: ignore[union-attr]
    tool._looked("alice", "screen_share", "tool", "turn_9")
    assert sent == [
        VisionMsg(turn_id="turn_9", participant_identity="alice", source="screen_share", via="tool")
    ]
    await tool.aclose()
    await turn.aclose()


def test_vision_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VISION", "VISION_MAX_SIDE", "VISION_FPS", "VISION_IMAGE_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    default = load_settings(None)
    assert default.vision == "tool" and default.vision_config() == VisionConfig()
    monkeypatch.setenv("VISION", "turn")
    monkeypatch.setenv("VISION_MAX_SIDE", "320")
    monkeypatch.setenv("VISION_FPS", "")  # blank: unset
    monkeypatch.setenv("VISION_IMAGE_FORMAT", "png")
    config = load_settings(None).vision_config()
    assert (config.mode, config.max_side, config.fps, config.image_format) == ("turn", 320, 1.0, "png")
    monkeypatch.setenv("VISION_MAX_SIDE", "10")
    with pytest.raises(ConfigError, match="VISION_MAX_SIDE"):
        load_settings(None)
    monkeypatch.setenv("VISION_MAX_SIDE", "320")
    monkeypatch.setenv("VISION", "always")
    with pytest.raises(ConfigError, match="VISION: Input should be"):
        load_settings(None)
