"""The signalling endpoints driven by hand: join response contents and robustness against bad input."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from livekit.protocol import models, rtc

from signalling.devserver.server import DevServer

from .conftest import ROOM, make_token

pytestmark = pytest.mark.integration


async def _next(ws: aiohttp.ClientWebSocketResponse, kind: str, within: float = 10.0) -> rtc.SignalResponse:
    """The next signal response of ``kind`` (others are skipped)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        msg = await ws.receive(timeout=max(0.1, deadline - asyncio.get_running_loop().time()))
        assert msg.type == aiohttp.WSMsgType.BINARY, msg
        response = rtc.SignalResponse()
        response.ParseFromString(msg.data)
        if response.WhichOneof("message") == kind:
            return response


async def test_join_response_and_bad_requests_do_not_break_the_session(server: DevServer) -> None:
    async with aiohttp.ClientSession() as http:
        url = f"{server.url}/rtc?protocol=x&auto_subscribe=0&access_token={make_token('raw', hidden=False)}"
        async with http.ws_connect(url) as ws:
            join = (await _next(ws, "join")).join
            assert join.room.name == ROOM and join.room.sid.startswith("RM_")
            assert join.participant.identity == "raw" and join.participant.sid.startswith("PA_")
            assert join.ping_interval > 0 and join.ping_timeout > 0 and join.subscriber_primary
            assert join.server_info.protocol > 0
            offer = await _next(ws, "offer")  # two-connection mode: the server offers the subscriber PC first
            assert "m=application" in offer.offer.sdp and offer.offer.id == 1

            await ws.send_bytes(b"\xff\xfe not a protobuf")
            bad = [
                rtc.SignalRequest(trickle=rtc.TrickleRequest(candidateInit="{not json")),
                rtc.SignalRequest(offer=rtc.SessionDescription(type="offer", sdp="garbage", id=7)),
                rtc.SignalRequest(mute=rtc.MuteTrackRequest(sid="TR_unknown", muted=True)),
                rtc.SignalRequest(update_metadata=rtc.UpdateParticipantMetadata(metadata="m", request_id=5)),
            ]
            for request in bad:
                await ws.send_bytes(request.SerializeToString())
            acknowledged = await _next(ws, "request_response")
            assert acknowledged.request_response.request_id == 5
            assert acknowledged.request_response.reason == rtc.RequestResponse.Reason.OK

            await ws.send_bytes(rtc.SignalRequest(ping_req=rtc.Ping(timestamp=1234)).SerializeToString())
            pong = await _next(ws, "pong_resp")
            assert pong.pong_resp.last_ping_timestamp == 1234
            await ws.send_bytes(rtc.SignalRequest(ping=99).SerializeToString())
            assert (await _next(ws, "pong")).pong > 0
            assert server.rooms.get_participant(ROOM, "raw").metadata == "m"

            await ws.send_bytes(rtc.SignalRequest(leave=rtc.LeaveRequest()).SerializeToString())
            closing = await ws.receive(timeout=10)
            assert closing.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.CLOSING,
            )
    await asyncio.sleep(0.2)
    room = server.rooms.get(ROOM)
    assert room is None or "raw" not in room.participants


async def test_duplicate_identity_replaces_the_first_connection(server: DevServer) -> None:
    async with aiohttp.ClientSession() as http:
        url = f"{server.url}/rtc?access_token={make_token('twin')}"
        async with http.ws_connect(url) as first:
            await _next(first, "join")
            async with http.ws_connect(url) as second:
                await _next(second, "join")
                leave = await _next(first, "leave")
                assert leave.leave.reason == models.DisconnectReason.DUPLICATE_IDENTITY
                room = server.rooms.get(ROOM)
                assert room is not None and list(room.participants) == ["twin"]


@pytest.mark.parametrize(
    "query",
    ["join_request=%25%25%25", "join_request=AAAA", ""],
    ids=["not-base64", "not-a-join-request", "missing"],
)
async def test_bad_join_request_is_refused(server: DevServer, query: str) -> None:
    async with aiohttp.ClientSession() as http:
        url = f"{server.http_url}/rtc/v1?access_token={make_token('x')}&{query}"
        async with http.get(url) as response:
            assert response.status == 400
            assert "join_request" in await response.text()
