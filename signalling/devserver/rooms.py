"""Rooms and participants of the development server, and the manager that owns them.

The room model knows nothing about WebSockets or WebRTC: a connected participant is attached to a
:class:`ParticipantSession` (implemented by :mod:`signalling.devserver.signal`) through which the manager sends
signal messages, data packets and track notifications. Other parts of the server (the Twirp API, the agent
dispatcher) use :class:`RoomManager` and its lifecycle listeners.

Listener signatures (all async)::

    on_room_created(cb(room: Room, config: RoomConfiguration))   # config from the join token or the API
    on_room_closed(cb(room: Room))
    on_participant_joined(cb(room: Room, participant: Participant))
    on_participant_left(cb(room: Room, participant: Participant))
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import string
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from livekit.protocol import agent_dispatch as agent_dispatch_pb
from livekit.protocol import models, rtc
from livekit.protocol import room as room_pb

from llmrtc.errors import ProtocolError

if TYPE_CHECKING:
    from signalling.devserver.media import PublishedTrack

logger = logging.getLogger(__name__)

_ALPHABET = string.ascii_letters + string.digits

DEFAULT_EMPTY_TIMEOUT = 300
DEFAULT_DEPARTURE_TIMEOUT = 20


def new_sid(prefix: str) -> str:
    """A LiveKit-style id such as ``RM_x8Jd2kLq01Ab``."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(12))


class RoomError(ProtocolError):
    """A room operation that cannot be done (unknown room or participant, room closed)."""

    def __init__(self, message: str, *, code: str = "not_found") -> None:
        super().__init__(message, code=code)


class ParticipantSession(Protocol):
    """What the room model needs from a connected participant (implemented by the signal handler)."""

    async def send_signal(self, response: rtc.SignalResponse) -> None:
        """Send one signal message on the participant's WebSocket."""

    async def deliver_data(self, packet: models.DataPacket) -> None:
        """Send a data packet to the participant on the channel matching its kind."""

    async def track_available(self, publisher: Participant, track: PublishedTrack) -> None:
        """A track of another participant can now be subscribed (auto-subscribe decides)."""

    async def track_removed(self, publisher: Participant, track_sid: str) -> None:
        """A track of another participant is gone: drop its subscription."""

    async def close(self, reason: models.DisconnectReason) -> None:
        """Disconnect the participant (server side): send a leave and close the connection."""

    async def permission_changed(self) -> None:
        """The participant's permission changed: apply it to its publications and subscriptions."""


ParticipantCallback = Callable[["Room", "Participant"], Awaitable[None]]
RoomCreatedCallback = Callable[["Room", room_pb.RoomConfiguration], Awaitable[None]]
RoomClosedCallback = Callable[["Room"], Awaitable[None]]


@dataclass
class Participant:
    """One participant of a room; ``session`` is set while it is connected."""

    identity: str
    name: str = ""
    metadata: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    permission: models.ParticipantPermission = field(default_factory=models.ParticipantPermission)
    kind: models.ParticipantInfo.Kind = models.ParticipantInfo.Kind.STANDARD
    sid: str = field(default_factory=lambda: new_sid("PA_"))
    joined_at_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    state: models.ParticipantInfo.State = models.ParticipantInfo.State.JOINING
    version: int = 0
    client_protocol: int = 0
    tracks: dict[str, PublishedTrack] = field(default_factory=dict)
    session: ParticipantSession | None = None

    @property
    def hidden(self) -> bool:
        """Hidden participants are not announced to others."""
        return bool(self.permission.hidden)

    @property
    def is_agent(self) -> bool:
        """Whether this participant is an agent (kind AGENT or the agent grant)."""
        return self.kind == models.ParticipantInfo.Kind.AGENT or bool(self.permission.agent)

    def bump(self) -> None:
        """Increase the version: clients ignore updates whose version is not newer."""
        self.version += 1

    def to_proto(self) -> models.ParticipantInfo:
        """The participant as a livekit ``ParticipantInfo``."""
        info = models.ParticipantInfo(
            sid=self.sid,
            identity=self.identity,
            name=self.name,
            state=self.state,
            metadata=self.metadata,
            joined_at=self.joined_at_ms // 1000,
            joined_at_ms=self.joined_at_ms,
            version=self.version,
            is_publisher=bool(self.tracks),
            kind=self.kind,
            attributes=self.attributes,
            client_protocol=self.client_protocol,
        )
        info.permission.CopyFrom(self.permission)
        for track in self.tracks.values():
            info.tracks.append(track.to_proto())
        return info


