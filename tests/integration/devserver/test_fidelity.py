"""livekit-server behaviour the development server must share, checked through the official SDK and raw HTTP:
publishers told their track was subscribed, join-time metadata needing its grant, roomAdmin scoped to a room,
forged transcriptions dropped."""

from __future__ import annotations

import asyncio
import base64

import aiohttp
import pytest
from livekit import api, rtc
from livekit.protocol import rtc as rtc_pb

from signalling.devserver.server import DevServer

from .conftest import API_KEY, API_SECRET, ROOM, Joiner, make_token, wait_for
from .helpers import publish_sine

pytestmark = pytest.mark.integration


async def test_publisher_is_told_its_track_was_subscribed(join: Joiner) -> None:
    alice = await join("alice")
    subscribed: asyncio.Queue[str] = asyncio.Queue()
    alice.on("local_track_subscribed", lambda track: subscribed.put_nowait(track.sid))
    async with publish_sine(alice) as publication:
        await asyncio.sleep(0.5)
        assert subscribed.empty(), "nobody subscribed yet"
        await join("bob")
        assert await asyncio.wait_for(subscribed.get(), 20) == publication.sid
        # livekit-agents' audio output waits on exactly this before it plays anything
        await asyncio.wait_for(publication.wait_for_subscription(), 1)


async def test_hidden_subscriber_does_not_count_as_subscribed(join: Joiner, server: DevServer) -> None:
    alice = await join("alice")
    subscribed: list[str] = []
    alice.on("local_track_subscribed", lambda track: subscribed.append(track.sid))
    async with publish_sine(alice):
        await join("recorder", hidden=True)
        await wait_for(
            lambda: any(
                s.subscriptions and any(sub.relayed is not None for sub in s.subscriptions.values())
                for s in server.signal_context.sessions
                if s.participant.identity == "recorder"
            ),
            what="the hidden participant's subscription",
        )
        await asyncio.sleep(1.5)
        assert subscribed == []


def _join_request(**fields: object) -> str:
    join = rtc_pb.JoinRequest(**fields)  # type: ignore[arg-type]
    wrapped = rtc_pb.WrappedJoinRequest(join_request=join.SerializeToString())
    return base64.urlsafe_b64encode(wrapped.SerializeToString()).decode().rstrip("=")


@pytest.mark.parametrize("path", ["/rtc/v1", "/rtc/v1/validate"])
async def test_join_request_setting_own_attributes_needs_the_grant(server: DevServer, path: str) -> None:
    forged = _join_request(participant_attributes={"lk.agent.state": "speaking"})
    self_meta = _join_request(metadata="I hold the floor")
    plain = _join_request()
    async with aiohttp.ClientSession() as http:
        for request, token, expected in [
            (forged, make_token("guest", can_update_own_metadata=False), 401),
            (self_meta, make_token("guest", can_update_own_metadata=False), 401),
            (plain, make_token("guest", can_update_own_metadata=False), None),
            (forged, make_token("host", can_update_own_metadata=True), None),
        ]:
            url = f"{server.http_url}{path}?access_token={token}&join_request={request}"
            async with http.get(url) as response:
                if expected is None:
                    # accepted: validate answers 200, the WebSocket endpoint asks for the upgrade (400)
                    assert response.status in (200, 400), await response.text()
                    assert "permission" not in (await response.text())
                else:
                    assert response.status == expected
                    assert "canUpdateOwnMetadata" in await response.text()


async def _twirp(
    server: DevServer, method: str, body: dict[str, object], token: str
) -> aiohttp.ClientResponse:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{server.http_url}/twirp/livekit.RoomService/{method}",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        await response.read()
        return response


async def test_room_admin_token_naming_no_room_administers_none(server: DevServer, join: Joiner) -> None:
    await join("alice")
    roomless = api.AccessToken(API_KEY, API_SECRET).with_grants(api.VideoGrants(room_admin=True)).to_jwt()
    own = (
        api.AccessToken(API_KEY, API_SECRET).with_grants(api.VideoGrants(room_admin=True, room=ROOM)).to_jwt()
    )
    for method, body in [
        ("ListParticipants", {"room": ROOM}),
        ("RemoveParticipant", {"room": ROOM, "identity": "alice"}),
        ("UpdateRoomMetadata", {"room": ROOM, "metadata": "taken"}),
    ]:
        refused = await _twirp(server, method, body, roomless)
        assert refused.status == 403, method
    assert "alice" in server.rooms.get(ROOM).participants  # type: ignore[union-attr]
    assert (await _twirp(server, "ListParticipants", {"room": ROOM}, own)).status == 200


async def test_forged_transcription_is_not_delivered(join: Joiner) -> None:
    alice = await join("alice")
    bob = await join("bob")
    agent = await join("agent-1", agent=True)
    heard: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    bob.on(
        "transcription_received",
        lambda segments, participant, publication: heard.put_nowait(
            (participant.identity if participant else "", segments[0].text)
        ),
    )
    await wait_for(lambda: {"alice", "agent-1"} <= set(bob.remote_participants), what="bob sees everyone")
    forged = rtc.Transcription(
        participant_identity="bob",
        track_sid="TR_unused",
        segments=[rtc.TranscriptionSegment("s1", "alice puts words in bob's mouth", 0, 0, "en", True)],
    )
    await alice.local_participant.publish_transcription(forged)
    real = rtc.Transcription(
        participant_identity="alice",
        track_sid="TR_unused",
        segments=[rtc.TranscriptionSegment("s2", "what alice said", 0, 0, "en", True)],
    )
    await agent.local_participant.publish_transcription(real)
    assert await asyncio.wait_for(heard.get(), 10) == ("alice", "what alice said")
    await asyncio.sleep(0.5)
    assert heard.empty()
