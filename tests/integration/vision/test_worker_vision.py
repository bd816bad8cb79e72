"""The worker sees the room: dev server, ``python -m worker dev``, official-SDK humans publishing VP8 pictures.

Two workers start once for the module (named dispatch): ``VISION=turn`` (each turn carries the speaker's
freshest frame, one per turn, so a screen share replaces the camera) and ``VISION=tool`` (the LLM calls
``look``). Humans ask by voice ("What do you see?", an espeak fixture); the fake OpenAI-compatible LLM
records the images it receives, which are decoded back to the picture's colour and checked against the
budget. Bob sets ``llmrtc.vision=false``: his video is never subscribed, read or sent.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from livekit import api, rtc

from signalling.devserver.server import DevServer
from tests.fixtures import fixture_path
from tests.integration.vision.media import (
    BLUE,
    GREEN,
    RED,
    PictureTrack,
    close_to,
    dominant_color,
    image_size,
    picture,
)
from tests.integration.worker.harness import (
    API_KEY,
    API_SECRET,
    BackgroundLoop,
    Human,
    WorkerProcess,
    provider_env,
)
from tests.integration.worker.openai_fake import OpenAIFake, ToolCallReply

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]

QUESTION = "What do you see?"
MAX_SIDE = 512
MAX_BYTES = 150_000
TURN_AGENT, TOOL_AGENT = "vision-turn", "vision-tool"
NO_VISION = {"llmrtc.vision": "false"}


@dataclass
class Rig:
    dev: DevServer
    fake: OpenAIFake
    workers: dict[str, WorkerProcess]
    bg: BackgroundLoop

    def agent_video(self, room: str) -> set[tuple[str, str]]:
        """``(publisher identity, track name)`` of the video the agent is subscribed to, on the server."""

        async def read() -> set[tuple[str, str]]:
            state = self.dev.rooms.get(room)
            if state is None:
                return set()
            tracks = {
                sid: (p.identity, t) for p in state.participants.values() for sid, t in p.tracks.items()
            }
            out: set[tuple[str, str]] = set()
            for agent in state.participants.values():
                if agent.is_agent and agent.session is not None:
                    for sid in getattr(agent.session, "subscriptions", {}):  # the signal handler's
                        owner, track = tracks.get(sid, ("", None))
                        if track is not None and track.kind == "video":
                            out.add((owner, track.name))
            return out

        return self.bg.run(read())


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    bg = BackgroundLoop()
    dev = DevServer("127.0.0.1", 0, API_KEY, API_SECRET)
    fake = OpenAIFake(default_transcript=QUESTION, default_reply="I see a picture.")
    bg.run(dev.start())
    bg.run(fake.start())
    workers: dict[str, WorkerProcess] = {}
    try:
        for agent, mode in ((TURN_AGENT, "turn"), (TOOL_AGENT, "tool")):
            env = {
                "LIVEKIT_URL": dev.url,
                "LIVEKIT_API_KEY": API_KEY,
                "LIVEKIT_API_SECRET": API_SECRET,
                "AGENT_NAME": agent,
                "VAD_MIN_SILENCE_MS": "500",
                "WORKER_EXECUTOR": "thread",
                "VISION": mode,
                "VISION_MAX_SIDE": str(MAX_SIDE),
                "VISION_MAX_BYTES_PER_TURN": str(MAX_BYTES),
                "VISION_MAX_FRAMES_PER_TURN": "1",
                **provider_env(fake),
            }
            log: Path = tmp_path_factory.mktemp(agent) / "worker.log"
            workers[agent] = WorkerProcess(env, log).start()  # both start at once
        for proc in workers.values():
            proc.wait_registered(90)
        yield Rig(dev, fake, workers, bg)
    finally:
        for agent, proc in workers.items():
            proc.stop()
            print(f"---- {agent}\n{proc.output()[-5000:]}")
        bg.run(fake.stop())
        bg.run(dev.stop())
        bg.close()


def dispatch_token(identity: str, name: str, room: str, agent: str, attributes: dict[str, str] | None) -> str:
    config = api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=agent)])
    access = (
        api.AccessToken(API_KEY, API_SECRET)
        .with_identity(identity)
        .with_name(name)
        .with_grants(api.VideoGrants(room_join=True, room=room, can_update_own_metadata=True))
        .with_room_config(config)
    )
    if attributes:
        access = access.with_attributes(attributes)
    return access.to_jwt()


class Room:
    """The humans of one test room (each with a microphone and pictures) and what they published."""

    def __init__(self, rig: Rig, name: str, agent: str) -> None:
        self.rig, self.name, self.agent = rig, name, agent
        self.humans: list[Human] = []
        self.tracks: list[PictureTrack] = []

    async def join(self, identity: str, name: str, attributes: dict[str, str] | None = None) -> Human:
        jwt = dispatch_token(identity, name, self.name, self.agent, attributes)
        human = await Human(self.rig.dev.url, self.name, identity, name, jwt=jwt).join()
        self.humans.append(human)

        def no_video(track: rtc.Track, publication: rtc.RemoteTrackPublication, *_: object) -> None:
            if track.kind == rtc.TrackKind.KIND_VIDEO:  # humans need not watch each other: less CPU
                publication.set_subscribed(False)

        human.room.on("track_subscribed", no_video)
        return human

    async def show(
        self, human: Human, color: tuple[int, int, int], word: str, *, screen: bool = False
    ) -> None:
        """Publish a 960x540 VP8 picture at 5 fps as ``human``'s camera (or screen share)."""
        source = rtc.TrackSource.SOURCE_SCREENSHARE if screen else rtc.TrackSource.SOURCE_CAMERA
        track = PictureTrack(picture(color, word, 960, 540), fps=5, source=source, name=word.lower())
        self.tracks.append(track)
        await track.publish(human.room)

    def log(self) -> str:
        return self.rig.workers[self.agent].output()

    async def wait_video(self, expected: set[tuple[str, str]], within: float = 20.0) -> None:
        """Until the agent's video subscriptions on the server are exactly ``expected``."""
        deadline = time.monotonic() + within
        while (now := self.rig.agent_video(self.name)) != expected:
            if time.monotonic() > deadline:
                raise AssertionError(f"the agent subscribes to {now}, expected {expected}")
            await asyncio.sleep(0.2)

    async def wait_kept(self, identity: str, source: str, within: float = 30.0) -> None:
        """Until the worker reads ``identity``'s ``source`` track (its log says so)."""
        needle = f"video: keeping {source} of {identity} "
        deadline = time.monotonic() + within
        while needle not in self.log():
            if time.monotonic() > deadline:
                raise AssertionError(f"the worker never read {identity}'s {source}:\n{self.log()[-3000:]}")
            await asyncio.sleep(0.2)

    async def ask(self, human: Human) -> tuple[int, dict[str, Any]]:
        """``human`` asks the question by voice; returns the index of the turn's first LLM request and its
        ``turn_end``."""
        first = len(self.rig.fake.chat_requests)
        start = len(human.events)
        await human.say(fixture_path("see_16k"))

        def mine(e: dict[str, Any]) -> bool:
            return e["type"] == "turn_start" and human.identity in e["participant_identities"]

        _, began = await human.wait_for(mine, within=60, start=start)
        tid = began["turn_id"]
        _, end = await human.wait_for(lambda e: e["type"] == "turn_end" and e["turn_id"] == tid, 60, start)
        assert end["outcome"] == "completed", end
        turns = [e["turn_id"] for _, e in human.events[start:] if mine(e)]
        heard = [e["text"] for _, e in human.events[start:] if e["type"] == "transcript"]
        assert turns == [tid], f"one question, one turn: {heard}"
        return first, end

    async def close(self) -> None:
        for track in self.tracks:
            await track.aclose()
        for human in self.humans:
            await human.leave()