@dataclass
class Room:
    """A room: its settings, participants and the configuration it was created with."""

    name: str
    empty_timeout: int = DEFAULT_EMPTY_TIMEOUT
    departure_timeout: int = DEFAULT_DEPARTURE_TIMEOUT
    metadata: str = ""
    max_participants: int = 0
    config: room_pb.RoomConfiguration = field(default_factory=room_pb.RoomConfiguration)
    sid: str = field(default_factory=lambda: new_sid("RM_"))
    creation_time_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    participants: dict[str, Participant] = field(default_factory=dict)
    closed: bool = False
    version: int = 0
    _timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    _had_participants: bool = field(default=False, repr=False)

    @property
    def agents(self) -> list[agent_dispatch_pb.RoomAgentDispatch]:
        """The agents the room's configuration asks to dispatch."""
        return list(self.config.agents)

    def visible(self) -> list[Participant]:
        """Participants other clients can see (not hidden)."""
        return [p for p in self.participants.values() if not p.hidden]

    def to_proto(self) -> models.Room:
        """The room as a livekit ``Room``."""
        room = models.Room(
            sid=self.sid,
            name=self.name,
            empty_timeout=self.empty_timeout,
            departure_timeout=self.departure_timeout,
            max_participants=self.max_participants,
            creation_time=self.creation_time_ms // 1000,
            creation_time_ms=self.creation_time_ms,
            metadata=self.metadata,
            num_participants=len(self.visible()),
            num_publishers=sum(1 for p in self.visible() if p.tracks),
        )
        for mime in ("audio/opus", "video/VP8", "video/H264"):
            room.enabled_codecs.append(models.Codec(mime=mime))
        return room


