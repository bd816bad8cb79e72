"""llmrtc.vision: the look tool through the real ToolExecutor, tool images as messages, image-free history."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from pydantic import ValidationError

from llmrtc.errors import ProviderServerError
from llmrtc.history import is_consistent
from llmrtc.testing import FakeVision
from llmrtc.tools import ToolContext, ToolExecutor, ToolRegistry
from llmrtc.types import Message, ToolCallRequest, ToolResult, VisionAttachment
from llmrtc.vision import (
    Look,
    LookVia,
    ToolImage,
    VideoSource,
    VisionConfig,
    VisionUnavailableError,
    effective_mode,
    forget_images,
    image_note,
    look_tool,
    tool_messages,
    vision_allowed,
)


def jpeg(color: tuple[int, int, int]) -> VisionAttachment:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(out, "JPEG")
    return VisionAttachment.from_bytes(out.getvalue(), source="camera")


class Frames:
    """A FrameSource with one participant's camera (the room's is worker.video.VideoFrames)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, VideoSource, str | None, LookVia]] = []
        self.image = jpeg((200, 0, 0))

    async def look(
        self, participant: str, source: VideoSource, *, turn_id: str | None = None, via: LookVia = "tool"
    ) -> Look:
        self.calls.append((participant, source, turn_id, via))
        if participant.lower() != "alice" or source != "camera":
            raise VisionUnavailableError(f"{participant} shares no {source.replace('_', ' ')}")
        return Look("alice-1", "Alice", "camera", self.image, 64, 48)


async def run(tool_executor: ToolExecutor, *calls: ToolCallRequest, speaker: str = "") -> list[ToolResult]:
    ctx = ToolContext(session_id="s", turn_id="turn-1", metadata={"speaker": speaker})
    return await tool_executor.execute(list(calls), ctx)


def call(call_id: str = "c1", **arguments: str) -> ToolCallRequest:
    return ToolCallRequest(call_id=call_id, name="look", arguments=arguments)


async def test_seeing_llm_gets_the_frame_in_a_follow_up_message() -> None:
    frames = Frames()
    executor = ToolExecutor(ToolRegistry([look_tool(frames, llm_can_see=True)]))
    results = await run(executor, call(participant="Alice", source="camera"))
    assert results[0].success and isinstance(results[0].result, ToolImage)
    assert frames.calls == [("Alice", "camera", "turn-1", "tool")]
    messages = tool_messages(results)
    assert [m.role for m in messages] == ["tool", "user"]
    assert messages[0].tool_call_id == "c1" and messages[0].tool_name == "look"
    assert "Alice's camera" in messages[0].content and "64x48" in messages[0].content
    assert messages[0].attachments == []  # the image is not in the tool message
    assert messages[1].attachments == [frames.image] and "Alice's camera" in messages[1].content
    history = [Message.user("what do you see?"), Message.assistant("", tool_calls=[call()]), *messages]
    assert is_consistent(history)
    assert str(results[0].result) == results[0].result.text  # type: ignore[union-attr]


async def test_blind_llm_gets_a_description_and_no_image() -> None:
    frames = Frames()
    vision = FakeVision("A red wall.")
    executor = ToolExecutor(
        ToolRegistry([look_tool(frames, llm_can_see=False, vision=vision, prompt="Say it")])
    )
    results = await run(executor, call(source="camera"), speaker="alice")  # empty participant: the speaker
    assert results[0].success and results[0].result == "Alice's camera shows: A red wall."
    assert vision.calls[0].prompt == "Say it" and vision.calls[0].attachments == [frames.image]
    messages = tool_messages(results)
    assert [m.role for m in messages] == ["tool"] and messages[
        0
    ].content == "Alice's camera shows: A red wall."


