"""Compatibility suite: the official ``livekit`` Python SDK against the development server.

Every test runs twice: ``v1`` (one peer connection, /rtc/v1, the SDK default) and ``v0`` (/rtc, two).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import aiohttp
import jwt
import numpy as np
import pytest
from livekit import rtc
from livekit.protocol import models

from signalling.devserver.server import DevServer

from .conftest import API_KEY, API_SECRET, ROOM, Joiner, make_token, wait_for
from .helpers import (
    SAMPLE_RATE,
    AudioRecorder,
    VideoCounter,
    dominant_frequency,
    publish_sine,
    publish_video,
    window_rms,
)

pytestmark = pytest.mark.integration


def _subscribed_tracks(room: rtc.Room) -> asyncio.Queue[tuple[rtc.Track, str]]:
    queue: asyncio.Queue[tuple[rtc.Track, str]] = asyncio.Queue()
    room.on(
        "track_subscribed", lambda track, pub, participant: queue.put_nowait((track, participant.identity))
    )
    return queue


def _data_inbox(room: rtc.Room) -> asyncio.Queue[rtc.DataPacket]:
    queue: asyncio.Queue[rtc.DataPacket] = asyncio.Queue()
    room.on("data_received", queue.put_nowait)
    return queue


async def test_participants_see_each_other(server: DevServer, join: Joiner) -> None:
    alice = await join("alice", metadata="m-alice", attributes={"role": "host"})
    bob = await join("bob")
    await wait_for(lambda: "bob" in alice.remote_participants, what="alice sees bob")
    seen = bob.remote_participants["alice"]
    assert seen.metadata == "m-alice"
    assert seen.attributes == {"role": "host"}
    assert seen.sid.startswith("PA_")
    assert bob.name == ROOM
    assert (await bob.sid).startswith("RM_")
    room = server.rooms.get(ROOM)
    assert room is not None and set(room.participants) == {"alice", "bob"}

    left = asyncio.Event()
    alice.on("participant_disconnected", lambda p: left.set() if p.identity == "bob" else None)
    await bob.disconnect()
    await asyncio.wait_for(left.wait(), 15)
    assert set(room.participants) == {"alice"}


async def test_hidden_participant_is_not_announced(server: DevServer, join: Joiner) -> None:
    alice = await join("alice")
    await join("recorder", hidden=True)
    carol = await join("carol")
    await wait_for(lambda: "carol" in alice.remote_participants, what="alice sees carol")
    assert "recorder" not in alice.remote_participants
    assert "recorder" not in carol.remote_participants
    assert "recorder" in server.rooms.get(ROOM).participants  # type: ignore[union-attr]


async def test_data_broadcast_destinations_and_lossy(join: Joiner) -> None:
    alice = await join("alice")
    bob = await join("bob")
    carol = await join("carol")
    bob_in, carol_in = _data_inbox(bob), _data_inbox(carol)
    await wait_for(lambda: {"bob", "carol"} <= set(alice.remote_participants), what="alice sees everyone")

    await alice.local_participant.publish_data(b"only-bob", destination_identities=["bob"], topic="t1")
    await alice.local_participant.publish_data(b"everyone", topic="t2")
    first = await asyncio.wait_for(bob_in.get(), 10)
    assert (first.data, first.topic, first.participant.identity) == (b"only-bob", "t1", "alice")
    second = await asyncio.wait_for(bob_in.get(), 10)
    assert second.data == b"everyone"
    carol_first = await asyncio.wait_for(carol_in.get(), 10)
    # reliable packets arrive in order: had carol received the targeted one, it would come first
    assert carol_first.data == b"everyone"
    assert carol_first.participant.identity == "alice"

    await bob.local_participant.publish_data(b"lossy", reliable=False, topic="fast")
    got = await asyncio.wait_for(carol_in.get(), 10)
    assert (got.data, got.kind, got.participant.identity) == (b"lossy", rtc.DataPacketKind.KIND_LOSSY, "bob")


async def test_data_without_publish_data_grant_is_dropped(join: Joiner) -> None:
    alice = await join("alice", can_publish_data=False)
    bob = await join("bob")
    inbox, alice_inbox = _data_inbox(bob), _data_inbox(alice)
    await wait_for(lambda: "bob" in alice.remote_participants, what="alice sees bob")
    await alice.local_participant.publish_data(b"forbidden")
    await bob.local_participant.publish_data(b"ping")  # bob may publish: the path itself works
    assert (await asyncio.wait_for(alice_inbox.get(), 10)).data == b"ping"
    await alice.local_participant.publish_data(b"forbidden-2")
    await asyncio.sleep(1.0)
    assert inbox.empty()


@pytest.mark.slow
async def test_sine_arrives_continuously_for_20s(join: Joiner) -> None:
    alice = await join("alice")
    bob = await join("bob")
    tracks = _subscribed_tracks(bob)
    async with publish_sine(alice, 440.0):
        track, sender = await asyncio.wait_for(tracks.get(), 20)
        assert sender == "alice" and track.kind == rtc.TrackKind.KIND_AUDIO
        recorder = AudioRecorder(track)
        await wait_for(
            lambda: (
                len(recorder.samples()) >= 4800 and window_rms(recorder.samples()[-4800:], 4800)[0] > 1000
            ),
            what="sine",
        )
        start = len(recorder.samples())
        await asyncio.sleep(20.0)
        samples = recorder.samples()[start:]
        await recorder.aclose()
    assert len(samples) >= 19 * SAMPLE_RATE
    rms = window_rms(samples, SAMPLE_RATE // 10)  # 100 ms windows; the sine's RMS is about 8500
    silent = int(np.sum(rms < 2000))
    assert silent <= len(rms) * 0.02, f"{silent} of {len(rms)} 100 ms windows were (nearly) silent"
    for second in range(len(samples) // SAMPLE_RATE):
        chunk = samples[second * SAMPLE_RATE : (second + 1) * SAMPLE_RATE]
        if np.sqrt(np.mean(chunk.astype(np.float64) ** 2)) > 2000:
            assert abs(dominant_frequency(chunk) - 440.0) <= 3.0


async def test_many_publishers_and_subscribers(join: Joiner) -> None:
    """Three publishers (distinct pitches) and two listeners: everyone hears every other publisher."""
    pitches = {"p300": 300.0, "p500": 500.0, "p700": 700.0}
    rooms = {name: await join(name) for name in [*pitches, "l1", "l2"]}
    queues = {name: _subscribed_tracks(room) for name, room in rooms.items()}
    async with contextlib.AsyncExitStack() as stack:
        for name, hz in pitches.items():
            await stack.enter_async_context(publish_sine(rooms[name], hz))
        recorders: dict[tuple[str, str], AudioRecorder] = {}
        for listener, queue in queues.items():
            expected = len(pitches) - (1 if listener in pitches else 0)
            for _ in range(expected):
                track, sender = await asyncio.wait_for(queue.get(), 30)
                recorders[(listener, sender)] = AudioRecorder(track)
        assert len(recorders) == 3 * 2 + 2 * 3
        await wait_for(
            lambda: all(_loud(r.samples()[-SAMPLE_RATE // 2 :]) for r in recorders.values()),
            within=30,
            what="the sine on every subscription",
        )
        for (listener, sender), recorder in recorders.items():
            tail = recorder.samples()[-SAMPLE_RATE // 2 :]
            assert abs(dominant_frequency(tail) - pitches[sender]) <= 6.0, (listener, sender)
            await recorder.aclose()


async def test_video_frames_and_late_subscriber_gets_picture(join: Joiner) -> None:
    alice = await join("alice")
    bob = await join("bob")
    bob_tracks = _subscribed_tracks(bob)
    async with publish_video(alice):
        track, _ = await asyncio.wait_for(bob_tracks.get(), 20)
        assert track.kind == rtc.TrackKind.KIND_VIDEO
        counter = VideoCounter(track)
        await wait_for(lambda: counter.frames >= 10, within=20, what="10 video frames at bob")
        assert counter.size == (320, 240)
        # a subscriber joining later starts with a key frame requested from the publisher
        carol = await join("carol")
        carol_tracks = _subscribed_tracks(carol)
        late, _ = await asyncio.wait_for(carol_tracks.get(), 20)
        late_counter = VideoCounter(late)
        await wait_for(lambda: late_counter.frames >= 5, within=20, what="frames at the late subscriber")
        await counter.aclose()
        await late_counter.aclose()


async def test_mute_unpublish_and_explicit_subscription(join: Joiner) -> None:
    alice = await join("alice")
    bob = await join("bob", auto_subscribe=False)
    published: asyncio.Queue[rtc.RemoteTrackPublication] = asyncio.Queue()
    events: asyncio.Queue[str] = asyncio.Queue()
    bob.on("track_published", lambda pub, p: published.put_nowait(pub))
    bob.on("track_subscribed", lambda t, pub, p: events.put_nowait("subscribed"))
    bob.on("track_muted", lambda p, pub: events.put_nowait("muted"))
    bob.on("track_unmuted", lambda p, pub: events.put_nowait("unmuted"))
    bob.on("track_unpublished", lambda pub, p: events.put_nowait("unpublished"))
    async with publish_sine(alice) as local_pub:
        remote_pub = await asyncio.wait_for(published.get(), 20)
        assert remote_pub.sid == local_pub.sid and remote_pub.sid.startswith("TR_")
        await asyncio.sleep(1.0)
        assert not remote_pub.subscribed  # auto-subscribe is off
        remote_pub.set_subscribed(True)
        assert await asyncio.wait_for(events.get(), 20) == "subscribed"
        local_pub.track.mute()
        assert await asyncio.wait_for(events.get(), 10) == "muted"
        local_pub.track.unmute()
        assert await asyncio.wait_for(events.get(), 10) == "unmuted"
        await alice.local_participant.unpublish_track(local_pub.sid)
        deadline = asyncio.get_running_loop().time() + 15
        while (
            event := await asyncio.wait_for(
                events.get(), max(0.1, deadline - asyncio.get_running_loop().time())
            )
        ) != "unpublished":
            assert event in ("subscribed", "muted", "unmuted")
    await wait_for(lambda: not alice.local_participant.track_publications, what="alice has no tracks")


async def test_publish_without_grant_is_refused(server: DevServer, join: Joiner) -> None:
    alice = await join("alice", can_publish=False)
    bob = await join("bob")
    announced: list[str] = []
    bob.on("track_published", lambda pub, p: announced.append(pub.sid))
    source = rtc.AudioSource(SAMPLE_RATE, 1)
    track = rtc.LocalAudioTrack.create_audio_track("mic", source)
    # the server refuses (RequestResponse NOT_ALLOWED, no TrackPublishedResponse): the SDK never completes
    with pytest.raises((asyncio.TimeoutError, rtc.ConnectError, Exception)):
        await asyncio.wait_for(alice.local_participant.publish_track(track), 3)
    await asyncio.sleep(0.5)
    assert not server.rooms.get_participant(ROOM, "alice").tracks
    assert announced == []
    await source.aclose()


async def test_subscribe_without_grant_gets_no_media(join: Joiner) -> None:
    alice = await join("alice")
    bob = await join("bob", can_subscribe=False)
    carol = await join("carol")
    bob_tracks, carol_tracks = _subscribed_tracks(bob), _subscribed_tracks(carol)
    async with publish_sine(alice):
        _, sender = await asyncio.wait_for(carol_tracks.get(), 20)
        assert sender == "alice"
        await wait_for(
            lambda: bool(bob.remote_participants["alice"].track_publications), what="bob sees the track"
        )
        await asyncio.sleep(1.0)
        assert bob_tracks.empty()


async def test_permission_update_applies_to_media(server: DevServer, join: Joiner) -> None:
    alice = await join("alice")
    bob = await join("bob")
    tracks = _subscribed_tracks(bob)
    unpublished: asyncio.Queue[str] = asyncio.Queue()
    bob.on("track_unpublished", lambda pub, p: unpublished.put_nowait(pub.sid))

    def permission(**changes: bool) -> models.ParticipantPermission:
        return models.ParticipantPermission(
            **{"can_subscribe": True, "can_publish": True, "can_publish_data": True, **changes}
        )

    async with publish_sine(alice) as local_pub:
        track, _ = await asyncio.wait_for(tracks.get(), 20)
        recorder = AudioRecorder(track)
        await wait_for(lambda: _loud(recorder.samples()[-4800:]), what="the sine at bob")
        await server.rooms.update_participant(ROOM, "bob", permission=permission(can_subscribe=False))
        await asyncio.sleep(1.0)
        mark = len(recorder.samples())
        await asyncio.sleep(1.0)
        after = recorder.samples()[mark:]  # v0: the track ends (nothing more); v1: the stream goes silent
        assert len(after) < 4800 or not _loud(after), "bob still hears alice without can_subscribe"
        await recorder.aclose()
        await server.rooms.update_participant(ROOM, "bob", permission=permission())
        again, _ = await asyncio.wait_for(tracks.get(), 20)
        recorder = AudioRecorder(again)
        await wait_for(lambda: _loud(recorder.samples()[-4800:]), what="the sine at bob again")
        await recorder.aclose()
        await server.rooms.update_participant(ROOM, "alice", permission=permission(can_publish=False))
        assert await asyncio.wait_for(unpublished.get(), 15) == local_pub.sid
        assert not server.rooms.get_participant(ROOM, "alice").tracks


def _loud(samples: np.ndarray) -> bool:
    return len(samples) >= 4800 and float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) > 2000


async def test_rpc_round_trip_and_error(join: Joiner) -> None:
    alice = await join("alice")
    bob = await join("bob")
    await wait_for(lambda: "alice" in bob.remote_participants, what="bob sees alice")

    @bob.local_participant.register_rpc_method("greet")
    async def greet(data: rtc.RpcInvocationData) -> str:
        return json.dumps({"hello": data.payload, "caller": data.caller_identity})

    @bob.local_participant.register_rpc_method("fail")
    async def fail(data: rtc.RpcInvocationData) -> str:
        raise rtc.RpcError(1500, "nope")

    reply = await alice.local_participant.perform_rpc(
        destination_identity="bob", method="greet", payload="world"
    )
    assert json.loads(reply) == {"hello": "world", "caller": "alice"}
    with pytest.raises(rtc.RpcError) as info:
        await alice.local_participant.perform_rpc(destination_identity="bob", method="fail", payload="")
    assert info.value.code == 1500


async def test_text_and_byte_streams(join: Joiner) -> None:
    alice = await join("alice")
    bob = await join("bob")
    await wait_for(lambda: "bob" in alice.remote_participants, what="alice sees bob")
    readers: set[asyncio.Task[None]] = set()
    texts: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    blobs: asyncio.Queue[tuple[bytes, str]] = asyncio.Queue()

    def on_text(reader: rtc.TextStreamReader, sender: str) -> None:
        async def read() -> None:
            texts.put_nowait((await reader.read_all(), sender))

        readers.add(asyncio.ensure_future(read()))

    def on_bytes(reader: rtc.ByteStreamReader, sender: str) -> None:
        async def read() -> None:
            data = b"".join([chunk async for chunk in reader])
            blobs.put_nowait((data, sender))

        readers.add(asyncio.ensure_future(read()))

    bob.register_text_stream_handler("lk.chat", on_text)
    bob.register_byte_stream_handler("files", on_bytes)
    long_text = "transcript " * 2000  # several chunks
    await alice.local_participant.send_text(long_text, topic="lk.chat")
    assert await asyncio.wait_for(texts.get(), 15) == (long_text, "alice")
    payload = bytes(range(256)) * 200
    writer = await alice.local_participant.stream_bytes("blob.bin", topic="files", total_size=len(payload))
    await writer.write(payload)
    await writer.aclose()
    assert await asyncio.wait_for(blobs.get(), 15) == (payload, "alice")


async def test_attributes_metadata_and_name(server: DevServer, join: Joiner) -> None:
    alice = await join("alice")
    bob = await join("bob")
    await wait_for(lambda: "alice" in bob.remote_participants, what="bob sees alice")
    changed: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    bob.on("participant_attributes_changed", lambda attrs, p: changed.put_nowait(dict(p.attributes)))
    await asyncio.wait_for(alice.local_participant.set_attributes({"lang": "en", "mood": "ok"}), 10)
    assert await asyncio.wait_for(changed.get(), 10) == {"lang": "en", "mood": "ok"}
    await asyncio.wait_for(alice.local_participant.set_attributes({"mood": ""}), 10)  # empty deletes
    assert await asyncio.wait_for(changed.get(), 10) == {"lang": "en"}
    await asyncio.wait_for(alice.local_participant.set_metadata("new-meta"), 10)
    await asyncio.wait_for(alice.local_participant.set_name("Alice"), 10)
    remote = bob.remote_participants["alice"]
    await wait_for(lambda: remote.metadata == "new-meta" and remote.name == "Alice", what="metadata and name")
    assert server.rooms.get_participant(ROOM, "alice").attributes == {"lang": "en"}


async def test_attributes_refused_without_grant(server: DevServer, join: Joiner) -> None:
    alice = await join("alice", can_update_own_metadata=False)
    bob = await join("bob")
    await wait_for(lambda: "alice" in bob.remote_participants, what="bob sees alice")
    changes: list[dict[str, str]] = []
    bob.on("participant_attributes_changed", lambda attrs, p: changes.append(dict(attrs)))
    # the server answers NOT_ALLOWED; the SDK may raise or time out, but nothing may change
    with contextlib.suppress(Exception):
        await asyncio.wait_for(alice.local_participant.set_attributes({"x": "1"}), 2)
    await asyncio.sleep(0.5)
    assert server.rooms.get_participant(ROOM, "alice").attributes == {}
    assert changes == []
    assert bob.remote_participants["alice"].attributes == {}


async def test_reconnect_after_server_restart(server: DevServer, join: Joiner) -> None:
    alice = await join("alice")
    bob = await join("bob")
    inbox = _data_inbox(bob)
    reconnected = asyncio.Event()
    alice.on("reconnected", reconnected.set)
    port = server.port
    await server.stop()
    await asyncio.sleep(0.5)
    restarted = DevServer(port=port, api_key=API_KEY, api_secret=API_SECRET)
    await restarted.start()
    try:
        await asyncio.wait_for(reconnected.wait(), 30)
        await wait_for(
            lambda: (r := restarted.rooms.get(ROOM)) is not None and set(r.participants) == {"alice", "bob"},
            within=30,
            what="both rejoined the restarted server",
        )
        await wait_for(lambda: "bob" in alice.remote_participants, what="alice sees bob again")
        await alice.local_participant.publish_data(b"after-restart")
        assert (await asyncio.wait_for(inbox.get(), 15)).data == b"after-restart"
    finally:
        await alice.disconnect()
        await bob.disconnect()
        await restarted.stop()


def _raw_token(video: dict[str, object], *, exp_delta: int = 600, secret: str = API_SECRET) -> str:
    now = int(time.time())
    claims = {"iss": API_KEY, "sub": "mallory", "nbf": now - 10, "exp": now + exp_delta, "video": video}
    return jwt.encode(claims, secret, algorithm="HS256")


_BAD_TOKENS = {
    "expired": lambda: _raw_token({"roomJoin": True, "room": ROOM}, exp_delta=-120),
    "wrong-signature": lambda: _raw_token(
        {"roomJoin": True, "room": ROOM}, secret="another-secret-that-is-long-enough!"
    ),
    "no-join-grant": lambda: _raw_token({"roomAdmin": True, "room": ROOM}),
    "no-room": lambda: _raw_token({"roomJoin": True, "room": ""}),
    "garbage": lambda: "not-a-jwt",
}


@pytest.mark.parametrize("kind", sorted(_BAD_TOKENS))
async def test_bad_tokens_are_refused(server: DevServer, mode: str, kind: str) -> None:
    room = rtc.Room()
    options = rtc.RoomOptions(single_peer_connection=mode == "v1", connect_timeout=10.0)
    with pytest.raises(rtc.ConnectError):
        await asyncio.wait_for(room.connect(server.url, _BAD_TOKENS[kind](), options), 60)
    existing = server.rooms.get(ROOM)
    assert existing is None or "mallory" not in existing.participants
    # the server survives and still admits a good token
    good = rtc.Room()
    await asyncio.wait_for(good.connect(server.url, make_token("alice"), rtc.RoomOptions()), 30)
    await good.disconnect()


@pytest.mark.parametrize("path", ["/rtc/validate", "/rtc/v1/validate"])
async def test_validate_endpoints_answer_with_cors(server: DevServer, path: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(server.http_url + path, params={"access_token": make_token("alice")}) as ok:
            assert ok.status == 200
            assert ok.headers["Access-Control-Allow-Origin"] == "*"
        async with http.get(server.http_url + path, params={"access_token": _BAD_TOKENS["expired"]()}) as bad:
            assert bad.status == 401
            assert "invalid token" in await bad.text()
            assert bad.headers["Access-Control-Allow-Origin"] == "*"
        headers = {"Authorization": "Bearer " + _BAD_TOKENS["no-room"]()}
        async with http.get(server.http_url + path, headers=headers) as denied:
            assert denied.status == 401
            assert "permissions denied" in await denied.text()