@pytest.fixture
async def rooms(rig: Rig) -> Any:
    made: list[Room] = []

    def make(name: str, agent: str) -> Room:
        room = Room(rig, name, agent)
        made.append(room)
        return room

    yield make
    for room in made:
        await room.close()


def images_of(fake: OpenAIFake, request: int) -> list[bytes]:
    return [base64.b64decode(url.split(",", 1)[1]) for i, url in fake.images if i == request]


def user_text(body: dict[str, Any]) -> str:
    last = [m for m in body["messages"] if m["role"] == "user"][-1]
    content = last["content"]
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content)


def check_picture(data: bytes, color: tuple[int, int, int]) -> None:
    assert data[:3] == b"\xff\xd8\xff", "a JPEG"
    width, height = image_size(data)
    assert max(width, height) <= MAX_SIDE and abs(width / height - 16 / 9) < 0.03, (width, height)
    assert len(data) <= MAX_BYTES
    assert close_to(dominant_color(data), color), dominant_color(data)


def vision_events(human: Human) -> list[dict[str, Any]]:
    return [{k: e[k] for k in ("participant_identity", "source", "via")} for e in human.of_type("vision")]


async def test_turn_mode_sends_the_speakers_camera_then_their_screen_share(rig: Rig, rooms: Any) -> None:
    room: Room = rooms("vision-turn-1", TURN_AGENT)
    fake = rig.fake
    alice = await room.join("alice", "Alice")
    bob = await room.join("bob", "Bob", NO_VISION)
    await alice.wait_agent_state("listening")
    await room.show(alice, RED, "HELLO")
    await room.show(bob, BLUE, "SECRET")
    await room.wait_kept("alice", "camera")
    await room.wait_video({("alice", "hello")})  # Bob's camera is not even subscribed

    # Alice asks: her camera rides along with her turn
    first, end = await room.ask(alice)
    request = fake.chat_requests[first]
    assert QUESTION in user_text(request)
    got = images_of(fake, first)
    assert len(got) == 1
    check_picture(got[0], RED)
    assert vision_events(alice) == [{"participant_identity": "alice", "source": "camera", "via": "turn"}]
    assert alice.of_type("vision")[0]["turn_id"] == end["turn_id"]

    # Bob disallows vision: his turn carries no image, his camera was never read
    bob_first, _ = await room.ask(bob)
    assert not [i for i, _ in fake.images if i >= bob_first]
    assert "keeping camera of bob" not in room.log()
    assert len(bob.of_type("vision")) == 1  # only Alice's look, from before

    # Alice shares her screen: it takes precedence over her camera (one frame per turn here)
    await room.show(alice, GREEN, "SCREEN", screen=True)
    await room.wait_kept("alice", "screen_share")
    again, _ = await room.ask(alice)
    got = images_of(fake, again)
    assert len(got) == 1
    check_picture(got[0], GREEN)
    assert vision_events(alice)[-1] == {
        "participant_identity": "alice",
        "source": "screen_share",
        "via": "turn",
    }
    # history keeps a note, not the bytes: the earlier turn's image is not sent again
    assert [m for m in fake.chat_requests[again]["messages"] if "image seen, not kept" in str(m["content"])]

    # Alice changes her mind during the call: her video is unsubscribed at once and her turns carry no image
    await alice.room.local_participant.set_attributes(NO_VISION)
    await room.wait_video(set())
    looks = len(alice.of_type("vision"))
    last, _ = await room.ask(alice)
    assert not [i for i, _ in fake.images if i >= last] and len(alice.of_type("vision")) == looks


