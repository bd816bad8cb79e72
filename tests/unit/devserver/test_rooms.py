"""Unit tests of the room model: lifecycle, listeners, timeouts, updates and data routing."""

from __future__ import annotations

import asyncio

import pytest
from livekit.protocol import agent_dispatch as agent_dispatch_pb
from livekit.protocol import models, rtc
from livekit.protocol import room as room_pb

from signalling.devserver.media import PublishedTrack
from signalling.devserver.rooms import Participant, Room, RoomError, RoomManager


class FakeSession:
    """Records what the room model sends to a participant."""

    def __init__(self) -> None:
        self.signals: list[rtc.SignalResponse] = []
        self.data: list[models.DataPacket] = []
        self.removed: list[str] = []
        self.closed: list[int] = []
        self.permission_changes = 0

    async def send_signal(self, response: rtc.SignalResponse) -> None:
        self.signals.append(response)

    async def deliver_data(self, packet: models.DataPacket) -> None:
        self.data.append(packet)

    async def track_available(self, publisher: Participant, track: PublishedTrack) -> None:
        return None

    async def track_removed(self, publisher: Participant, track_sid: str) -> None:
        self.removed.append(track_sid)

    async def close(self, reason: models.DisconnectReason) -> None:
        self.closed.append(reason)

    async def permission_changed(self) -> None:
        self.permission_changes += 1

    def updates_about(self, identity: str) -> list[models.ParticipantInfo]:
        return [
            p
            for s in self.signals
            if s.HasField("update")
            for p in s.update.participants
            if p.identity == identity
        ]


async def _add(
    manager: RoomManager, room: Room, identity: str, **kwargs: object
) -> tuple[Participant, FakeSession]:
    session = FakeSession()
    participant = Participant(identity=identity, **kwargs)  # type: ignore[arg-type]
    participant.session = session
    await manager.join(room, participant)
    await manager.announce_joined(room, participant)
    return participant, session


async def test_room_created_once_with_config_and_listeners() -> None:
    manager = RoomManager()
    created: list[tuple[str, list[str]]] = []
    joined: list[str] = []
    left: list[str] = []
    closed: list[str] = []

    @manager.on_room_created
    async def on_created(room: Room, config: room_pb.RoomConfiguration) -> None:
        created.append((room.name, [a.agent_name for a in config.agents]))

    manager.on_participant_joined(lambda r, p: _append(joined, p.identity))
    manager.on_participant_left(lambda r, p: _append(left, p.identity))
    manager.on_room_closed(lambda r: _append(closed, r.name))

    config = room_pb.RoomConfiguration(agents=[agent_dispatch_pb.RoomAgentDispatch(agent_name="helper")])
    room = await manager.get_or_create("r", config=config)
    assert await manager.get_or_create("r") is room
    assert created == [("r", ["helper"])]
    assert room.agents[0].agent_name == "helper"
    assert room.to_proto().sid == room.sid and room.sid.startswith("RM_")
    await _add(manager, room, "alice")
    assert joined == ["alice"]
    await manager.delete("r")
    assert left == ["alice"] and closed == ["r"]
    assert manager.get("r") is None and manager.list() == []
    with pytest.raises(RoomError):
        await manager.delete("r")


async def _append(target: list[str], value: str) -> None:
    target.append(value)


async def test_failing_listener_does_not_break_the_room() -> None:
    manager = RoomManager()

    async def broken(room: Room, config: room_pb.RoomConfiguration) -> None:
        raise RuntimeError("boom")

    manager.on_room_created(broken)
    room = await manager.get_or_create("r")
    assert manager.get("r") is room


async def test_departure_timeout_closes_room_after_last_human_leaves() -> None:
    manager = RoomManager(default_departure_timeout=1, default_empty_timeout=60)
    room = await manager.get_or_create("r")
    alice, _ = await _add(manager, room, "alice")
    _agent, agent_session = await _add(manager, room, "agent", kind=models.ParticipantInfo.Kind.AGENT)
    await manager.leave(room, alice)
    assert manager.get("r") is room  # not yet
    await asyncio.sleep(1.5)
    assert manager.get("r") is None
    assert agent_session.closed == [models.DisconnectReason.ROOM_CLOSED]


