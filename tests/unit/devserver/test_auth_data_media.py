"""Unit tests of the development server's token checks, data packets, SDP parsing and join requests."""

from __future__ import annotations

import asyncio
import base64
import fractions
import gzip
import time

import aioice
import jwt
import pytest
from aiortc.jitterbuffer import JitterFrame
from livekit import api
from livekit.protocol import models, rtc

from signalling.devserver import media
from signalling.devserver.auth import Authenticator, TokenError, extract_token, may_publish_source
from signalling.devserver.data import DataPacketError, parse_packet, stamp_sender
from signalling.devserver.signal import JoinRequestError, decode_join_request

KEY, SECRET = "devkey", "unit-secret-unit-secret-unit-secret!"


def _raw(video: dict[str, object], *, exp: int = 86400, secret: str = SECRET, sub: str = "alice") -> str:
    # a day: parametrized tokens are made at collection time, and a long suite runs them much later
    now = int(time.time())
    return jwt.encode(
        {"iss": KEY, "sub": sub, "nbf": now - 5, "exp": now + exp, "video": video}, secret, "HS256"
    )


def test_join_grant_maps_permissions() -> None:
    token = (
        api.AccessToken(KEY, SECRET)
        .with_identity("alice")
        .with_grants(
            api.VideoGrants(
                room_join=True,
                room="r",
                can_publish=True,
                can_subscribe=False,
                can_publish_data=False,
                can_publish_sources=["microphone"],
                hidden=True,
                can_update_own_metadata=True,
            )
        )
        .to_jwt()
    )
    grant = Authenticator(KEY, SECRET).join_grant(token)
    assert (grant.room, grant.identity, grant.is_agent) == ("r", "alice", False)
    p = grant.permission
    assert (p.can_publish, p.can_subscribe, p.can_publish_data, p.hidden, p.can_update_metadata) == (
        True,
        False,
        False,
        True,
        True,
    )
    assert list(p.can_publish_sources) == [models.TrackSource.MICROPHONE]
    assert may_publish_source(p, models.TrackSource.MICROPHONE)
    assert not may_publish_source(p, models.TrackSource.CAMERA)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (_raw({"roomJoin": True, "room": "r"}, exp=-100), "invalid token"),
        (_raw({"roomJoin": True, "room": "r"}, secret="x" * 40), "invalid token"),
        ("garbage", "invalid token"),
        (_raw({"roomAdmin": True, "room": "r"}), "permissions denied"),
        (_raw({"roomJoin": True, "room": ""}), "permissions denied"),
    ],
)
def test_bad_tokens_raise_token_error(token: str, message: str) -> None:
    with pytest.raises(TokenError) as info:
        Authenticator(KEY, SECRET).join_grant(token)
    assert info.value.status == 401
    assert message in str(info.value)


def test_room_named_by_client_must_match() -> None:
    auth = Authenticator(KEY, SECRET)
    token = _raw({"roomJoin": True, "room": "r"})
    assert auth.join_grant(token, "r").room == "r"
    with pytest.raises(TokenError, match="not valid for room"):
        auth.join_grant(token, "other")


def test_agent_grant_and_missing_identity() -> None:
    auth = Authenticator(KEY, SECRET)
    assert auth.join_grant(_raw({"roomJoin": True, "room": "r", "agent": True})).is_agent
    with pytest.raises(TokenError) as info:
        auth.join_grant(_raw({"roomJoin": True, "room": "r"}, sub=""))
    assert info.value.status == 400


def test_extract_token() -> None:
    assert extract_token("Bearer abc", None) == "abc"
    assert extract_token(None, "q") == "q"
    assert extract_token("Basic zzz", "q") == "q"
    with pytest.raises(TokenError):
        extract_token(None, None)


def test_data_packet_parse_and_sender_stamp() -> None:
    sent = models.DataPacket(participant_identity="forged", destination_identities=["bob"])
    sent.user.payload = b"hi"
    sent.user.participant_identity = "forged"
    packet = parse_packet(sent.SerializeToString(), "_lossy")
    assert packet.kind == models.DataPacket.Kind.LOSSY
    stamp_sender(packet, "alice", "PA_1")
    assert (packet.participant_identity, packet.participant_sid) == ("alice", "PA_1")
    assert (packet.user.participant_identity, packet.user.participant_sid) == ("alice", "PA_1")
    assert parse_packet(sent.SerializeToString(), "_reliable").kind == models.DataPacket.Kind.RELIABLE


@pytest.mark.parametrize("raw", ["text", b"\xff\xff\xff\xff", b"\x00" * (70 * 1024)])
def test_bad_data_packets_raise(raw: bytes | str) -> None:
    with pytest.raises(DataPacketError):
        parse_packet(raw, "_reliable")


