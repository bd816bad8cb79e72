"""worker.video on real livekit.rtc tracks (local video tracks fed with Pillow pictures, no room needed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from livekit import rtc

from llmrtc.metrics import InMemoryMetrics, MetricNames
from llmrtc.vision import VisionConfig, VisionUnavailableError
from tests.integration.vision.media import (
    BLUE,
    GREEN,
    RED,
    PictureTrack,
    close_to,
    dominant_color,
    image_size,
    picture,
    to_frame,
)
from worker.video import VideoFrames, encode_frame, video_source

CAMERA = rtc.TrackSource.SOURCE_CAMERA
SCREEN = rtc.TrackSource.SOURCE_SCREENSHARE


@dataclass
class Person:
    """A participant as the service reads it (``rtc.RemoteParticipant`` has the same three fields)."""

    identity: str
    name: str
    attributes: dict[str, str] = field(default_factory=dict)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def tracks() -> AsyncIterator[list[PictureTrack]]:
    made: list[PictureTrack] = []
    yield made
    for t in made:
        await t.aclose()


def track(
    made: list[PictureTrack], color: tuple[int, int, int], word: str, *, size=(640, 480), screen=False
) -> PictureTrack:
    t = PictureTrack(picture(color, word, *size), fps=30, source=SCREEN if screen else CAMERA)
    made.append(t)
    return t


async def until(predicate, within: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_encode_downscales_converts_and_rotates() -> None:
    frame = to_frame(picture(RED, "HELLO", 1280, 720)).convert(rtc.VideoBufferType.I420)
    jpeg = encode_frame(frame, max_side=768)
    assert (jpeg.width, jpeg.height) == (768, 432) == image_size(jpeg.data)
    assert jpeg.mime_type == "image/jpeg" and jpeg.data[:3] == b"\xff\xd8\xff"
    assert close_to(dominant_color(jpeg.data), RED)
    png = encode_frame(frame, max_side=320, image_format="png", rotation=rtc.VideoRotation.VIDEO_ROTATION_90)
    assert png.mime_type == "image/png" and png.data[:8] == b"\x89PNG\r\n\x1a\n"
    assert image_size(png.data) == (180, 320)  # rotated upright, then the long side is 320
    small = encode_frame(to_frame(picture(BLUE, "A", 200, 100)), max_side=768)
    assert (small.width, small.height) == (200, 100)  # never upscaled


def test_sources_and_wants() -> None:
    assert video_source(CAMERA) == "camera" and video_source(SCREEN) == "screen_share"
    assert video_source(rtc.TrackSource.SOURCE_MICROPHONE) is None and video_source("mic") is None  # type: ignore[arg-type]
    frames = VideoFrames(VisionConfig(mode="turn"))
    assert frames.wants(Person("a", "A"), CAMERA)
    assert not frames.wants(Person("a", "A", {"llmrtc.vision": "false"}), CAMERA)
    assert not frames.wants(Person("a", "A"), rtc.TrackSource.SOURCE_MICROPHONE)
    assert not VideoFrames(VisionConfig(mode="off")).wants(Person("a", "A"), CAMERA)


async def test_turn_gets_screen_then_camera_within_budget(tracks: list[PictureTrack]) -> None:
    metrics = InMemoryMetrics()
    looks: list[tuple[str, str, str, str | None]] = []
    frames = VideoFrames(
        VisionConfig(mode="turn", max_side=512), metrics=metrics, on_look=lambda *a: looks.append(a)
    )
    alice = Person("alice-1", "Alice")
    cam = track(tracks, RED, "CAM", size=(1280, 720))
    screen = track(tracks, GREEN, "SCREEN", size=(1280, 720), screen=True)
    assert frames.add_track(cam.track, alice, CAMERA)
    assert frames.add_track(screen.track, alice, SCREEN)
    assert not frames.add_track(track(tracks, BLUE, "x").track, alice, rtc.TrackSource.SOURCE_MICROPHONE)
    await until(lambda: frames.has_frame("alice-1", "camera") and frames.has_frame("alice-1", "screen_share"))
    got = await frames.for_turn(["alice-1", "nobody"], turn_id="t1")
    assert [a.source for a in got] == ["screen", "camera"]
    assert close_to(dominant_color(got[0].to_bytes()), GREEN) and close_to(
        dominant_color(got[1].to_bytes()), RED
    )
    assert all(max(image_size(a.to_bytes())) == 512 for a in got)
    assert looks == [("alice-1", "screen_share", "turn", "t1"), ("alice-1", "camera", "turn", "t1")]
    assert metrics.counter(MetricNames.VISION_FRAMES, {"mode": "turn"}) == 2
    # the turn's budget is spent: a look in the same turn is refused, in the next turn it works
    with pytest.raises(VisionUnavailableError, match="per turn"):
        await frames.look("alice", "camera", turn_id="t1")
    seen = await frames.look("ALICE", "camera", turn_id="t2")
    assert (
        seen.identity == "alice-1"
        and seen.what == "Alice's camera"
        and (seen.width, seen.height) == (512, 288)
    )
    assert metrics.counter(MetricNames.VISION_FRAMES, {"mode": "tool", "source": "camera"}) == 1
    one = VideoFrames(VisionConfig(mode="turn", max_frames_per_turn=1))
    one.add_track(cam.track, alice, CAMERA)
    one.add_track(screen.track, alice, SCREEN)
    await until(lambda: one.has_frame("alice-1", "camera") and one.has_frame("alice-1", "screen_share"))
    assert [a.source for a in await one.for_turn(["alice-1"])] == ["screen"]
    await one.aclose()
    await frames.aclose()


async def test_byte_and_minute_limits(tracks: list[PictureTrack]) -> None:
    clock = Clock()
    cam = track(tracks, RED, "CAM")
    screen = track(tracks, GREEN, "SCREEN", screen=True)
    bob = Person("bob", "Bob")
    probe = VideoFrames(VisionConfig(mode="turn"))
    probe.add_track(screen.track, bob, SCREEN)
    await until(lambda: probe.has_frame("bob", "screen_share"))
    first = await probe.freshest("bob", "screen_share")
    assert first is not None
    await probe.aclose()
    # room for the screen (a later frame encodes a little differently), not for the camera too (about as big)
    budget = len(first.to_bytes()) * 3 // 2
    assert budget >= 4096  # the smallest budget the settings allow
    frames = VideoFrames(
        VisionConfig(mode="turn", max_bytes_per_turn=budget, max_per_minute=3, max_age_s=1e6),
        clock=clock,
    )
    frames.add_track(cam.track, bob, CAMERA)
    frames.add_track(screen.track, bob, SCREEN)
    await until(lambda: frames.has_frame("bob", "camera") and frames.has_frame("bob", "screen_share"))
    shown = await frames.freshest("bob", "screen_share")  # a peek: no budget charged
    cam_frame = await frames.freshest("bob", "camera")
    assert shown is not None and cam_frame is not None
    # room for this screen frame, not for the camera's too
    budget = max(4096, len(shown.to_bytes()) + len(cam_frame.to_bytes()) // 2)
    frames.config = frames.config.model_copy(update={"max_bytes_per_turn": budget})
    assert [a.source for a in await frames.for_turn(["bob"], turn_id="a")] == ["screen"]
    assert frames.stats["limited"] == 1
    await frames.look("bob", "camera", turn_id="b")
    await frames.look("bob", "camera", turn_id="c")
    given = frames.stats["given"]
    with pytest.raises(VisionUnavailableError, match="a minute"):
        await frames.look("bob", "camera", turn_id="d")
    clock.now += 61
    await frames.look("bob", "camera", turn_id="d")
    assert frames.stats["given"] == given + 1
    await frames.aclose()


async def test_privacy_attribute_is_live(tracks: list[PictureTrack]) -> None:
    carol = Person("carol", "Carol", {"llmrtc.vision": "false"})
    frames = VideoFrames(VisionConfig(mode="tool"))
    frames.add_track(track(tracks, BLUE, "NO").track, carol, CAMERA)
    await asyncio.sleep(1.2)
    assert await frames.for_turn(["carol"]) == []
    assert await frames.freshest("carol", "camera") is None
    with pytest.raises(VisionUnavailableError, match="does not allow"):
        await frames.look("Carol", "camera")
    assert frames.stats["sampled"] == 0 and frames.stats["given"] == 0  # not even kept
    carol.attributes["llmrtc.vision"] = "true"  # the SDK updates a participant's attributes in place
    await until(lambda: frames.stats["sampled"] >= 1)
    seen = await frames.freshest("carol", "camera")
    assert seen is not None and close_to(dominant_color(seen.to_bytes()), BLUE)
    carol.attributes["llmrtc.vision"] = "False"
    assert await frames.freshest("carol", "camera") is None
    await frames.aclose()


async def test_sampling_rate_freshness_and_cache(tracks: list[PictureTrack]) -> None:
    frames = VideoFrames(VisionConfig(mode="turn", fps=2))
    cam = track(tracks, RED, "ONE")
    frames.add_track(cam.track, Person("d", "Dan"), CAMERA)
    await asyncio.sleep(1.6)
    assert 2 <= frames.stats["sampled"] <= 5  # ~2/s of the 30 fps delivered
    a = await frames.freshest("d", "camera")
    b = await frames.freshest("d", "camera")
    assert a is not None and a == b and frames.stats["encoded"] == 1  # encoded once per kept frame
    cam.show(picture(GREEN, "TWO"))
    await asyncio.sleep(1.0)  # more than one sampling interval
    c = await frames.freshest("d", "camera")
    assert c is not None and close_to(dominant_color(c.to_bytes()), GREEN)
    await frames.aclose()


async def test_stale_frames_are_not_used(tracks: list[PictureTrack]) -> None:
    clock = Clock()
    frames = VideoFrames(VisionConfig(mode="turn", max_age_s=5), clock=clock)
    frames.add_track(track(tracks, RED, "OLD").track, Person("e", "Eve"), CAMERA)
    await until(lambda: frames.stats["sampled"] >= 1)
    assert await frames.freshest("e", "camera") is not None
    clock.now += 6  # the clock is frozen for sampling too: no fresher frame is kept
    with pytest.raises(VisionUnavailableError, match="no recent frame"):
        await frames.look("e", "camera")
    await frames.aclose()


async def test_lookup_errors_name_what_exists(tracks: list[PictureTrack]) -> None:
    frames = VideoFrames(VisionConfig(mode="tool"))
    frames.add_track(track(tracks, RED, "X").track, Person("f-1", "Frank"), CAMERA)
    with pytest.raises(VisionUnavailableError, match=r"People with video: Frank"):
        await frames.look("Zed", "camera")
    with pytest.raises(VisionUnavailableError, match=r"shares no screen share \(their camera is available\)"):
        await frames.look("frank", "screen_share")
    assert frames.resolve("f-1") == "f-1" and frames.resolve("FRANK") == "f-1" and frames.resolve("x") is None
    await frames.aclose()


async def test_removal_releases_streams(tracks: list[PictureTrack]) -> None:
    frames = VideoFrames(VisionConfig(mode="turn"))
    gil = Person("gil", "Gil")
    cam, screen = track(tracks, RED, "C"), track(tracks, GREEN, "S", screen=True)
    frames.add_track(cam.track, gil, CAMERA)
    frames.add_track(screen.track, gil, SCREEN)
    frames.add_track(track(tracks, BLUE, "H").track, Person("hal", "Hal"), CAMERA)
    await until(lambda: all(frames.has_frame(i, s) for i, s in frames.tracks()))
    states = list(frames._tracks.values())
    assert await frames.remove_track(cam.track)
    assert not await frames.remove_track(cam.track)
    assert sorted(frames.tracks()) == [("gil", "screen_share"), ("hal", "camera")]
    assert await frames.freshest("gil", "camera") is None
    assert await frames.remove_participant("gil") == 1
    assert frames.tracks() == [("hal", "camera")]
    released = [s for s in states if s.identity == "gil"]
    assert all(s.task is not None and s.task.done() and s.latest is None for s in released)
    await frames.aclose()
    assert frames.tracks() == [] and all(s.task is not None and s.task.done() for s in states)
    assert not frames.add_track(cam.track, gil, CAMERA)  # closed