async def test_empty_timeout_closes_room_nobody_joined() -> None:
    manager = RoomManager(default_empty_timeout=1)
    await manager.get_or_create("r")
    await asyncio.sleep(1.5)
    assert manager.get("r") is None


async def test_join_cancels_empty_timeout() -> None:
    manager = RoomManager(default_empty_timeout=1)
    room = await manager.get_or_create("r")
    await _add(manager, room, "alice")
    await asyncio.sleep(1.5)
    assert manager.get("r") is room


async def test_updates_broadcast_and_hidden_participants() -> None:
    manager = RoomManager()
    room = await manager.get_or_create("r")
    _, alice_s = await _add(manager, room, "alice")
    hidden = models.ParticipantPermission(hidden=True)
    _, ghost_s = await _add(manager, room, "ghost", permission=hidden)
    _, bob_s = await _add(manager, room, "bob")
    assert alice_s.updates_about("bob") and not alice_s.updates_about("ghost")
    assert [p.identity for p in room.visible()] == ["alice", "bob"]

    updated = await manager.update_participant(
        "r", "bob", metadata="m", attributes={"a": "1", "b": "2"}, name="Bob"
    )
    version = updated.version
    await manager.update_participant("r", "bob", attributes={"a": ""})
    info = alice_s.updates_about("bob")[-1]
    assert (info.metadata, info.name, dict(info.attributes)) == ("m", "Bob", {"b": "2"})
    assert info.version > version
    assert bob_s.updates_about("bob")  # the participant hears about its own update
    await manager.update_participant("r", "ghost", metadata="secret")
    assert not alice_s.updates_about("ghost") and ghost_s.updates_about("ghost")
    with pytest.raises(RoomError):
        await manager.update_participant("r", "nobody", metadata="x")
    assert bob_s.permission_changes == 0
    await manager.update_participant("r", "bob", permission=models.ParticipantPermission(can_subscribe=True))
    assert bob_s.permission_changes == 1
    assert alice_s.updates_about("bob")[-1].permission.can_publish is False


async def test_data_routing_honours_destinations() -> None:
    manager = RoomManager()
    room = await manager.get_or_create("r")
    alice, alice_s = await _add(manager, room, "alice")
    _, bob_s = await _add(manager, room, "bob")
    _, carol_s = await _add(manager, room, "carol")
    packet = models.DataPacket(destination_identities=["bob"])
    assert await manager.relay_data(room, alice, packet) == 1
    assert len(bob_s.data) == 1 and not carol_s.data and not alice_s.data
    assert await manager.send_data("r", b"all", topic="t") == 3
    assert carol_s.data[-1].user.payload == b"all" and carol_s.data[-1].user.topic == "t"


async def test_remove_duplicate_and_full_room() -> None:
    manager = RoomManager()
    room = await manager.get_or_create("r", max_participants=2)
    _, first = await _add(manager, room, "alice")
    _, second = await _add(manager, room, "alice")
    assert (
        first.closed == [models.DisconnectReason.DUPLICATE_IDENTITY]
        and room.participants["alice"].session is second
    )
    _, bob_s = await _add(manager, room, "bob")
    with pytest.raises(RoomError):
        await _add(manager, room, "carol")
    await manager.remove_participant("r", "bob")
    assert bob_s.closed == [models.DisconnectReason.PARTICIPANT_REMOVED]
    left = second.updates_about("bob")[-1]
    assert left.state == models.ParticipantInfo.State.DISCONNECTED


async def test_leaving_publisher_removes_tracks_for_others() -> None:
    manager = RoomManager()
    room = await manager.get_or_create("r")
    alice, _ = await _add(manager, room, "alice")
    _, bob_s = await _add(manager, room, "bob")
    track = PublishedTrack(
        sid="TR_x", cid="c", publisher_sid=alice.sid, publisher_identity="alice", type=models.TrackType.AUDIO
    )
    alice.tracks[track.sid] = track
    assert alice.to_proto().tracks[0].sid == "TR_x"
    await manager.leave(room, alice)
    assert bob_s.removed == ["TR_x"] and track.closed


async def test_room_name_required() -> None:
    with pytest.raises(RoomError):
        await RoomManager().get_or_create("")
