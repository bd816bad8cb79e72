"""Video in: the freshest frame of each human's camera and screen share, encoded only when it is used.

:class:`VideoFrames` is one room's frame service. The worker hands it each subscribed camera or screen-share
track (:meth:`~VideoFrames.add_track`); a small task per track reads the track's ``rtc.VideoStream`` and keeps
one frame, the freshest, taken at most ``fps`` times a second (frames in between are dropped at once). A frame
is converted, downscaled to ``max_side`` and encoded (JPEG or PNG, with Pillow) only when it is asked for, on
one worker thread shared by the room's tracks, and the result is cached until a fresher frame is kept — so
video costs the room nothing on the event loop beyond the SDK's frame delivery, and nothing per frame that
no turn uses.

Frames are given out by :meth:`~VideoFrames.for_turn` (``VISION=turn``: a speaker's screen share first, then
camera) and :meth:`~VideoFrames.look` (``VISION=tool``), within a per-turn frame and byte budget and a
per-minute room budget; each frame given out is counted (``llmrtc.vision.frames``, tags ``mode``, ``source``)
and reported through ``on_look`` (the worker tells the room with a ``vision`` data message). Participants
whose ``llmrtc.vision`` attribute is ``"false"`` are never used: their frames are not even kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

from livekit import rtc

from llmrtc.metrics import MetricNames, MetricsAdapter, safe_metrics
from llmrtc.types import VisionAttachment
from llmrtc.vision import (
    VISION_ATTRIBUTE,
    Look,
    LookVia,
    VideoSource,
    VisionConfig,
    VisionUnavailableError,
    vision_allowed,
)

log = logging.getLogger("llmrtc.worker.video")

LookCallback = Callable[[str, VideoSource, LookVia, "str | None"], None]
"""``on_look(identity, source, via, turn_id)``: a frame of ``identity`` was given to the LLM."""

_SOURCES: dict[int, VideoSource] = {
    rtc.TrackSource.SOURCE_CAMERA: "camera",
    rtc.TrackSource.SOURCE_SCREENSHARE: "screen_share",
}
_ORDER: tuple[VideoSource, ...] = ("screen_share", "camera")
_ATTACHMENT_SOURCE: dict[VideoSource, Literal["camera", "screen"]] = {
    "camera": "camera",
    "screen_share": "screen",
}
_YUV = (rtc.VideoBufferType.I420, rtc.VideoBufferType.NV12)
_MINUTE_S = 60.0
_TURNS_REMEMBERED = 32


class Person(Protocol):
    """What the service reads of a participant (``rtc.RemoteParticipant`` is one; its attributes are live)."""

    @property
    def identity(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def attributes(self) -> Mapping[str, str]: ...


@dataclass(frozen=True, slots=True)
class Encoded:
    """One encoded frame."""

    data: bytes
    mime_type: str
    width: int
    height: int


def video_source(source: VideoSource | int) -> VideoSource | None:
    """``"camera"``/``"screen_share"`` for a track source (``rtc.TrackSource`` value or the name), else None."""
    if isinstance(source, str):
        return source if source in _ORDER else None
    return _SOURCES.get(int(source))


def encode_frame(
    frame: rtc.VideoFrame, *, max_side: int, image_format: str = "jpeg", quality: int = 80, rotation: int = 0
) -> Encoded:
    """``frame`` converted to RGB, rotated upright, downscaled to ``max_side`` and encoded (CPU-bound)."""
    from PIL import Image

    rgb = frame
    if frame.type != rtc.VideoBufferType.RGB24:
        if frame.type not in _YUV:  # libyuv goes to RGB24 from YUV only
            frame = frame.convert(rtc.VideoBufferType.I420)
        rgb = frame.convert(rtc.VideoBufferType.RGB24)
    image = Image.frombuffer("RGB", (rgb.width, rgb.height), bytes(rgb.data), "raw", "RGB", 0, 1)
    turns: dict[int, Image.Transpose] = {
        rtc.VideoRotation.VIDEO_ROTATION_90: Image.Transpose.ROTATE_270,
        rtc.VideoRotation.VIDEO_ROTATION_180: Image.Transpose.ROTATE_180,
        rtc.VideoRotation.VIDEO_ROTATION_270: Image.Transpose.ROTATE_90,
    }
    turn = turns.get(rotation)
    if turn is not None:  # WebRTC rotation is clockwise; PIL's ROTATE_n is counter-clockwise
        image = image.transpose(turn)
    longest = max(image.size)
    if longest > max_side:
        scale = max_side / longest
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    out = io.BytesIO()
    if image_format == "png":
        image.save(out, "PNG", optimize=False, compress_level=6)
        mime = "image/png"
    else:
        image.save(out, "JPEG", quality=quality, optimize=False)
        mime = "image/jpeg"
    return Encoded(out.getvalue(), mime, image.width, image.height)


@dataclass(slots=True)
class _Track:
    sid: str
    track: rtc.Track
    person: Person
    source: VideoSource
    stream: rtc.VideoStream
    task: asyncio.Task[None] | None = None
    latest: rtc.VideoFrameEvent | None = None
    latest_at: float = 0.0
    sampled_at: float = float("-inf")
    seq: int = 0
    cache: tuple[int, Encoded] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def identity(self) -> str:
        return self.person.identity


@dataclass(slots=True)
class _Usage:
    frames: int = 0
    bytes: int = 0


class VideoFrames:
    """One room's video frames: the freshest per camera and screen-share track, given out within budgets.

    Call :meth:`aclose` when the room ends. All methods run on the room's event loop.
    """

    def __init__(
        self,
        config: VisionConfig | None = None,
        *,
        metrics: MetricsAdapter | None = None,
        on_look: LookCallback | None = None,
        executor: Executor | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or VisionConfig()
        self.metrics = safe_metrics(metrics)
        self.on_look = on_look
        self._owns_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmrtc-video")
        self._clock = clock
        self._tracks: dict[tuple[str, VideoSource], _Track] = {}
        self._given: deque[float] = deque()
        self._turns: OrderedDict[str, _Usage] = OrderedDict()
        self._closed = False
        self._releasing: set[asyncio.Task[Any]] = set()
        self.stats: dict[str, int] = {"received": 0, "sampled": 0, "given": 0, "limited": 0, "encoded": 0}
        """Counters: frames delivered by the SDK, kept (sampled), given out, refused by a limit, encoded."""

    # ------------------------------------------------------------------------------ tracks

    def wants(self, participant: Person, source: VideoSource | int) -> bool:
        """Whether a track of ``participant`` from ``source`` is worth subscribing to."""
        return (
            self.config.mode != "off"
            and not self._closed
            and getattr(participant, "kind", None) != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
            and video_source(source) is not None
            and vision_allowed(dict(participant.attributes))
        )

    def add_track(self, track: rtc.Track, participant: Person, source: VideoSource | int) -> bool:
        """Start keeping the freshest frame of ``track`` (a camera or screen share of ``participant``).

        Returns False (and keeps nothing) for other sources, with ``VISION=off``, or after :meth:`aclose`.
        One track per participant and source is read: a second camera of the same person replaces the first.
        """
        kind = video_source(source)
        if kind is None or self.config.mode == "off" or self._closed:
            return False
        key = (participant.identity, kind)
        old = self._tracks.pop(key, None)
        if old is not None:
            self._spawn_release(old)
        stream = rtc.VideoStream(track, capacity=2)
        state = _Track(track.sid, track, participant, kind, stream)
        state.task = asyncio.create_task(self._pump(state), name=f"video-{participant.identity}-{kind}")
        self._tracks[key] = state
        log.info("video: keeping %s of %s (track %s)", kind, participant.identity, track.sid)
        return True

    async def remove_track(self, track: rtc.Track | str) -> bool:
        """Stop reading ``track`` (the track or its sid) and drop its frames; returns whether it was there."""
        for key, state in list(self._tracks.items()):
            if state.track is track or (isinstance(track, str) and state.sid == track):
                del self._tracks[key]
                await self._release(state)
                return True
        return False

    async def remove_participant(self, identity: str) -> int:
        """Release every track of ``identity``; returns how many there were."""
        keys = [key for key in self._tracks if key[0] == identity]
        for key in keys:
            state = self._tracks.pop(key, None)
            if state is not None:
                await self._release(state)
        return len(keys)

    def follow(self, room: rtc.Room) -> Callable[[], None]:
        """Keep the video of ``room``'s humans: the tracks already subscribed, then follow subscribe,
        unsubscribe, disconnect and ``llmrtc.vision`` attribute changes (a participant who disallows vision
        has their tracks released; one who allows it again is read again).

        Returns a function that stops following (the tracks stay until removed or :meth:`aclose`).
        """

        def subscribed(
            track: rtc.Track, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
        ) -> None:
            if track.kind == rtc.TrackKind.KIND_VIDEO and self.wants(participant, publication.source):
                self.add_track(track, participant, publication.source)

        def unsubscribed(
            track: rtc.Track, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
        ) -> None:
            self._spawn(self.remove_track(track))

        def left(participant: rtc.RemoteParticipant) -> None:
            self._spawn(self.remove_participant(participant.identity))

        def attributes(changed: dict[str, str], participant: rtc.Participant) -> None:
            if VISION_ATTRIBUTE not in changed or not isinstance(participant, rtc.RemoteParticipant):
                return
            if not vision_allowed(dict(participant.attributes)):
                self._spawn(self.remove_participant(participant.identity))
                return
            for publication in participant.track_publications.values():
                kind = video_source(publication.source)
                known = kind is not None and (participant.identity, kind) in self._tracks
                if publication.track is not None and publication.subscribed and not known:
                    subscribed(publication.track, publication, participant)

        handlers: dict[str, Callable[..., None]] = {
            "track_subscribed": subscribed,
            "track_unsubscribed": unsubscribed,
            "participant_disconnected": left,
            "participant_attributes_changed": attributes,
        }
        for event, handler in handlers.items():
            room.on(event, handler)  # type: ignore[arg-type]
        for participant in room.remote_participants.values():
            for publication in participant.track_publications.values():
                if publication.track is not None and publication.subscribed:
                    subscribed(publication.track, publication, participant)

        def stop() -> None:
            for event, handler in handlers.items():
                room.off(event, handler)  # type: ignore[arg-type]

        return stop

    def subscribe(self, room: rtc.Room) -> Callable[[], None]:
        """Subscribe to the video :meth:`wants` in ``room`` (for a room joined with audio-only
        auto-subscription): each wanted camera and screen share, now and when published; when a participant
        disallows vision their video is unsubscribed, and subscribed again when they allow it.

        Use with :meth:`follow`, which reads the subscribed tracks. Returns a function that stops it.
        """

        def sync(participant: rtc.RemoteParticipant) -> None:
            for publication in participant.track_publications.values():
                if publication.kind != rtc.TrackKind.KIND_VIDEO or video_source(publication.source) is None:
                    continue
                wanted = self.wants(participant, publication.source)
                if wanted != publication.subscribed:
                    publication.set_subscribed(wanted)

        def published(publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant) -> None:
            if publication.kind == rtc.TrackKind.KIND_VIDEO and self.wants(participant, publication.source):
                publication.set_subscribed(True)

        def attributes(changed: dict[str, str], participant: rtc.Participant) -> None:
            if VISION_ATTRIBUTE in changed and isinstance(participant, rtc.RemoteParticipant):
                sync(participant)

        handlers: dict[str, Callable[..., None]] = {
            "track_published": published,
            "participant_attributes_changed": attributes,
        }
        for event, handler in handlers.items():
            room.on(event, handler)  # type: ignore[arg-type]
        for participant in room.remote_participants.values():
            sync(participant)

        def stop() -> None:
            for event, handler in handlers.items():
                room.off(event, handler)  # type: ignore[arg-type]

        return stop

    def tracks(self) -> list[tuple[str, VideoSource]]:
        """``(identity, source)`` of every track being read."""
        return [(t.identity, t.source) for t in self._tracks.values()]

    def has_frame(self, identity: str, source: VideoSource) -> bool:
        """Whether a recent frame of ``identity``'s ``source`` is kept (cheap: nothing is encoded)."""
        state = self._track(identity, source)
        return (
            state is not None
            and state.latest is not None
            and self._clock() - state.latest_at <= self.config.max_age_s
        )

    def resolve(self, participant: str) -> str | None:
        """The identity of the participant with video called ``participant`` (identity, or name, any case)."""
        wanted = participant.strip()
        people = {t.identity: t.person for t in self._tracks.values()}
        if wanted in people:
            return wanted
        folded = wanted.casefold()
        for identity, person in people.items():
            if identity.casefold() == folded or (person.name or "").casefold() == folded:
                return identity
        return None

    # ------------------------------------------------------------------------------ frames

    async def freshest(self, identity: str, source: VideoSource) -> VisionAttachment | None:
        """The freshest frame of ``identity``'s ``source``, encoded; None when there is none (or not allowed).

        No budget is charged and nothing is reported: this is a peek (previews, tests).
        """
        state = self._track(identity, source)
        if state is None or not vision_allowed(dict(state.person.attributes)):
            return None
        encoded = await self._encoded(state)
        return None if encoded is None else self._attachment(state, encoded)

    async def for_turn(
        self, identities: Sequence[str], *, turn_id: str | None = None
    ) -> list[VisionAttachment]:
        """Frames for a turn of ``identities`` (usually the speaker): for each, screen share then camera.

        Stops at the per-turn frame and byte budget and the per-minute budget; frames that do not fit are
        skipped (logged and counted in :attr:`stats`). Each frame given is counted (``mode=turn``) and
        reported through ``on_look``.
        """
        out: list[VisionAttachment] = []
        usage = self._usage(turn_id)
        for identity in identities:
            for source in _ORDER:
                state = self._track(identity, source)
                if state is None or not vision_allowed(dict(state.person.attributes)):
                    continue
                try:
                    look = await self._give(state, usage, turn_id, "turn")
                except VisionUnavailableError as exc:
                    log.info(
                        "video: turn %s goes without %s's %s: %s", turn_id, identity, source, exc.message
                    )
                    continue
                out.append(look.attachment)
        return out

    async def look(
        self, participant: str, source: VideoSource, *, turn_id: str | None = None, via: LookVia = "tool"
    ) -> Look:
        """The freshest frame of ``participant`` (name or identity) and ``source``, within the budgets.

        Raises :class:`~llmrtc.vision.VisionUnavailableError` saying why there is none (unknown person, no
        such track, vision not allowed, no frame yet, over a limit).
        """
        identity = self.resolve(participant)
        if identity is None:
            names = sorted({t.person.name or t.identity for t in self._tracks.values()})
            known = f" People with video: {', '.join(names)}." if names else " Nobody shares video."
            raise VisionUnavailableError(f"no participant called {participant!r} shares video.{known}")
        state = self._track(identity, source)
        if state is None:
            have = [t.source for t in self._tracks.values() if t.identity == identity]
            other = f" (their {have[0].replace('_', ' ')} is available)" if have else ""
            raise VisionUnavailableError(f"{participant} shares no {source.replace('_', ' ')}{other}")
        if not vision_allowed(dict(state.person.attributes)):
            raise VisionUnavailableError(f"{participant} does not allow the assistant to see their video")
        return await self._give(state, self._usage(turn_id), turn_id, via)

    async def aclose(self) -> None:
        """Release every track and the encoding thread."""
        self._closed = True
        states = list(self._tracks.values())
        self._tracks.clear()
        for state in states:
            await self._release(state)
        if self._releasing:
            await asyncio.gather(*self._releasing, return_exceptions=True)
        if self._owns_executor and isinstance(self._executor, ThreadPoolExecutor):
            self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------------------ internals

    def _track(self, identity: str, source: VideoSource) -> _Track | None:
        return self._tracks.get((identity, source))

    async def _pump(self, state: _Track) -> None:
        """Keep the freshest frame, sampled at most ``fps`` times a second; drop the rest at once."""
        interval = 1.0 / self.config.fps
        try:
            async for event in state.stream:
                self.stats["received"] += 1
                now = self._clock()
                if now - state.sampled_at < interval:
                    continue
                state.sampled_at = now
                if not vision_allowed(dict(state.person.attributes)):
                    state.latest = None
                    state.cache = None
                    continue
                state.latest = event
                state.latest_at = now
                state.seq += 1
                self.stats["sampled"] += 1
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("video: reading %s's %s failed", state.identity, state.source)

    async def _encoded(self, state: _Track) -> Encoded | None:
        async with state.lock:
            event, seq = state.latest, state.seq
            if event is None or self._clock() - state.latest_at > self.config.max_age_s:
                return None
            if state.cache is not None and state.cache[0] == seq:
                return state.cache[1]
            cfg = self.config
            loop = asyncio.get_running_loop()
            encoded = await loop.run_in_executor(
                self._executor,
                lambda: encode_frame(
                    event.frame,
                    max_side=cfg.max_side,
                    image_format=cfg.image_format,
                    quality=cfg.jpeg_quality,
                    rotation=int(cast(int, event.rotation)),
                ),
            )
            self.stats["encoded"] += 1
            if state.seq == seq and state.latest is not None:
                state.cache = (seq, encoded)
            return encoded

    def _attachment(self, state: _Track, encoded: Encoded) -> VisionAttachment:
        return VisionAttachment.from_bytes(
            encoded.data,
            mime_type=encoded.mime_type,
            source=_ATTACHMENT_SOURCE[state.source],
            timestamp_ms=int(time.time() * 1000 - (self._clock() - state.latest_at) * 1000),
        )

    def _usage(self, turn_id: str | None) -> _Usage:
        """The budget use of ``turn_id`` (a fresh one, not remembered, when there is no turn id)."""
        if turn_id is None:
            return _Usage()
        usage = self._turns.get(turn_id)
        if usage is None:
            usage = self._turns[turn_id] = _Usage()
            while len(self._turns) > _TURNS_REMEMBERED:
                self._turns.popitem(last=False)
        return usage

    def _refuse(self, reason: str) -> VisionUnavailableError:
        self.stats["limited"] += 1
        return VisionUnavailableError(reason)

    async def _give(self, state: _Track, usage: _Usage, turn_id: str | None, via: LookVia) -> Look:
        cfg = self.config
        now = self._clock()
        while self._given and now - self._given[0] >= _MINUTE_S:
            self._given.popleft()
        if len(self._given) >= cfg.max_per_minute:
            wait = _MINUTE_S - (now - self._given[0])
            raise self._refuse(
                f"the limit of {cfg.max_per_minute} images a minute is reached; try in {wait:.0f} s"
            )
        if usage.frames >= cfg.max_frames_per_turn:
            raise self._refuse(f"the limit of {cfg.max_frames_per_turn} images per turn is reached")
        encoded = await self._encoded(state)
        if encoded is None:
            raise VisionUnavailableError(
                f"no recent frame from {state.person.name or state.identity}'s {state.source.replace('_', ' ')}"
            )
        if usage.bytes + len(encoded.data) > cfg.max_bytes_per_turn:
            raise self._refuse(
                f"the image would exceed the per-turn budget of {cfg.max_bytes_per_turn} bytes"
            )
        usage.frames += 1
        usage.bytes += len(encoded.data)
        self._given.append(self._clock())
        self.stats["given"] += 1
        self.metrics.increment(MetricNames.VISION_FRAMES, 1, {"mode": via, "source": state.source})
        if self.on_look is not None:
            try:
                self.on_look(state.identity, state.source, via, turn_id)
            except Exception:
                log.exception("video: on_look failed")
        return Look(
            identity=state.identity,
            name=state.person.name or state.identity,
            source=state.source,
            attachment=self._attachment(state, encoded),
            width=encoded.width,
            height=encoded.height,
        )

    def _spawn_release(self, state: _Track) -> None:
        self._spawn(self._release(state))

    def _spawn(self, work: Coroutine[Any, Any, object]) -> None:
        task = asyncio.create_task(work)
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _release(self, state: _Track) -> None:
        state.latest = None
        state.cache = None
        if state.task is not None:
            state.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await state.task
        try:
            await asyncio.wait_for(state.stream.aclose(), 5)
        except Exception:
            log.warning(
                "video: closing the stream of %s's %s failed", state.identity, state.source, exc_info=True
            )
        log.info("video: released %s of %s (track %s)", state.source, state.identity, state.sid)


__all__ = ["Encoded", "LookCallback", "Person", "VideoFrames", "encode_frame", "video_source"]
