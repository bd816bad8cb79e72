"""livekit-api against the dev server's Twirp API: every RoomService / AgentDispatchService call, and auth."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from livekit import api, rtc
from livekit.protocol import agent as agent_pb
from livekit.protocol import models

from tests.integration.devserver_agents.conftest import ServerProc, join, wait_for

pytestmark = pytest.mark.integration


async def test_create_list_and_delete_rooms(devserver: ServerProc) -> None:
    async with devserver.api() as lk:
        made = await lk.room.create_room(
            api.CreateRoomRequest(name="twirp-a", metadata="meta-a", empty_timeout=60)
        )
        assert made.name == "twirp-a" and made.sid.startswith("RM_")
        assert made.metadata == "meta-a" and made.empty_timeout == 60
        again = await lk.room.create_room(api.CreateRoomRequest(name="twirp-a"))
        assert again.sid == made.sid, "CreateRoom of an open room returns that room"
        await lk.room.create_room(api.CreateRoomRequest(name="twirp-b"))

        names = {r.name for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms}
        assert {"twirp-a", "twirp-b"} <= names
        only = await lk.room.list_rooms(api.ListRoomsRequest(names=["twirp-b"]))
        assert [r.name for r in only.rooms] == ["twirp-b"]

        await lk.room.delete_room(api.DeleteRoomRequest(room="twirp-a"))
        names = {r.name for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms}
        assert "twirp-a" not in names and "twirp-b" in names
        with pytest.raises(api.TwirpError) as err:
            await lk.room.delete_room(api.DeleteRoomRequest(room="twirp-a"))
        assert err.value.code == "not_found" and err.value.status == 404


async def test_participant_calls(devserver: ServerProc) -> None:
    alice = await join(devserver, "people", "alice")
    bob = await join(devserver, "people", "bob")
    received: dict[str, list[rtc.DataPacket]] = {"alice": [], "bob": []}
    alice.on("data_received", lambda p: received["alice"].append(p))
    bob.on("data_received", lambda p: received["bob"].append(p))
    bob_gone = asyncio.Event()
    bob.on("disconnected", lambda *_: bob_gone.set())
    try:
        async with devserver.api() as lk:
            listed = await lk.room.list_participants(api.ListParticipantsRequest(room="people"))
            assert sorted(p.identity for p in listed.participants) == ["alice", "bob"]

            info = await lk.room.get_participant(api.RoomParticipantIdentity(room="people", identity="alice"))
            assert info.identity == "alice" and info.sid == alice.local_participant.sid

            updated = await lk.room.update_participant(
                api.UpdateParticipantRequest(
                    room="people", identity="alice", metadata="vip", attributes={"role": "host"}, name="Alice"
                )
            )
            assert (
                updated.metadata == "vip" and updated.attributes["role"] == "host" and updated.name == "Alice"
            )
            seen = await wait_for(
                lambda: bob.remote_participants.get("alice"), 5, "alice as seen by bob"
            )  # the update reaches the others
            await wait_for(lambda: seen.attributes.get("role") == "host", 5, "alice's new attribute at bob")
            assert seen.metadata == "vip"

            await lk.room.send_data(
                api.SendDataRequest(room="people", data=b"to-all", kind=api.DataPacket.RELIABLE, topic="news")
            )
            await lk.room.send_data(
                api.SendDataRequest(
                    room="people",
                    data=b"to-bob",
                    kind=api.DataPacket.RELIABLE,
                    destination_identities=["bob"],
                )
            )
            await wait_for(lambda: len(received["bob"]) == 2, 5, "bob's two packets")
            await wait_for(lambda: len(received["alice"]) == 1, 5, "alice's packet")
            assert received["alice"][0].data == b"to-all" and received["alice"][0].topic == "news"
            assert sorted(p.data for p in received["bob"]) == [b"to-all", b"to-bob"]

            await lk.room.remove_participant(api.RoomParticipantIdentity(room="people", identity="bob"))
            await asyncio.wait_for(bob_gone.wait(), 10)
            listed = await lk.room.list_participants(api.ListParticipantsRequest(room="people"))
            assert [p.identity for p in listed.participants] == ["alice"]

            with pytest.raises(api.TwirpError) as err:
                await lk.room.get_participant(api.RoomParticipantIdentity(room="people", identity="nobody"))
            assert err.value.code == "not_found"
    finally:
        await alice.disconnect()
        await bob.disconnect()


async def test_agent_dispatch_calls(devserver: ServerProc) -> None:
    async with devserver.api() as lk:
        made = await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name="helper", room="dispatch-room", metadata='{"k": 1}')
        )
        assert made.id.startswith("AD_") and made.agent_name == "helper" and made.room == "dispatch-room"
        rooms = await lk.room.list_rooms(api.ListRoomsRequest(names=["dispatch-room"]))
        assert [r.name for r in rooms.rooms] == ["dispatch-room"], "CreateDispatch creates the room"

        listed = await lk.agent_dispatch.list_dispatch("dispatch-room")
        assert [(d.id, d.agent_name, d.metadata) for d in listed] == [(made.id, "helper", '{"k": 1}')]
        job = listed[0].state.jobs[0]
        assert job.state.status == api.JobStatus.JS_PENDING, "no worker is registered: the job waits"
        assert (await lk.agent_dispatch.get_dispatch(made.id, "dispatch-room")) is not None

        deleted = await lk.agent_dispatch.delete_dispatch(made.id, "dispatch-room")
        assert deleted.id == made.id and deleted.state.deleted_at > 0
        assert await lk.agent_dispatch.list_dispatch("dispatch-room") == []
        with pytest.raises(api.TwirpError) as err:
            await lk.agent_dispatch.delete_dispatch(made.id, "dispatch-room")
        assert err.value.code == "not_found"

        await lk.room.create_room(api.CreateRoomRequest(name="auto-dispatch-room"))
        (auto,) = await lk.agent_dispatch.list_dispatch("auto-dispatch-room")
        assert auto.agent_name == "", "a room without configured agents gets the unnamed agent"


async def _post(
    server: ServerProc, method: str, token: str | None, body: bytes = b"", json: bool = False
) -> tuple[int, dict[str, str]]:
    headers = {"Content-Type": "application/json" if json else "application/protobuf"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    url = f"{server.http_url}/twirp/livekit.RoomService/{method}"
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_refuses_unauthenticated_and_unauthorized_calls(devserver: ServerProc) -> None:
    status, err = await _post(devserver, "ListRooms", None)
    assert (status, err["code"]) == (401, "unauthenticated") and err["msg"]

    async with api.LiveKitAPI(devserver.http_url, devserver.api_key, "not-the-secret") as wrong:
        with pytest.raises(api.TwirpError) as exc:
            await wrong.room.list_rooms(api.ListRoomsRequest())
    assert exc.value.code == "unauthenticated" and exc.value.status == 401

    async with api.LiveKitAPI(devserver.http_url, "not-the-key", devserver.api_secret) as wrong_key:
        with pytest.raises(api.TwirpError) as exc:
            await wrong_key.room.create_room(api.CreateRoomRequest(name="x"))
    assert exc.value.code == "unauthenticated"

    join_only = (
        api.AccessToken(devserver.api_key, devserver.api_secret)
        .with_identity("eve")
        .with_grants(api.VideoGrants(room_join=True, room="people"))
        .to_jwt()
    )
    status, err = await _post(devserver, "ListRooms", join_only)
    assert (status, err["code"]) == (403, "permission_denied")
    status, err = await _post(
        devserver, "CreateRoom", join_only, api.CreateRoomRequest(name="y").SerializeToString()
    )
    assert (status, err["code"]) == (403, "permission_denied")

    other_room_admin = (
        api.AccessToken(devserver.api_key, devserver.api_secret)
        .with_grants(api.VideoGrants(room_admin=True, room="elsewhere"))
        .to_jwt()
    )
    body = api.ListParticipantsRequest(room="people").SerializeToString()
    status, err = await _post(devserver, "ListParticipants", other_room_admin, body)
    assert (status, err["code"]) == (403, "permission_denied")


async def test_json_body_bad_route_and_malformed(devserver: ServerProc) -> None:
    lister = (
        api.AccessToken(devserver.api_key, devserver.api_secret)
        .with_grants(api.VideoGrants(room_list=True))
        .to_jwt()
    )
    creator = (
        api.AccessToken(devserver.api_key, devserver.api_secret)
        .with_grants(api.VideoGrants(room_create=True))
        .to_jwt()
    )
    status, out = await _post(
        devserver, "CreateRoom", creator, b'{"name": "json-room", "emptyTimeout": 42}', json=True
    )
    assert status == 200 and out["name"] == "json-room" and out["empty_timeout"] == 42
    status, out = await _post(devserver, "ListRooms", lister, b"{}", json=True)
    assert status == 200 and "json-room" in [r["name"] for r in out["rooms"]]
    status, err = await _post(devserver, "NoSuchMethod", lister)
    assert (status, err["code"]) == (404, "bad_route")
    status, err = await _post(devserver, "ListRooms", lister, b"\xff\xff\xff")
    assert (status, err["code"]) == (400, "malformed")


async def test_agent_endpoint_needs_the_agent_grant(devserver: ServerProc) -> None:
    url = devserver.url + "/agent"
    join_only = devserver.token("people", "mallory")
    worker = api.AccessToken(devserver.api_key, devserver.api_secret).with_grants(api.VideoGrants(agent=True))
    async with aiohttp.ClientSession() as session:
        for headers in ({}, {"Authorization": f"Bearer {join_only}"}):
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await session.ws_connect(url, headers=headers)
            assert err.value.status == 401
        async with session.ws_connect(url, headers={"Authorization": f"Bearer {worker.to_jwt()}"}) as ws:
            register = agent_pb.WorkerMessage(register=agent_pb.RegisterWorkerRequest(agent_name="probe"))
            await ws.send_bytes(register.SerializeToString())
            answer = agent_pb.ServerMessage()
            answer.ParseFromString(await ws.receive_bytes(timeout=10))
            assert answer.register.worker_id.startswith("AW_")
            assert answer.register.server_info.edition == models.ServerInfo.Standard
        async with session.ws_connect(url, headers={"Authorization": f"Bearer {worker.to_jwt()}"}) as ws:
            await ws.send_bytes(
                agent_pb.WorkerMessage(ping=agent_pb.WorkerPing(timestamp=1)).SerializeToString()
            )
            closing = await ws.receive(timeout=10)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), (
                "register must come first"
            )
