"""Vision in conversations: settings, the ``look`` tool, images from tool results, and image-free history.

A room's video reaches the LLM in one of two ways (:data:`VisionMode`):

- ``turn``: each turn of a speaker carries their freshest frame(s) as ``attachments`` of the user message
  (the worker asks its frame service for them; :meth:`~llmrtc.speech.SpeechPipeline.user_message` has them
  described by a :class:`~llmrtc.providers.base.VisionProvider` when the LLM cannot see);
- ``tool``: the LLM calls :func:`look_tool` (which participant, camera or screen) when it needs to see.

A tool result is text (a ``tool`` message), and not every vendor takes images in one, so a tool that returns
images returns a :class:`ToolImage`: :func:`tool_messages` turns the results of a tool round into the
``tool`` messages (their text) followed by one user message carrying the images, which every vision-capable
vendor accepts in its own format. When the LLM cannot see, the ``look`` tool asks the vision provider for a
description and returns that text instead.

Images are large and only useful while the turn that fetched them runs: :func:`forget_images` replaces the
attachments of recorded messages with a short note, so stored history stays small.

This module never imports LiveKit: the frames come from a :class:`FrameSource` (``worker.video.VideoFrames``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from llmrtc.errors import LLMRTCError, ToolError
from llmrtc.providers.base import VisionProvider
from llmrtc.tools import Tool, ToolContext, define_tool
from llmrtc.types import Message, ToolResult, VisionAttachment, VisionRequest

log = logging.getLogger("llmrtc.vision")

VisionMode = Literal["off", "turn", "tool"]
"""``off``: no video is used; ``turn``: frames ride along with each turn; ``tool``: the LLM calls ``look``."""
VideoSource = Literal["camera", "screen_share"]
LookVia = Literal["turn", "tool"]

VISION_ATTRIBUTE = "llmrtc.vision"
"""Participant attribute: ``"false"`` (also ``"0"``, ``"no"``, ``"off"``) keeps the agent from using that
participant's camera and screen share; absent or any other value allows it."""

_SOURCE_WORDS: dict[str, str] = {
    "camera": "camera",
    "screen_share": "screen share",
    "screen": "screen share",
    "upload": "image",
}
DEFAULT_LOOK_PROMPT = "Describe what you see, briefly and factually, for someone who cannot see it."


def vision_allowed(attributes: dict[str, str] | None) -> bool:
    """Whether a participant with these attributes lets the agent use their video (default: yes)."""
    value = (attributes or {}).get(VISION_ATTRIBUTE)
    return value is None or value.strip().lower() not in ("false", "0", "no", "off")


class VisionConfig(BaseModel):
    """How the agent uses video. Field ``mode`` is setting ``VISION``; every other field ``f`` is
    ``VISION_<F>`` (e.g. ``max_side`` is ``VISION_MAX_SIDE``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: VisionMode = "tool"
    max_side: int = Field(default=768, ge=64, le=4096)
    """Frames are downscaled so that their longer side is at most this many pixels."""
    fps: float = Field(default=1.0, gt=0, le=30)
    """How often a track's freshest frame is taken from the stream; frames in between are dropped."""
    max_frames_per_turn: int = Field(default=2, ge=1, le=16)
    max_bytes_per_turn: int = Field(default=600_000, ge=4_096)
    """Encoded image bytes per turn (before base64)."""
    max_per_minute: int = Field(default=20, ge=1)
    """Frames given out per room in any 60 s (turn and tool together)."""
    image_format: Literal["jpeg", "png"] = "jpeg"
    jpeg_quality: int = Field(default=80, ge=30, le=95)
    max_age_s: float = Field(default=30.0, gt=0)
    """A frame older than this (a frozen or muted track) is not used."""


def effective_mode(mode: VisionMode, *, llm_tools: bool) -> VisionMode:
    """``tool`` needs an LLM that calls tools; without tools it falls back to ``turn``."""
    return "turn" if mode == "tool" and not llm_tools else mode


class VisionUnavailableError(LLMRTCError):
    """No frame can be given: nobody by that name, no such track, vision disallowed, or over a limit.

    The message is meant for the LLM (and the log): it says why and, where it helps, what is available.
    """

    code = "vision_unavailable"


@dataclass(frozen=True, slots=True)
class Look:
    """A frame handed out for a turn or a ``look`` call: whose, which track, and the encoded image."""

    identity: str
    name: str
    source: VideoSource
    attachment: VisionAttachment
    width: int
    height: int

    @property
    def what(self) -> str:
        """``"Alice's screen share"``."""
        return f"{self.name}'s {_SOURCE_WORDS[self.source]}"


class FrameSource(Protocol):
    """Where frames come from (``worker.video.VideoFrames`` in a room)."""

    async def look(
        self, participant: str, source: VideoSource, *, turn_id: str | None = None, via: LookVia = "tool"
    ) -> Look:
        """The freshest frame of ``participant`` (name or identity) and ``source``, within the limits.

        Raises :class:`VisionUnavailableError` saying why when there is none.
        """
        ...


@dataclass(frozen=True, slots=True)
class ToolImage:
    """A tool's answer with images: ``text`` goes in the ``tool`` message, ``attachments`` to the LLM's eyes.

    Use :func:`tool_messages` to turn tool results into messages; ``str()`` is the text.
    """

    text: str
    attachments: list[VisionAttachment] = field(default_factory=list, repr=False)
    note: str = ""
    """What the images show, for the message that carries them (``"Alice's camera"``)."""

    def __str__(self) -> str:
        return self.text


