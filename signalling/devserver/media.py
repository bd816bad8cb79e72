"""Media forwarding: published tracks relayed to subscribers as encoded packets (no transcoding).

aiortc decodes everything it receives and encodes everything it sends. The development server only forwards,
so :func:`install_pass_through` swaps aiortc's receive-side decoders for one that hands the reassembled encoded
frame on as an ``av.Packet``; aiortc's senders already packetize ``av.Packet`` objects without encoding. The
swap is process-wide for aiortc *receivers* (the server is the only aiortc user in its process); it is installed
by :class:`~signalling.devserver.server.DevServer` and undone when the last server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import av
from aioice import ice as _aioice
from aiortc import MediaStreamTrack, RTCRtpReceiver
from aiortc import rtcrtpreceiver as _aiortc_receiver
from aiortc.codecs import get_decoder as _codecs_get_decoder
from aiortc.codecs.base import Decoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from livekit.protocol import models

logger = logging.getLogger(__name__)

_QUEUE_LIMIT = 200
_KEYFRAME_INTERVAL_S = 2.0


class PassThroughDecoder(Decoder):
    """An aiortc decoder that returns the encoded frame as an ``av.Packet`` (timestamps kept)."""

    def __init__(self, clock_rate: int) -> None:
        self._time_base = fractions.Fraction(1, clock_rate)

    def decode(self, encoded_frame: JitterFrame) -> list[Any]:
        packet = av.Packet(encoded_frame.data)
        packet.pts = encoded_frame.timestamp
        packet.dts = encoded_frame.timestamp
        packet.time_base = self._time_base
        return [packet]


_original_get_decoder = _codecs_get_decoder
_installs = 0


def _pass_through_get_decoder(codec: RTCRtpCodecParameters) -> Decoder:
    if codec.mimeType.lower() in ("audio/opus", "video/vp8", "video/h264"):
        return PassThroughDecoder(codec.clockRate)
    return _original_get_decoder(codec)


def install_pass_through() -> None:
    """Make aiortc receivers in this process hand on encoded frames (reference counted)."""
    global _installs
    _installs += 1
    _aiortc_receiver.get_decoder = _pass_through_get_decoder  # type: ignore[attr-defined]


def uninstall_pass_through() -> None:
    """Undo one :func:`install_pass_through`; the original decoders return with the last one."""
    global _installs
    _installs = max(0, _installs - 1)
    if _installs == 0:
        _aiortc_receiver.get_decoder = _original_get_decoder  # type: ignore[attr-defined]


CONSENT_CHECKS_MISSED_ALLOWED = 24
"""aioice closes a connection after this many consent checks in a row (one every ~5 s) got no answer."""


def tolerate_late_consent_answers() -> None:
    """Let a busy server keep its clients: a connection ends after ~2 minutes of unanswered consent checks,
    not 30 s.

    aioice (RFC 7675) checks consent every ~5 s with one request, no retransmission, and 0.5 s for the answer;
    6 misses in a row close the connection. asyncio reads one datagram per socket per turn of the event loop,
    so when the relay falls behind, the answer waits behind the media queued on the same socket, arrives
    "late", and a healthy client is cut off after 30 s of lag (seen with the server's loop starved of CPU).
    Consent is not what cleans up here: a client that goes away closes its signal connection, which ends
    its session. Process-wide, like :func:`install_pass_through` (the server is the only aiortc user).
    """
    _aioice.CONSENT_FAILURES = max(_aioice.CONSENT_FAILURES, CONSENT_CHECKS_MISSED_ALLOWED)


def is_vp8_keyframe(data: bytes) -> bool:
    """A VP8 frame is a key frame when bit 0 of its first byte is 0 (RFC 6386, 9.1)."""
    return bool(data) and (data[0] & 0x01) == 0


class RelayedTrack(MediaStreamTrack):
    """One subscriber's copy of a published track; yields encoded ``av.Packet`` objects."""

    def __init__(self, relay: TrackRelay, kind: str, track_sid: str) -> None:
        super().__init__()
        self.kind = kind
        self._id = track_sid
        self._relay = relay
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._need_keyframe = kind == "video"
        self._started = False
        self._enabled = True
        self.on_start: Callable[[], None] | None = None
        """Called once, when the subscriber's sender starts pulling (its transport is up): subscribed."""

    def set_enabled(self, enabled: bool) -> None:
        """Pause or resume forwarding (the subscriber's track settings); video resumes at a key frame."""
        if enabled and not self._enabled and self.kind == "video":
            self._need_keyframe = True
            self._relay.request_keyframe()
        self._enabled = enabled

    def push(self, packet: Any) -> None:
        """Queue one packet (None ends the track)."""
        if packet is not None and not self._enabled:
            return
        if packet is not None and self._need_keyframe:
            if not is_vp8_keyframe(bytes(packet)) and self._relay.mime_type.lower() == "video/vp8":
                return
            self._need_keyframe = False
        if self._queue.qsize() >= _QUEUE_LIMIT:
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
            if self.kind == "video":
                self._need_keyframe = True
                self._relay.request_keyframe()
        self._queue.put_nowait(packet)

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        if not self._started:
            # The sender starts once DTLS is up; what queued before is stale: audio keeps only the newest
            # packets, video waits for a fresh key frame.
            self._started = True
            if self.on_start is not None:
                self.on_start()
            keep = 3 if self.kind == "audio" else 0
            while self._queue.qsize() > keep:
                stale = self._queue.get_nowait()
                if stale is None:
                    self._queue.put_nowait(None)
                    break
            if self.kind == "video":
                self._need_keyframe = True
                self._relay.request_keyframe()
        packet = await self._queue.get()
        if packet is None:
            self.stop()
            raise MediaStreamError
        return packet

    def stop(self) -> None:
        """End this copy: its sender's pending ``recv()`` wakes up and ends too."""
        if self.readyState == "live":
            self._queue.put_nowait(None)
        super().stop()
        self._relay.detach(self)


def _forward_audio_promptly(receiver: RTCRtpReceiver) -> None:
    """Release each Opus packet as soon as the next one arrives instead of after four (aiortc's default).

    aiortc's audio jitter buffer holds 4 packets (80 ms) before it hands one on; a relay needs no playout
    smoothing of its own (every subscriber runs its own jitter buffer), so that only adds delay, and the agent
    stops talking that much later after a barge-in. One packet still reorders adjacent packets.
    """
    buffer = getattr(receiver, "_RTCRtpReceiver__jitter_buffer", None)
    if buffer is not None and hasattr(buffer, "_prefetch"):
        buffer._prefetch = 1


class TrackRelay:
    """Reads one received track and fans its packets out to every :class:`RelayedTrack`."""

    def __init__(
        self, source: MediaStreamTrack, receiver: RTCRtpReceiver | None, mime_type: str, track_sid: str
    ):
        self.source = source
        self.receiver = receiver
        self.mime_type = mime_type
        self.track_sid = track_sid
        self.kind = source.kind
        self.packets = 0
        self._subscribers: set[RelayedTrack] = set()
        if self.kind == "audio" and receiver is not None:
            _forward_audio_promptly(receiver)
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"relay-{track_sid}")
        self._keyframe_task: asyncio.Task[None] | None = None
        if self.kind == "video":
            self._keyframe_task = asyncio.get_running_loop().create_task(self._periodic_keyframes())

    def subscribe(self) -> RelayedTrack:
        """A new copy of the track for one subscriber (video starts at the next key frame)."""
        track = RelayedTrack(self, self.kind, self.track_sid)
        self._subscribers.add(track)
        self.request_keyframe()
        return track

    def detach(self, track: RelayedTrack) -> None:
        self._subscribers.discard(track)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def request_keyframe(self) -> None:
        """Send a PLI to the publisher (video only)."""
        if self.kind != "video" or self.receiver is None:
            return
        sources = self.receiver.getSynchronizationSources()
        for source in sources:
            asyncio.get_running_loop().create_task(self._pli(source.source))

    async def _pli(self, ssrc: int) -> None:
        with contextlib.suppress(Exception):
            await self.receiver._send_rtcp_pli(ssrc)  # type: ignore[union-attr]

    async def _periodic_keyframes(self) -> None:
        while True:
            await asyncio.sleep(_KEYFRAME_INTERVAL_S)
            if self._subscribers:
                self.request_keyframe()

    async def _run(self) -> None:
        try:
            while True:
                packet = await self.source.recv()
                self.packets += 1
                for track in list(self._subscribers):
                    track.push(packet)
        except MediaStreamError:
            logger.info("relay source ended track=%s packets=%d", self.track_sid, self.packets)
        except asyncio.CancelledError:
            pass
        finally:
            for track in list(self._subscribers):
                track.push(None)
            self._subscribers.clear()

    def close(self) -> None:
        """Stop relaying; every subscriber copy ends."""
        self._task.cancel()
        if self._keyframe_task is not None:
            self._keyframe_task.cancel()
        for track in list(self._subscribers):
            track.push(None)


