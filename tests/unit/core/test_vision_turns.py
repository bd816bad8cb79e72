"""Vision through the one turn engine: look-tool images reach the LLM, history keeps notes, never bytes."""

from __future__ import annotations

import asyncio
import io

from PIL import Image

from llmrtc.events import ToolResultEvent
from llmrtc.history import is_consistent
from llmrtc.orchestrator import ConversationOrchestrator, ConversationProviders
from llmrtc.playbooks import PlaybookOrchestrator
from llmrtc.playbooks.types import Playbook
from llmrtc.testing import FakeTTS, FakeVision, ScriptedLLM, ScriptedReply
from llmrtc.tools import ToolRegistry
from llmrtc.types import Message, VisionAttachment
from llmrtc.vision import Look, LookVia, VideoSource, VisionUnavailableError, look_tool


def jpeg(color: tuple[int, int, int]) -> VisionAttachment:
    out = io.BytesIO()
    Image.new("RGB", (80, 60), color).save(out, "JPEG")
    return VisionAttachment.from_bytes(out.getvalue(), source="camera")


class Frames:
    """A FrameSource: Alice's camera only."""

    def __init__(self) -> None:
        self.image = jpeg((10, 200, 30))
        self.asked: list[tuple[str, VideoSource, str | None, LookVia]] = []

    async def look(
        self, participant: str, source: VideoSource, *, turn_id: str | None = None, via: LookVia = "tool"
    ) -> Look:
        self.asked.append((participant, source, turn_id, via))
        if participant.lower() != "alice" or source != "camera":
            raise VisionUnavailableError(f"{participant} shares no {source}")
        return Look("alice-1", "Alice", "camera", self.image, 80, 60)


LOOK = {"name": "look", "call_id": "L1", "arguments": {"source": "camera"}}


def no_bytes(history: list[Message]) -> bool:
    return all(not m.attachments for m in history)


async def test_look_images_reach_the_llm_and_history_keeps_a_note() -> None:
    frames = Frames()
    llm = ScriptedLLM([ScriptedReply(tool_calls=[LOOK]), "A green wall.", "Still green."], vision=True)
    o = ConversationOrchestrator(
        ConversationProviders(llm=llm), tools=ToolRegistry([look_tool(frames, llm_can_see=True)])
    )
    out = await o.run_text_turn("what do you see?", speaker="Alice", turn_id="t1")
    assert out.error is None and out.text == "A green wall."
    # the empty participant means the speaker: the engine gives the tool the turn's speaker
    assert frames.asked == [("Alice", "camera", "t1", "tool")]
    second = llm.requests[1].messages
    assert [m.role for m in second[-3:]] == ["assistant", "tool", "user"]
    assert second[-2].tool_call_id == "L1" and not second[-2].attachments
    assert second[-1].attachments == [frames.image]
    history = o.history
    assert is_consistent(history) and no_bytes(history)
    assert "[image seen, not kept: camera]" in history[3].content
    await o.run_text_turn("and now?", speaker="Alice")
    assert all(not m.attachments for m in llm.requests[2].messages)  # the next turn sends no image again


async def test_blind_llm_gets_the_description_as_the_tool_result() -> None:
    frames = Frames()
    vision = FakeVision("A green wall with the word HELLO.")
    llm = ScriptedLLM([ScriptedReply(tool_calls=[LOOK]), "It says hello."])
    tools = ToolRegistry([look_tool(frames, llm_can_see=False, vision=vision)])
    o = ConversationOrchestrator(ConversationProviders(llm=llm), tools=tools)
    await o.run_text_turn("what do you see?", speaker="alice")
    second = llm.requests[1].messages
    assert second[-1].role == "tool" and "HELLO" in second[-1].content
    assert all(not m.attachments for m in second) and vision.calls[0].attachments == [frames.image]


async def test_a_turn_cut_after_the_look_records_the_note_not_the_image() -> None:
    frames = Frames()
    llm = ScriptedLLM([ScriptedReply(tool_calls=[LOOK]), "A green wall and " * 50], tokens_per_s=50)
    o = ConversationOrchestrator(
        ConversationProviders(llm=llm, tts=FakeTTS()),
        tools=ToolRegistry([look_tool(frames, llm_can_see=True)]),
    )
    stream = o.run_text_turn_stream("what do you see?", speaker="Alice")
    async for event in stream:
        if isinstance(event, ToolResultEvent):
            break
    await asyncio.sleep(0.05)
    await stream.aclose()
    history = o.history
    assert [m.role for m in history[:4]] == ["user", "assistant", "tool", "user"]
    assert is_consistent(history) and no_bytes(history)
    assert history[3].content.endswith("[image seen, not kept: camera]")


async def test_turn_mode_attachments_are_sent_once_then_noted() -> None:
    image = jpeg((220, 20, 20))
    llm = ScriptedLLM(["Red.", "Yes."], vision=True)
    o = ConversationOrchestrator(ConversationProviders(llm=llm))
    await o.run_text_turn("what do you see?", [image], speaker="Bob")
    assert llm.requests[0].messages[-1].attachments == [image]
    user = o.history[0]
    assert user.attachments == [] and user.content == "what do you see?\n[image seen, not kept: camera]"
    await o.run_text_turn("sure?", speaker="Bob")
    assert all(not m.attachments for m in llm.requests[1].messages)


async def test_failed_turn_records_no_image_either() -> None:
    image = jpeg((0, 0, 250))
    llm = ScriptedLLM([ScriptedReply(error=RuntimeError("boom"))], vision=True)
    engine = PlaybookOrchestrator(llm, Playbook.model_validate(_ONE_STAGE))
    result = [e async for e in engine.stream_turn("look", attachments=[image])]
    assert result and no_bytes(engine.history) and "[image seen" in engine.history[0].content


_ONE_STAGE = {
    "id": "p",
    "name": "p",
    "initial_stage": "s",
    "stages": [{"id": "s", "name": "s", "system_prompt": "You help."}],
}


async def test_two_phase_stage_sees_the_look_image_in_its_silent_loop() -> None:
    frames = Frames()
    registry = ToolRegistry([look_tool(frames, llm_can_see=True)])
    stage = {"id": "s", "name": "s", "system_prompt": "You help.", "tools": ["look"], "two_phase": True}
    playbook = Playbook.model_validate({**_ONE_STAGE, "stages": [stage]})
    llm = ScriptedLLM([ScriptedReply(tool_calls=[LOOK]), "Enough.", "A green wall."], vision=True)
    engine = PlaybookOrchestrator(llm, playbook, registry)
    result = await engine.execute_turn("what do you see?", speaker="Alice")
    assert result.response == "A green wall."
    assert llm.requests[1].messages[-1].attachments == [frames.image]  # the silent loop's next round
    assert llm.requests[2].messages[-1].attachments == [frames.image]  # and the streamed answer
    assert is_consistent(engine.history) and no_bytes(engine.history)
