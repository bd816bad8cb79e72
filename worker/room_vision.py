"""One room's vision: which video the agent subscribes to and how frames reach the LLM (docs/vision.md).

:class:`RoomVision` ties :class:`worker.video.VideoFrames` to a room and its conversation:

- it subscribes to the humans' cameras and screen shares (only those of participants who allow vision) and
  keeps their freshest frames (:meth:`~RoomVision.start`);
- ``VISION=turn``: :attr:`~RoomVision.attachments` gives each turn its speakers' frames (the session's
  ``attachments=``);
- ``VISION=tool``: :meth:`~RoomVision.add_tools` adds the ``look`` tool to the room's registry (an LLM
  without tools falls back to ``turn``);
- every frame given out is announced to the room with a ``vision`` data message.

An LLM that cannot see gets frames described by the vision provider (``VISION_PROVIDER=llava``); with
neither, vision is off for the room (logged once) and no video is subscribed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from livekit import rtc

from llmrtc.metrics import MetricsAdapter
from llmrtc.providers.base import LLMProvider, VisionProvider
from llmrtc.tools import ToolRegistry
from llmrtc.types import VisionAttachment
from llmrtc.vision import LookVia, VideoSource, VisionConfig, VisionMode, effective_mode, look_tool
from worker.protocol import ServerEvent, VisionMsg
from worker.video import VideoFrames

log = logging.getLogger("llmrtc.worker.vision")

Send = Callable[[ServerEvent], None]


class RoomVision:
    """The vision of one room. Build it with :meth:`create` (None when vision is off for the room)."""

    def __init__(
        self,
        config: VisionConfig,
        *,
        llm: LLMProvider,
        vision: VisionProvider | None,
        send: Send,
        metrics: MetricsAdapter | None = None,
        room_name: str = "",
    ) -> None:
        self.mode: VisionMode = effective_mode(config.mode, llm_tools=llm.capabilities.tools)
        self._llm = llm
        self._vision = vision
        self._send = send
        self._room_name = room_name
        self.frames = VideoFrames(
            config.model_copy(update={"mode": self.mode}), metrics=metrics, on_look=self._looked
        )
        self._stops: list[Callable[[], None]] = []

    @classmethod
    def create(
        cls,
        config: VisionConfig,
        *,
        llm: LLMProvider,
        vision: VisionProvider | None,
        send: Send,
        metrics: MetricsAdapter | None = None,
        room_name: str = "",
    ) -> RoomVision | None:
        """The room's vision, or None with ``VISION=off`` or when nothing could look at a frame."""
        if config.mode == "off":
            return None
        if not llm.capabilities.vision and vision is None:
            log.warning(
                "vision is off for this room: the LLM (%s) cannot see images and no vision provider is set "
                "(VISION_PROVIDER=llava, or LLM_VISION=true for a model that can see)",
                llm.name,
                extra={"room": room_name},
            )
            return None
        made = cls(config, llm=llm, vision=vision, send=send, metrics=metrics, room_name=room_name)
        log.info(
            "vision on: mode %s, %s",
            made.mode,
            "the LLM sees the frames"
            if llm.capabilities.vision
            else "frames described by the vision provider",
            extra={"room": room_name},
        )
        return made

    def add_tools(self, registry: ToolRegistry) -> None:
        """``VISION=tool``: add the ``look`` tool to ``registry`` (kept as it is if it has one already)."""
        if self.mode != "tool":
            return
        if "look" in registry:
            log.warning("the room's tools have their own 'look' tool: the vision tool is not added")
            return
        registry.register(
            look_tool(self.frames, llm_can_see=lambda: self._llm.capabilities.vision, vision=self._vision)
        )

    async def attachments(self, identities: list[str], turn_id: str) -> list[VisionAttachment]:
        """``VISION=turn``: the frames of a turn's speakers (screen share first, then camera), within budget."""
        if self.mode != "turn":
            return []
        return await self.frames.for_turn(identities, turn_id=turn_id)

    def start(self, room: rtc.Room) -> None:
        """Subscribe to the wanted video of ``room`` and keep its freshest frames until :meth:`aclose`."""
        self._stops = [self.frames.follow(room), self.frames.subscribe(room)]

    async def aclose(self) -> None:
        """Stop following the room and release every track."""
        for stop in self._stops:
            stop()
        self._stops = []
        await self.frames.aclose()

    def _looked(self, identity: str, source: VideoSource, via: LookVia, turn_id: str | None) -> None:
        self._send(VisionMsg(turn_id=turn_id, participant_identity=identity, source=source, via=via))


__all__ = ["RoomVision"]