@dataclass
class PublishedTrack:
    """A track a participant published: its LiveKit description and, once media flows, its relay."""

    sid: str
    cid: str
    publisher_sid: str
    publisher_identity: str
    type: models.TrackType
    name: str = ""
    source: models.TrackSource = models.TrackSource.UNKNOWN
    muted: bool = False
    width: int = 0
    height: int = 0
    mime_type: str = ""
    mid: str = ""
    stream: str = ""
    disable_dtx: bool = False
    stereo: bool = False
    relay: TrackRelay | None = None
    closed: bool = False
    ever_subscribed: bool = False
    """A (non-hidden) subscriber has received it: the publisher was sent ``track_subscribed``."""
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def kind(self) -> str:
        return "audio" if self.type == models.TrackType.AUDIO else "video"

    def attach(self, relay: TrackRelay) -> None:
        """Media arrived: start relaying."""
        self.relay = relay
        self.mime_type = relay.mime_type
        self.ready.set()

    def close(self) -> None:
        """Unpublished: stop the relay."""
        self.closed = True
        if self.relay is not None:
            self.relay.close()

    def to_proto(self) -> models.TrackInfo:
        """The track as a livekit ``TrackInfo``."""
        info = models.TrackInfo(
            sid=self.sid,
            type=self.type,
            name=self.name,
            muted=self.muted,
            width=self.width,
            height=self.height,
            source=self.source,
            mime_type=self.mime_type,
            mid=self.mid,
            stream=self.stream,
            disable_dtx=self.disable_dtx,
            stereo=self.stereo,
        )
        if self.mime_type:
            info.codecs.append(
                models.SimulcastCodecInfo(mime_type=self.mime_type, mid=self.mid, cid=self.cid)
            )
        return info