def tool_messages(results: Sequence[ToolResult]) -> list[Message]:
    """The ``tool`` messages of one tool round, then one user message with the images the results carry.

    Results whose value is a :class:`ToolImage` contribute their text to their ``tool`` message and their
    images to the trailing user message (absent when no result carries images). The order of the ``tool``
    messages is the order of ``results``.
    """
    out: list[Message] = []
    images: list[VisionAttachment] = []
    notes: list[str] = []
    for res in results:
        value = res.result
        if res.success and isinstance(value, ToolImage):
            content = value.text
            images.extend(value.attachments)
            if value.attachments:
                notes.append(value.note or res.tool_name)
        else:
            content = res.content_for_llm()
        out.append(Message.tool(content, tool_call_id=res.call_id, tool_name=res.tool_name))
    if images:
        out.append(Message.user(f"[Images from the tools: {', '.join(notes)}]", attachments=images))
    return out


def image_note(attachments: Sequence[VisionAttachment]) -> str:
    """A short note standing for ``attachments`` in history: ``"[image seen: camera, screen share]"``."""
    kinds = [_SOURCE_WORDS.get(a.source or "upload", "image") for a in attachments]
    return f"[image{'s' if len(kinds) > 1 else ''} seen, not kept: {', '.join(kinds)}]"


def forget_images(messages: Sequence[Message]) -> list[Message]:
    """``messages`` with every attachment replaced by a short :func:`image_note` in the text.

    Apply it to what is recorded in history when a turn ends: the current turn's requests keep their images,
    later turns see only the note. Messages without attachments are returned as they are (not copied).
    """
    out: list[Message] = []
    for m in messages:
        if not m.attachments:
            out.append(m)
            continue
        note = image_note(m.attachments)
        content = f"{m.content}\n{note}" if m.content else note
        out.append(m.model_copy(update={"attachments": [], "content": content}))
    return out


def look_tool(
    frames: FrameSource,
    *,
    llm_can_see: bool | Callable[[], bool],
    vision: VisionProvider | None = None,
    prompt: str = DEFAULT_LOOK_PROMPT,
    name: str = "look",
    timeout_s: float = 60.0,
) -> Tool:
    """The ``look`` tool: the LLM asks to see a participant's camera or screen share.

    When ``llm_can_see`` (a bool, or a callable asked at each call), the result is a :class:`ToolImage`
    (text for the ``tool`` message, the frame for :func:`tool_messages`); otherwise ``vision`` describes the
    frame and the description is the result. Failures (nobody by that name, no such track, vision not
    allowed, over a limit, no way to see) are tool errors whose message tells the LLM why.
    ``participant`` may be left empty: the person speaking (``ctx.metadata["speaker"]``) is meant.
    """
    sees = llm_can_see if callable(llm_can_see) else (lambda: llm_can_see)
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            "participant": {
                "type": "string",
                "description": "The person's name or identity; empty means the person who is speaking.",
            },
            "source": {
                "type": "string",
                "enum": ["camera", "screen"],
                "description": "Their camera or their shared screen.",
            },
        },
        "required": ["source"],
        "additionalProperties": False,
    }

    async def look(source: str, ctx: ToolContext, participant: str = "") -> ToolImage | str:
        who = participant.strip() or str(ctx.metadata.get("speaker") or "")
        if not who:
            raise ToolError(
                "say whose camera or screen to look at", tool_name=name, code="vision_unavailable"
            )
        kind: VideoSource = "screen_share" if source in ("screen", "screen_share") else "camera"
        can_see = sees()
        if not can_see and vision is None:
            raise ToolError("this assistant cannot see images", tool_name=name, code="vision_unavailable")
        try:
            seen = await frames.look(who, kind, turn_id=ctx.turn_id, via="tool")
        except VisionUnavailableError as exc:
            raise ToolError(exc.message, tool_name=name, code=exc.code) from exc
        if can_see:
            size = f"{seen.width}x{seen.height}"
            return ToolImage(
                f"Looking at {seen.what} ({size}); the image follows in the next message.",
                [seen.attachment],
                note=seen.what,
            )
        assert vision is not None
        try:
            result = await vision.describe(VisionRequest(prompt=prompt, attachments=[seen.attachment]))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            code = exc.code if isinstance(exc, LLMRTCError) else type(exc).__name__
            log.warning("look: the vision provider failed (turn=%s): [%s] %s", ctx.turn_id, code, exc)
            raise ToolError(
                "the image could not be described right now", tool_name=name, code="vision_failed"
            ) from exc
        return f"{seen.what} shows: {result.description}"

    return define_tool(
        {
            "name": name,
            "description": (
                "See what a participant's camera or shared screen shows right now. Use it only when the "
                'answer needs seeing ("what do you see", "look at my screen").'
            ),
            "parameters": parameters,
            "timeout_s": timeout_s,
            "interruption": "cancel",
        },
        look,
    )


__all__ = [
    "DEFAULT_LOOK_PROMPT",
    "VISION_ATTRIBUTE",
    "FrameSource",
    "Look",
    "LookVia",
    "ToolImage",
    "VideoSource",
    "VisionConfig",
    "VisionMode",
    "VisionUnavailableError",
    "effective_mode",
    "forget_images",
    "image_note",
    "look_tool",
    "tool_messages",
    "vision_allowed",
]