class RoomManager:
    """Creates, finds and closes rooms; adds and removes participants; broadcasts their updates."""

    def __init__(
        self,
        *,
        default_empty_timeout: int = DEFAULT_EMPTY_TIMEOUT,
        default_departure_timeout: int = DEFAULT_DEPARTURE_TIMEOUT,
    ) -> None:
        self.default_empty_timeout = default_empty_timeout
        self.default_departure_timeout = default_departure_timeout
        self._rooms: dict[str, Room] = {}
        self._lock = asyncio.Lock()
        self._room_created: list[RoomCreatedCallback] = []
        self._room_closed: list[RoomClosedCallback] = []
        self._joined: list[ParticipantCallback] = []
        self._left: list[ParticipantCallback] = []

    # listeners ---------------------------------------------------------------------------------------------
    def on_room_created(self, cb: RoomCreatedCallback) -> RoomCreatedCallback:
        """Register ``cb(room, config)``, awaited after a room is created."""
        self._room_created.append(cb)
        return cb

    def on_room_closed(self, cb: RoomClosedCallback) -> RoomClosedCallback:
        """Register ``cb(room)``, awaited after a room is closed."""
        self._room_closed.append(cb)
        return cb

    def on_participant_joined(self, cb: ParticipantCallback) -> ParticipantCallback:
        """Register ``cb(room, participant)``, awaited after a participant joined."""
        self._joined.append(cb)
        return cb

    def on_participant_left(self, cb: ParticipantCallback) -> ParticipantCallback:
        """Register ``cb(room, participant)``, awaited after a participant left."""
        self._left.append(cb)
        return cb

    async def _fire(self, callbacks: Iterable[Callable[..., Awaitable[None]]], *args: object) -> None:
        for cb in list(callbacks):
            try:
                await cb(*args)
            except Exception:
                logger.exception("room listener %r failed", getattr(cb, "__qualname__", cb))

    # rooms -------------------------------------------------------------------------------------------------
    async def get_or_create(
        self,
        name: str,
        *,
        empty_timeout: int | None = None,
        departure_timeout: int | None = None,
        metadata: str | None = None,
        agents: Iterable[agent_dispatch_pb.RoomAgentDispatch] | None = None,
        max_participants: int | None = None,
        config: room_pb.RoomConfiguration | None = None,
    ) -> Room:
        """Return the open room ``name``, creating it (and firing ``on_room_created``) if needed."""
        if not name:
            raise RoomError("room name is required", code="invalid_argument")
        async with self._lock:
            room = self._rooms.get(name)
            if room is not None and not room.closed:
                return room
            cfg = room_pb.RoomConfiguration()
            if config is not None:
                cfg.CopyFrom(config)
            if agents is not None:
                del cfg.agents[:]
                cfg.agents.extend(agents)
            room = Room(
                name=name,
                empty_timeout=empty_timeout or cfg.empty_timeout or self.default_empty_timeout,
                departure_timeout=departure_timeout
                or cfg.departure_timeout
                or self.default_departure_timeout,
                metadata=metadata if metadata is not None else cfg.metadata,
                max_participants=max_participants or cfg.max_participants,
                config=cfg,
            )
            self._rooms[name] = room
            self._arm(room, room.empty_timeout)
        logger.info("room created name=%s sid=%s agents=%d", room.name, room.sid, len(room.config.agents))
        await self._fire(self._room_created, room, room.config)
        return room

    def get(self, name: str) -> Room | None:
        """The open room ``name``, or None."""
        room = self._rooms.get(name)
        return room if room is not None and not room.closed else None

    def list(self, names: Iterable[str] | None = None) -> list[Room]:
        """Open rooms (only those named, when ``names`` is given)."""
        wanted = set(names) if names else None
        return [r for r in self._rooms.values() if not r.closed and (wanted is None or r.name in wanted)]

    async def delete(self, name: str) -> None:
        """Close the room: every participant is disconnected with ROOM_DELETED."""
        room = self.get(name)
        if room is None:
            raise RoomError(f"room {name!r} does not exist")
        await self._close(room, models.DisconnectReason.ROOM_DELETED)

    async def close_all(self) -> None:
        """Close every room (server shutdown)."""
        for room in self.list():
            await self._close(room, models.DisconnectReason.SERVER_SHUTDOWN)

    async def update_room_metadata(self, name: str, metadata: str) -> Room:
        """Set the room's metadata and tell everyone in it."""
        room = self._require_room(name)
        room.metadata = metadata
        room.version += 1
        await self.broadcast(room, rtc.SignalResponse(room_update=rtc.RoomUpdate(room=room.to_proto())))
        return room

    def _arm(self, room: Room, seconds: int) -> None:
        if room._timer is not None:
            room._timer.cancel()
        loop = asyncio.get_running_loop()
        room._timer = loop.call_later(seconds, lambda: loop.create_task(self._expire(room)))

    async def _expire(self, room: Room) -> None:
        if room.closed or any(not p.is_agent for p in room.participants.values()):
            return
        logger.info("room timeout name=%s sid=%s", room.name, room.sid)
        await self._close(room, models.DisconnectReason.ROOM_CLOSED)

    async def _close(self, room: Room, reason: models.DisconnectReason) -> None:
        if room.closed:
            return
        room.closed = True
        if room._timer is not None:
            room._timer.cancel()
        if self._rooms.get(room.name) is room:
            del self._rooms[room.name]
        for participant in list(room.participants.values()):
            await self._drop(room, participant, reason, notify_others=False)
        logger.info("room closed name=%s sid=%s reason=%s", room.name, room.sid, reason)
        await self._fire(self._room_closed, room)

    def _require_room(self, name: str) -> Room:
        room = self.get(name)
        if room is None:
            raise RoomError(f"room {name!r} does not exist")
        return room

    def _require_participant(self, room_name: str, identity: str) -> tuple[Room, Participant]:
        room = self._require_room(room_name)
        participant = room.participants.get(identity)
        if participant is None:
            raise RoomError(f"participant {identity!r} is not in room {room_name!r}")
        return room, participant

    # participants ------------------------------------------------------------------------------------------
    async def join(self, room: Room, participant: Participant) -> Participant | None:
        """Add ``participant`` (already attached to its session) to ``room``.

        Returns the participant it replaced (same identity), which has been disconnected.
        """
        if room.closed:
            raise RoomError(f"room {room.name!r} is closed", code="unavailable")
        if (
            room.max_participants
            and participant.identity not in room.participants
            and len(room.participants) >= room.max_participants
        ):
            raise RoomError(f"room {room.name!r} is full", code="resource_exhausted")
        replaced = room.participants.get(participant.identity)
        if replaced is not None:
            await self._drop(room, replaced, models.DisconnectReason.DUPLICATE_IDENTITY, notify_others=True)
        room.participants[participant.identity] = participant
        room._had_participants = True
        if room._timer is not None and not participant.is_agent:
            room._timer.cancel()
            room._timer = None
        participant.state = models.ParticipantInfo.State.JOINED
        participant.bump()
        logger.info(
            "participant joined room=%s identity=%s sid=%s kind=%s",
            room.name,
            participant.identity,
            participant.sid,
            participant.kind,
        )
        return replaced

    async def announce_joined(self, room: Room, participant: Participant) -> None:
        """Tell the others about a new participant and fire ``on_participant_joined``."""
        await self.broadcast_participant(room, participant)
        await self._fire(self._joined, room, participant)

    async def leave(self, room: Room, participant: Participant) -> None:
        """The participant left (its connection ended): tell the others and start the departure timer."""
        if room.participants.get(participant.identity) is not participant:
            return
        await self._drop(room, participant, models.DisconnectReason.CLIENT_INITIATED, notify_others=True)

    async def _drop(
        self,
        room: Room,
        participant: Participant,
        reason: models.DisconnectReason,
        *,
        notify_others: bool,
    ) -> None:
        if room.participants.get(participant.identity) is participant:
            del room.participants[participant.identity]
        participant.state = models.ParticipantInfo.State.DISCONNECTED
        participant.bump()
        session, participant.session = participant.session, None
        track_sids = list(participant.tracks)
        for track in list(participant.tracks.values()):
            track.close()
        participant.tracks.clear()
        if session is not None and reason != models.DisconnectReason.CLIENT_INITIATED:
            try:
                await session.close(reason)
            except Exception:
                logger.exception("closing session of %s failed", participant.identity)
        if notify_others:
            for other in list(room.participants.values()):
                if other.session is None:
                    continue
                for sid in track_sids:
                    await other.session.track_removed(participant, sid)
            if not participant.hidden:
                info = participant.to_proto()
                info.disconnect_reason = reason
                await self.broadcast(
                    room, rtc.SignalResponse(update=rtc.ParticipantUpdate(participants=[info]))
                )
        logger.info(
            "participant left room=%s identity=%s sid=%s reason=%s",
            room.name,
            participant.identity,
            participant.sid,
            reason,
        )
        await self._fire(self._left, room, participant)
        if not room.closed and not any(not p.is_agent for p in room.participants.values()):
            self._arm(room, room.departure_timeout)

    async def remove_participant(self, room: str, identity: str) -> None:
        """Disconnect a participant (PARTICIPANT_REMOVED)."""
        r, participant = self._require_participant(room, identity)
        await self._drop(r, participant, models.DisconnectReason.PARTICIPANT_REMOVED, notify_others=True)

    def get_participant(self, room: str, identity: str) -> Participant:
        """The participant ``identity`` of ``room`` (raises :class:`RoomError`)."""
        return self._require_participant(room, identity)[1]

    async def update_participant(
        self,
        room: str,
        identity: str,
        metadata: str | None = None,
        attributes: Mapping[str, str] | None = None,
        permission: models.ParticipantPermission | None = None,
        name: str | None = None,
    ) -> Participant:
        """Change metadata, attributes (an empty value deletes a key), permission or name, and broadcast."""
        r, participant = self._require_participant(room, identity)
        if metadata is not None:
            participant.metadata = metadata
        if name is not None and name != "":
            participant.name = name
        if attributes:
            for key, value in attributes.items():
                if value == "":
                    participant.attributes.pop(key, None)
                else:
                    participant.attributes[key] = value
        if permission is not None:
            participant.permission.CopyFrom(permission)
        participant.bump()
        await self.broadcast_participant(r, participant, include_self=True)
        if permission is not None and participant.session is not None:
            await participant.session.permission_changed()
        return participant

    async def broadcast_participant(
        self, room: Room, participant: Participant, *, include_self: bool = False
    ) -> None:
        """Send a ``ParticipantUpdate`` about ``participant`` to the room (hidden ones only to themselves)."""
        update = rtc.SignalResponse(update=rtc.ParticipantUpdate(participants=[participant.to_proto()]))
        if participant.hidden:
            if include_self and participant.session is not None:
                await participant.session.send_signal(update)
            return
        exclude = None if include_self else participant.identity
        await self.broadcast(room, update, exclude=exclude)

    async def broadcast(
        self, room: Room, response: rtc.SignalResponse, *, exclude: str | None = None
    ) -> None:
        """Send a signal message to every connected participant of ``room`` but ``exclude``."""
        for other in list(room.participants.values()):
            if other.identity == exclude or other.session is None:
                continue
            try:
                await other.session.send_signal(response)
            except Exception:
                logger.warning("signal to %s failed", other.identity, exc_info=True)

    # data --------------------------------------------------------------------------------------------------
    async def send_data(
        self,
        room: str,
        data: bytes,
        kind: models.DataPacket.Kind = models.DataPacket.Kind.RELIABLE,
        destination_identities: Iterable[str] = (),
        topic: str | None = None,
    ) -> int:
        """Send a server-originated user packet (no sender identity); returns how many received it."""
        r = self._require_room(room)
        dests = list(destination_identities)
        packet = models.DataPacket(kind=kind, destination_identities=dests)
        packet.user.payload = data
        packet.user.destination_identities.extend(dests)
        if topic is not None:
            packet.user.topic = topic
        return await self.relay_data(r, None, packet)

    async def relay_data(self, room: Room, sender: Participant | None, packet: models.DataPacket) -> int:
        """Deliver ``packet`` from ``sender`` (None: the server) to its destinations; returns the count."""
        dests = set(packet.destination_identities)
        if packet.HasField("user"):
            dests.update(packet.user.destination_identities)
        delivered = 0
        for other in list(room.participants.values()):
            if other.session is None or (sender is not None and other.identity == sender.identity):
                continue
            if dests and other.identity not in dests:
                continue
            try:
                await other.session.deliver_data(packet)
                delivered += 1
            except Exception:
                logger.warning("data to %s failed", other.identity, exc_info=True)
        return delivered