_MID = re.compile(r"^a=mid:(\S+)", re.M)


@dataclass(frozen=True)
class MediaLine:
    """One m-line of an SDP as far as the server needs it."""

    index: int
    kind: str
    mid: str
    direction: str
    msid_track: str
    port: int


def parse_media_lines(sdp: str) -> list[MediaLine]:
    """The m-lines of ``sdp`` with mid, direction and msid track id (no dependency on msid-semantic)."""
    lines: list[MediaLine] = []
    sections = re.split(r"\r?\n(?=m=)", sdp)
    for index, section in enumerate(sections[1:]):
        header = section.split("\n", 1)[0].strip().split()
        kind = header[0][2:] if header else ""
        port = int(header[1]) if len(header) > 1 and header[1].isdigit() else 0
        mid_match = _MID.search(section)
        direction = "sendrecv"
        for candidate in ("sendrecv", "sendonly", "recvonly", "inactive"):
            if re.search(rf"^a={candidate}\s*$", section, re.M):
                direction = candidate
                break
        msid = re.search(r"^a=msid:(\S+)\s+(\S+)", section, re.M)
        lines.append(
            MediaLine(
                index=index,
                kind=kind,
                mid=mid_match.group(1) if mid_match else str(index),
                direction=direction,
                msid_track=msid.group(2) if msid else "",
                port=port,
            )
        )
    return lines