SDP = """v=0\r
o=- 1 2 IN IP4 127.0.0.1\r
s=-\r
t=0 0\r
a=group:BUNDLE 0 1 2\r
a=msid-semantic: WMS\r
m=audio 9 UDP/TLS/RTP/SAVPF 111\r
a=mid:0\r
a=sendonly\r
a=msid:stream-a track-cid-1\r
m=video 9 UDP/TLS/RTP/SAVPF 96\r
a=mid:1\r
a=recvonly\r
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r
a=mid:2\r
"""


def test_parse_media_lines() -> None:
    lines = media.parse_media_lines(SDP)
    assert [(m.kind, m.mid, m.direction, m.msid_track, m.port) for m in lines] == [
        ("audio", "0", "sendonly", "track-cid-1", 9),
        ("video", "1", "recvonly", "", 9),
        ("application", "2", "sendrecv", "", 9),
    ]


def test_vp8_keyframe_bit() -> None:
    assert media.is_vp8_keyframe(b"\x10\x02\x00")
    assert not media.is_vp8_keyframe(b"\x11\x02\x00")
    assert not media.is_vp8_keyframe(b"")


def test_pass_through_decoder_keeps_bytes_and_timestamp() -> None:
    (packet,) = media.PassThroughDecoder(48000).decode(JitterFrame(b"\x01\x02\x03", 960))
    assert bytes(packet) == b"\x01\x02\x03"
    assert packet.pts == 960 and packet.time_base == fractions.Fraction(1, 48000)


def test_pass_through_install_is_reference_counted() -> None:
    from aiortc import rtcrtpreceiver

    original = rtcrtpreceiver.get_decoder
    media.install_pass_through()
    media.install_pass_through()
    media.uninstall_pass_through()
    assert rtcrtpreceiver.get_decoder is not original
    media.uninstall_pass_through()
    assert rtcrtpreceiver.get_decoder is original


def _wrap(join: rtc.JoinRequest, compress: bool) -> str:
    payload = join.SerializeToString()
    wrapped = rtc.WrappedJoinRequest(join_request=gzip.compress(payload) if compress else payload)
    if compress:
        wrapped.compression = rtc.WrappedJoinRequest.Compression.GZIP
    return base64.urlsafe_b64encode(wrapped.SerializeToString()).decode().rstrip("=")


@pytest.mark.parametrize("compress", [True, False])
def test_decode_join_request(compress: bool) -> None:
    join = rtc.JoinRequest(metadata="m")
    join.publisher_offer.sdp = "v=0"
    decoded = decode_join_request(_wrap(join, compress))
    assert decoded.metadata == "m" and decoded.publisher_offer.sdp == "v=0"


@pytest.mark.parametrize("value", ["%%%", base64.urlsafe_b64encode(b"\xff\x00garbage").decode()])
def test_decode_join_request_rejects_garbage(value: str) -> None:
    with pytest.raises(JoinRequestError):
        decode_join_request(value)


async def _connected_ice_pair() -> tuple[aioice.Connection, aioice.Connection]:
    a = aioice.Connection(ice_controlling=True, components=1, use_ipv4=True, use_ipv6=False)
    b = aioice.Connection(ice_controlling=False, components=1, use_ipv4=True, use_ipv6=False)
    await asyncio.gather(a.gather_candidates(), b.gather_candidates())
    for local, remote in ((a, b), (b, a)):
        for candidate in remote.local_candidates:
            await local.add_remote_candidate(candidate)
        await local.add_remote_candidate(None)
        local.remote_username, local.remote_password = remote.local_username, remote.local_password
    await asyncio.gather(a.connect(), b.connect())
    return a, b


@pytest.mark.parametrize(("tolerant", "checks_before_closing"), [(False, 6), (True, 24)])
async def test_a_client_whose_consent_answers_come_late_is_kept_for_longer(
    tolerant: bool, checks_before_closing: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a starved server sees as unanswered consent checks: aioice alone closes the connection after 6 in
    a row, the server after 24 (checks every 20 ms here instead of 5 s)."""
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.02)
    monkeypatch.setattr(aioice.stun, "RETRY_RTO", 0.01)
    # aioice's own limit: a server started earlier in this process raised it
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 6)
    if tolerant:
        media.tolerate_late_consent_answers()
    a, b = await _connected_ice_pair()
    unanswered: list[object] = []
    try:
        monkeypatch.setattr(b, "request_received", lambda *args: unanswered.append(args))  # b stops answering
        checks = a._query_consent_task
        assert checks is not None
        await asyncio.wait_for(checks, 30)  # ends when a gives up on b
        assert a._query_consent_task is None
        assert len(unanswered) == checks_before_closing
    finally:
        await asyncio.gather(a.close(), b.close())