async def test_look_tool_returns_the_right_participants_frame(rig: Rig, rooms: Any) -> None:
    room: Room = rooms("vision-tool-1", TOOL_AGENT)
    fake = rig.fake
    alice = await room.join("alice", "Alice")
    carol = await room.join("carol", "Carol")
    bob = await room.join("bob", "Bob", NO_VISION)
    await alice.wait_agent_state("listening")
    await room.show(alice, RED, "ALICE")
    await room.show(carol, BLUE, "CAROL")
    await room.show(bob, GREEN, "BOB")
    await room.wait_kept("carol", "camera")
    await room.wait_kept("alice", "camera")
    await room.wait_video({("alice", "alice"), ("carol", "carol")})

    # Alice asks what Carol shows: the LLM looks at Carol's camera and gets her frame
    fake.replies.extend([ToolCallReply("look", {"participant": "Carol", "source": "camera"}), "A blue card."])
    first, end = await room.ask(alice)
    ask, answer = fake.chat_requests[first], fake.chat_requests[first + 1]
    assert "look" in [t["function"]["name"] for t in ask["tools"]]
    assert not images_of(fake, first)  # tool mode: a turn costs no image until the LLM looks
    tool_message = next(m for m in answer["messages"] if m["role"] == "tool")
    assert tool_message["content"].startswith("Looking at Carol's camera (")
    got = images_of(fake, first + 1)
    assert len(got) == 1
    check_picture(got[0], BLUE)
    assert vision_events(alice) == [{"participant_identity": "carol", "source": "camera", "via": "tool"}]
    assert alice.of_type("vision")[0]["turn_id"] == end["turn_id"]

    # the LLM asks for Bob, who disallows vision: an error result, no image; his video was never read
    fake.replies.extend([ToolCallReply("look", {"participant": "Bob", "source": "camera"}), "I cannot."])
    first, _ = await room.ask(alice)
    answer = fake.chat_requests[first + 1]
    tool_message = next(m for m in reversed(answer["messages"]) if m["role"] == "tool")
    assert "vision_unavailable" in tool_message["content"] and "Bob" in tool_message["content"]
    assert not images_of(fake, first) and not images_of(fake, first + 1)
    assert "keeping camera of bob" not in room.log()
    assert len(alice.of_type("vision")) == 1
