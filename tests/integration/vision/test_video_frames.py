"""worker.video in a real room: the development server, official-SDK participants publishing VP8 pictures.

The "agent" here is a plain SDK participant running :class:`worker.video.VideoFrames` on its room (what the
worker does); humans publish a camera and a screen share showing a solid colour with a large word.
"""

from __future__ import annotations

import pytest

from llmrtc.metrics import InMemoryMetrics, MetricNames
from llmrtc.vision import VisionConfig, VisionUnavailableError
from tests.integration.vision.conftest import Joiner, wait_for
from tests.integration.vision.media import (
    BLUE,
    GREEN,
    RED,
    close_to,
    dominant_color,
    image_size,
    picture,
    picture_track,
)
from worker.video import VideoFrames

pytestmark = pytest.mark.integration

CONFIG = VisionConfig(mode="turn", max_side=512, max_bytes_per_turn=200_000)


def colors(attachments: list) -> list[tuple[int, int, int]]:  # type: ignore[type-arg]
    return [dominant_color(a.to_bytes()) for a in attachments]


async def test_frames_decode_to_the_picture_screen_first_and_are_released(join: Joiner) -> None:
    agent = await join("agent")
    metrics = InMemoryMetrics()
    looks: list[tuple[object, ...]] = []
    frames = VideoFrames(CONFIG, metrics=metrics, on_look=lambda *a: looks.append(a))
    stop = frames.follow(agent)
    alice = await join("alice-1", name="Alice")
    try:
        async with picture_track(picture(RED, "CAMERA", 1280, 720), room=alice, fps=10) as camera:
            await wait_for(lambda: frames.has_frame("alice-1", "camera"), what="alice's camera frame")
            got = await frames.for_turn(["alice-1"], turn_id="t1")
            assert [a.source for a in got] == ["camera"]
            assert close_to(colors(got)[0], RED), colors(got)
            data = got[0].to_bytes()
            assert data[:3] == b"\xff\xd8\xff" and max(image_size(data)) <= 512 and len(data) <= 200_000
            assert looks == [("alice-1", "camera", "turn", "t1")]

            async with picture_track(picture(GREEN, "SCREEN", 1280, 720), room=alice, screen=True, fps=5):
                await wait_for(
                    lambda: frames.has_frame("alice-1", "screen_share"), what="alice's screen frame"
                )
                both = await frames.for_turn(["alice-1"], turn_id="t2")
                assert [a.source for a in both] == ["screen", "camera"]
                assert close_to(colors(both)[0], GREEN) and close_to(colors(both)[1], RED), colors(both)
                seen = await frames.look("alice", "screen_share", turn_id="t3")
                assert seen.what == "Alice's screen share" and close_to(
                    dominant_color(seen.attachment.to_bytes()), GREEN
                )
            # the screen share was unpublished: its stream is released, the camera stays
            await wait_for(
                lambda: frames.tracks() == [("alice-1", "camera")], what="the screen share released"
            )
            assert [a.source for a in await frames.for_turn(["alice-1"], turn_id="t4")] == ["camera"]
            assert camera.frames > 0
        await wait_for(lambda: frames.tracks() == [], what="the camera released")
        with pytest.raises(VisionUnavailableError):
            await frames.look("Alice", "camera")
        assert metrics.counter(MetricNames.VISION_FRAMES, {"mode": "turn"}) == 4
        assert metrics.counter(MetricNames.VISION_FRAMES, {"mode": "tool"}) == 1
    finally:
        stop()
        await frames.aclose()


async def test_participant_who_disallows_vision_never_yields_frames(join: Joiner) -> None:
    agent = await join("agent")
    frames = VideoFrames(CONFIG)
    frames.follow(agent)
    carol = await join("carol", name="Carol", attributes={"llmrtc.vision": "false"})
    dave = await join("dave", name="Dave")
    try:
        async with (
            picture_track(picture(BLUE, "PRIVATE", 640, 480), room=carol, fps=10),
            picture_track(picture(RED, "OK", 640, 480), room=dave, fps=10),
        ):
            await wait_for(lambda: frames.has_frame("dave", "camera"), what="dave's frame")
            # carol's track reached the agent like dave's, but is never read
            subscribed = {p.identity: len(p.track_publications) for p in agent.remote_participants.values()}
            assert subscribed["carol"] == 1
            assert frames.tracks() == [("dave", "camera")]
            mixed = await frames.for_turn(["carol", "dave"], turn_id="t1")
            assert len(mixed) == 1 and close_to(colors(mixed)[0], RED)  # dave's only
            assert await frames.for_turn(["carol"], turn_id="t3") == []
            assert await frames.freshest("carol", "camera") is None
            with pytest.raises(VisionUnavailableError):
                await frames.look("Carol", "camera")
            # carol allows it: her camera is read from then on; she disallows it again: released at once
            await carol.local_participant.set_attributes({"llmrtc.vision": "true"})
            await wait_for(lambda: frames.has_frame("carol", "camera"), what="carol's frame once allowed")
            assert close_to(colors(await frames.for_turn(["carol"], turn_id="t4"))[0], BLUE)
            await carol.local_participant.set_attributes({"llmrtc.vision": "false"})
            await wait_for(lambda: ("carol", "camera") not in frames.tracks(), what="carol's track released")
            assert await frames.for_turn(["carol"], turn_id="t5") == []
        # dave leaves the room: everything of his is released
        await dave.disconnect()
        await wait_for(lambda: frames.tracks() == [], what="dave's track released")
    finally:
        await frames.aclose()