async def test_failures_are_tool_errors_that_say_why() -> None:
    frames = Frames()
    can_see = {"now": False}
    failing = FakeVision(error=ProviderServerError("boom", provider="llava"))
    registry = ToolRegistry([look_tool(frames, llm_can_see=lambda: can_see["now"])])
    executor = ToolExecutor(registry)
    blind = await run(executor, call(participant="alice", source="camera"))
    assert not blind[0].success and blind[0].error == "this assistant cannot see images"
    assert frames.calls == []  # nothing was looked at (no frame charged) when nobody can see it
    can_see["now"] = True
    missing = await run(executor, call(participant="alice", source="screen"))
    assert (
        missing[0].error_code == "vision_unavailable" and missing[0].error == "alice shares no screen share"
    )
    nobody = await run(executor, call(source="camera"))
    assert nobody[0].error == "say whose camera or screen to look at"
    bad = await run(executor, call(participant="alice", source="fridge"))
    assert bad[0].error_code == "tool_invalid_arguments"
    extra = await run(executor, call(participant="alice", source="camera", zoom="2"))
    assert extra[0].error_code == "tool_invalid_arguments"
    broken = ToolExecutor(ToolRegistry([look_tool(frames, llm_can_see=False, vision=failing)]))
    failed = await run(broken, call(participant="alice", source="camera"))
    assert failed[0].error_code == "vision_failed" and "boom" not in (failed[0].error or "")
    assert [m.role for m in tool_messages(failed)] == ["tool"]


def test_tool_messages_keep_order_and_plain_results() -> None:
    img = jpeg((0, 0, 200))
    results = [
        ToolResult(call_id="a", tool_name="weather", success=True, result={"sky": "clear"}),
        ToolResult(
            call_id="b", tool_name="look", success=True, result=ToolImage("seen", [img], note="Bo's camera")
        ),
        ToolResult(
            call_id="c", tool_name="look", success=False, error="nope", error_code="vision_unavailable"
        ),
    ]
    messages = tool_messages(results)
    assert [(m.role, m.tool_call_id) for m in messages] == [
        ("tool", "a"),
        ("tool", "b"),
        ("tool", "c"),
        ("user", None),
    ]
    assert messages[0].content == '{"sky": "clear"}' and messages[1].content == "seen"
    assert '"nope"' in messages[2].content
    assert messages[3].attachments == [img] and messages[3].content == "[Images from the tools: Bo's camera]"
    assert tool_messages(results[:1]) == messages[:1]


def test_forget_images_leaves_a_note() -> None:
    plain = Message.assistant("Hello")
    shown = Message.user(
        "look",
        name="Alice",
        attachments=[jpeg((1, 2, 3)), jpeg((3, 2, 1)).model_copy(update={"source": "screen"})],
    )
    only = Message.user("", attachments=[jpeg((1, 2, 3))])
    out = forget_images([plain, shown, only])
    assert out[0] is plain
    assert out[1].attachments == [] and out[1].name == "Alice"
    assert out[1].content == "look\n[images seen, not kept: camera, screen share]"
    assert out[2].content == "[image seen, not kept: camera]"
    assert shown.attachments  # the originals are not changed
    assert image_note([VisionAttachment.from_bytes(b"x")]) == "[image seen, not kept: image]"


def test_settings_and_privacy_values() -> None:
    config = VisionConfig()
    assert (config.mode, config.max_side, config.fps) == ("tool", 768, 1.0)
    assert (config.max_frames_per_turn, config.max_bytes_per_turn, config.max_per_minute) == (2, 600_000, 20)
    with pytest.raises(ValidationError):
        VisionConfig(mode="always")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        VisionConfig(fps=0)
    assert (
        effective_mode("tool", llm_tools=False) == "turn" and effective_mode("tool", llm_tools=True) == "tool"
    )
    assert effective_mode("off", llm_tools=False) == "off"
    assert vision_allowed({}) and vision_allowed(None) and vision_allowed({"llmrtc.vision": "true"})
    assert not any(vision_allowed({"llmrtc.vision": v}) for v in ("false", " FALSE ", "0", "no", "off"))
