"""The ``/rtc`` (two peer connections) and ``/rtc/v1`` (one peer connection) signalling endpoints.

One :class:`SignalSession` per connected participant: it owns the WebSocket and the aiortc peer connection(s),
answers the client's offers, offers subscribed tracks, relays data packets through the room and applies the
client's requests (tracks, mute, subscriptions, metadata, leave).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import gzip
import json
import logging
import time
import uuid
import warnings
import zlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcicetransport import RTCIceCandidate
from aiortc.sdp import candidate_from_sdp
from google.protobuf.message import DecodeError
from livekit.protocol import models, rtc

from signalling.devserver.auth import (
    Authenticator,
    JoinGrant,
    TokenError,
    extract_token,
    join_overrides,
    may_publish_source,
)
from signalling.devserver.data import (
    DATA_LABELS,
    LOSSY_LABEL,
    RELIABLE_LABEL,
    DataPacketError,
    label_for,
    parse_packet,
    prepare_for_forwarding,
)
from signalling.devserver.media import MediaLine, PublishedTrack, RelayedTrack, TrackRelay, parse_media_lines
from signalling.devserver.ratelog import RateLimitedLog
from signalling.devserver.rooms import Participant, Room, RoomError, RoomManager, new_sid

logger = logging.getLogger(__name__)

SERVER_VERSION = "1.9.0"
PROTOCOL_VERSION = 16
PING_INTERVAL_S = 5
PING_TIMEOUT_S = 15
SILENCE_TIMEOUT_S = 2 * PING_TIMEOUT_S  # the SDKs ping every PING_INTERVAL_S; be lenient on loaded machines
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Allow-Methods": "GET, OPTIONS",
}


@dataclass
class SignalContext:
    """What the signal handlers share: rooms, token checks and the server's identity."""

    rooms: RoomManager
    auth: Authenticator
    node_id: str = field(default_factory=lambda: new_sid("ND_"))
    sessions: set[SignalSession] = field(default_factory=set)

    def server_info(self) -> models.ServerInfo:
        return models.ServerInfo(
            edition=models.ServerInfo.Edition.Standard,
            version=SERVER_VERSION,
            protocol=PROTOCOL_VERSION,
            node_id=self.node_id,
            region="local",
        )


@dataclass
class Subscription:
    """A track this participant receives."""

    track: PublishedTrack
    publisher_sid: str
    relayed: RelayedTrack | None = None
    transceiver: RTCRtpTransceiver | None = None
    enabled: bool = True


class JoinRequestError(Exception):
    """The ``join_request`` parameter of ``/rtc/v1`` cannot be decoded."""


def decode_join_request(value: str) -> rtc.JoinRequest:
    """Decode ``b64url(WrappedJoinRequest)`` (gzip-compressed or not) into a ``JoinRequest``."""
    try:
        value = value.strip().replace(" ", "+")  # a '+' of standard base64 may arrive form-decoded
        raw = base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_", validate=True)
        if not raw:
            raise ValueError("empty")
        wrapped = rtc.WrappedJoinRequest()
        wrapped.ParseFromString(raw)
        payload = wrapped.join_request
        if wrapped.compression == rtc.WrappedJoinRequest.Compression.GZIP:
            payload = gzip.decompress(payload)
        join = rtc.JoinRequest()
        join.ParseFromString(payload)
        return join
    except (ValueError, binascii.Error, DecodeError, OSError, EOFError, zlib.error) as exc:
        raise JoinRequestError(f"invalid join_request: {exc}") from exc


class TrickleError(ValueError):
    """An ICE trickle whose candidate cannot be parsed or used."""


def parse_trickle(candidate_init: str) -> RTCIceCandidate | None:
    """The candidate of a trickle's ``candidateInit`` JSON; None for end-of-candidates.

    Raises :class:`TrickleError` (one clear line, no traceback) for anything malformed.
    """
    try:
        init = json.loads(candidate_init or "{}")
    except json.JSONDecodeError as exc:
        raise TrickleError(f"bad candidateInit: {exc}") from None
    if not isinstance(init, dict):
        raise TrickleError(f"bad candidateInit: a JSON object is required, got {type(init).__name__}")
    text = str(init.get("candidate") or "")
    if not text:
        return None
    try:
        candidate = candidate_from_sdp(text.split(":", 1)[1] if text.startswith("candidate:") else text)
    except (ValueError, TypeError, KeyError, IndexError, AssertionError) as exc:
        raise TrickleError(f"bad ICE candidate {text[:80]!r}: {exc!r}") from None
    mid, index = init.get("sdpMid"), init.get("sdpMLineIndex")
    if mid is not None and not isinstance(mid, str):
        raise TrickleError("bad candidateInit: sdpMid must be a string")
    if index is not None and (not isinstance(index, int) or isinstance(index, bool) or index < 0):
        raise TrickleError("bad candidateInit: sdpMLineIndex must be a non-negative integer")
    candidate.sdpMid = mid
    candidate.sdpMLineIndex = index
    return candidate


def _sdk(name: str) -> models.ClientInfo.SDK:
    """The ``sdk`` query parameter of ``/rtc`` (``js``, ``rust``, ``python``...) as a ``ClientInfo.SDK``."""
    key = name.strip().upper().replace("-", "_")
    try:
        return models.ClientInfo.SDK.Value(key)  # type: ignore[return-value]
    except ValueError:
        return models.ClientInfo.SDK.UNKNOWN


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.lower() in ("1", "true", "yes")


def _codec_prefs(kind: str, mime_type: str) -> list[object]:
    caps = RTCRtpSender.getCapabilities(kind)
    wanted = [c for c in caps.codecs if c.mimeType.lower() == mime_type.lower()]
    rtx = [c for c in caps.codecs if c.mimeType.lower().endswith("/rtx")]
    return [*wanted, *rtx] if wanted else []


class SignalSession:
    """A connected participant: WebSocket, peer connection(s), subscriptions and data channels."""

    def __init__(
        self,
        ctx: SignalContext,
        ws: web.WebSocketResponse,
        room: Room,
        participant: Participant,
        *,
        single_pc: bool,
        auto_subscribe: bool,
        client_sdk: models.ClientInfo.SDK = models.ClientInfo.SDK.UNKNOWN,
    ) -> None:
        self.ctx = ctx
        # livekit-server: the Rust SDK before protocol 10 cannot decode TrackSubscribed
        self.supports_track_subscribed = (
            client_sdk != models.ClientInfo.SDK.RUST or participant.client_protocol >= 10
        )
        self.ws = ws
        self.room = room
        self.participant = participant
        self.single_pc = single_pc
        self.auto_subscribe = auto_subscribe
        self.log_id = f"room={room.name} identity={participant.identity} sid={participant.sid}"
        config = RTCConfiguration(iceServers=[])
        self.pc_pub = RTCPeerConnection(config)
        self.pc_sub = self.pc_pub if single_pc else RTCPeerConnection(config)
        self.subscriptions: dict[str, Subscription] = {}
        self.pending: list[Subscription] = []
        self.explicit: dict[str, bool] = {}
        self._send_lock = asyncio.Lock()
        self._pc_lock = asyncio.Lock()
        self._offer_id = 0
        self._awaiting_answer = False
        self._renegotiate = False
        self._used_mids: set[str] = set()
        self._mid_lines: dict[str, MediaLine] = {}
        self._unmatched: dict[str, tuple[MediaStreamTrack, RTCRtpTransceiver | None]] = {}
        self._out: dict[str, RTCDataChannel] = {}
        self._out_buffer: dict[str, list[bytes]] = {label: [] for label in DATA_LABELS}
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._sub_offered = False
        self._log = RateLimitedLog(logger)
        self.pc_pub.on("track", self._on_remote_track)
        self.pc_pub.on("datachannel", self._on_datachannel)
        # aiortc starts the senders of a renegotiation only once DTLS is up: renegotiating while the first
        # handshake is in flight leaves them silent, so later negotiations wait for "connected".
        self.pc_sub.on("connectionstatechange", self._on_sub_state)
        for pc in {self.pc_pub, self.pc_sub}:
            pc.on("connectionstatechange", self._media_safety_net(pc))
        if not single_pc:
            self._add_out_channel(self.pc_sub.createDataChannel(RELIABLE_LABEL, ordered=True))
            self._add_out_channel(self.pc_sub.createDataChannel(LOSSY_LABEL, ordered=False, maxRetransmits=0))

    # ParticipantSession --------------------------------------------------------------------------------
    async def send_signal(self, response: rtc.SignalResponse) -> None:
        if self._closed or self.ws.closed:
            return
        async with self._send_lock:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_bytes(response.SerializeToString())

    async def deliver_data(self, packet: models.DataPacket) -> None:
        label = label_for(packet)
        raw = packet.SerializeToString()
        channel = self._out.get(label)
        if channel is not None and channel.readyState == "open":
            channel.send(raw)
        elif not self._closed:
            buffer = self._out_buffer[label]
            if len(buffer) < 1000:
                buffer.append(raw)

    async def track_available(self, publisher: Participant, track: PublishedTrack) -> None:
        if not self.participant.permission.can_subscribe or track.sid in self.subscriptions:
            return
        if not self.explicit.get(track.sid, self.auto_subscribe):
            return
        await self._subscribe(publisher, track)

    async def track_removed(self, publisher: Participant, track_sid: str) -> None:
        await self._unsubscribe(track_sid)

    async def close(self, reason: models.DisconnectReason) -> None:
        leave = rtc.LeaveRequest(
            can_reconnect=False, reason=reason, action=rtc.LeaveRequest.Action.DISCONNECT
        )
        await self.send_signal(rtc.SignalResponse(leave=leave))
        await self.shutdown()

    @property
    def _sub_connected(self) -> bool:
        return self.pc_sub.connectionState == "connected"

    def _on_sub_state(self) -> None:
        logger.debug("subscriber connection %s %s", self.pc_sub.connectionState, self.log_id)
        if not self._sub_connected or not self.pending:
            return
        if self.single_pc:
            self._spawn(self._request_media_sections())
        else:
            self._spawn(self._negotiate_subscriber())

    async def _ensure_senders(self, pc: RTCPeerConnection) -> None:
        """Start senders that a renegotiation left idle (aiortc 1.16 skips them in some interleavings).

        aiortc starts a transceiver's sender in its internal connect step, which sees the DTLS transport
        mid-handshake when negotiations overlap; the subscription then stays silent. Once connected, start
        any negotiated sender that has not started (``RTCRtpSender.send`` is idempotent).
        """
        local_rtp = getattr(pc, "_RTCPeerConnection__localRtp", None)
        for _ in range(300):
            if self._closed or pc.connectionState in ("closed", "failed"):
                return
            if pc.connectionState == "connected" and local_rtp is not None:
                idle = [
                    t
                    for t in pc.getTransceivers()
                    if t.currentDirection in ("sendonly", "sendrecv")
                    and t.sender.track is not None
                    and not getattr(t.sender, "_RTCRtpSender__started", True)
                ]
                if not idle:
                    return
                connected = next(
                    (
                        t.sender.transport
                        for t in pc.getTransceivers()
                        if t.sender.transport.state == "connected"
                    ),
                    pc.sctp.transport
                    if pc.sctp is not None and pc.sctp.transport.state == "connected"
                    else None,
                )
                for transceiver in idle:
                    transport = transceiver.sender.transport
                    if transport.state != "connected" and connected is not None:
                        # bundled media shares one transport; this one was left on a never-started one
                        transceiver.receiver.setTransport(connected)
                        transceiver.sender.setTransport(connected)
                    logger.info("starting idle sender mid=%s %s", transceiver.mid, self.log_id)
                    await transceiver.sender.send(local_rtp(transceiver))
            await asyncio.sleep(0.1)

    def _media_safety_net(self, pc: RTCPeerConnection) -> Callable[[], None]:
        """Once DTLS is up, start senders/receivers of negotiations applied while it was still connecting."""

        def on_state() -> None:
            if pc.connectionState == "connected":
                connect = getattr(pc, "_RTCPeerConnection__connect", None)  # aiortc 1.16: idempotent
                if connect is not None:
                    self._spawn(connect())

        return on_state

    async def permission_changed(self) -> None:
        permission = self.participant.permission
        if not permission.can_subscribe:
            for sid in list(self.subscriptions):
                await self._unsubscribe(sid)
        else:
            for other in list(self.room.participants.values()):
                if other.identity == self.participant.identity:
                    continue
                for track in list(other.tracks.values()):
                    if track.relay is not None and not track.closed:
                        await self.track_available(other, track)
        for published in list(self.participant.tracks.values()):
            if not may_publish_source(permission, published.source):
                logger.info("permission revoked: unpublishing %s %s", published.sid, self.log_id)
                await self._unpublish(published)

    # lifecycle ---------------------------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in the background; its failure is logged (a lost negotiation must not be silent)."""
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or self._closed:
            return
        exc = task.exception()
        if exc is not None:
            name = getattr(task.get_coro(), "__qualname__", task.get_name())
            logger.error("%s failed %s", name, self.log_id, exc_info=exc)

    async def shutdown(self) -> None:
        """Close the WebSocket and the peer connections (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for sub in list(self.subscriptions.values()):
            if sub.relayed is not None:
                sub.relayed.stop()
        self.subscriptions.clear()
        with contextlib.suppress(Exception):
            await self.ws.close()
        for pc in {self.pc_pub, self.pc_sub}:
            with contextlib.suppress(Exception):
                await pc.close()
        for task in list(self._tasks):
            task.cancel()

    def join_response(self) -> rtc.SignalResponse:
        others = [p.to_proto() for p in self.room.visible() if p.identity != self.participant.identity]
        join = rtc.JoinResponse(
            room=self.room.to_proto(),
            participant=self.participant.to_proto(),
            other_participants=others,
            server_version=SERVER_VERSION,
            subscriber_primary=not self.single_pc,
            ping_timeout=PING_TIMEOUT_S,
            ping_interval=PING_INTERVAL_S,
            server_info=self.ctx.server_info(),
            server_region="local",
        )
        return rtc.SignalResponse(join=join)

    async def start(self, join_request: rtc.JoinRequest | None) -> None:
        """After the join response: the first negotiation and the tracks already in the room."""
        if join_request is not None:
            for req in join_request.add_track_requests:
                await self._add_track(req)
        if self.single_pc:
            if join_request is not None and join_request.HasField("publisher_offer"):
                await self._on_offer(join_request.publisher_offer)
        else:
            await self._negotiate_subscriber()
        for other in list(self.room.participants.values()):
            if other.identity == self.participant.identity:
                continue
            for track in list(other.tracks.values()):
                if track.relay is not None and not track.closed:
                    await self.track_available(other, track)

    async def run(self) -> None:
        """Read signal requests until the WebSocket closes or the client stops pinging."""
        while not self.ws.closed:
            try:
                msg = await self.ws.receive(timeout=SILENCE_TIMEOUT_S)
            except TimeoutError:
                logger.warning(
                    "no signal from the client for %d s, closing %s", SILENCE_TIMEOUT_S, self.log_id
                )
                break
            if msg.type == WSMsgType.BINARY:
                request = rtc.SignalRequest()
                try:
                    request.ParseFromString(msg.data)
                except DecodeError:
                    self._log.warning("undecodable", "undecodable signal request %s", self.log_id)
                    continue
                kind = request.WhichOneof("message")
                try:
                    if await self._handle(request):
                        break
                except (RoomError, DataPacketError, ValueError) as exc:
                    self._log.warning(
                        f"bad {kind}", "signal request %s failed %s: %s", kind, self.log_id, exc
                    )
                except Exception:
                    self._log.log(
                        logging.ERROR,
                        f"failed {kind}",
                        "signal request %s failed %s",
                        kind,
                        self.log_id,
                        exc_info=True,
                    )
            elif msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                break
            else:
                logger.debug("ignored %s WebSocket message %s", msg.type, self.log_id)

    # requests ----------------------------------------------------------------------------------------
    async def _handle(self, request: rtc.SignalRequest) -> bool:
        if self._closed:  # shut down (server stopping, replaced): nothing left to negotiate
            return True
        kind = request.WhichOneof("message")
        if kind == "offer":
            await self._on_offer(request.offer)
        elif kind == "answer":
            await self._on_answer(request.answer)
        elif kind == "trickle":
            await self._on_trickle(request.trickle)
        elif kind == "add_track":
            await self._add_track(request.add_track)
        elif kind == "mute":
            await self._on_mute(request.mute)
        elif kind == "subscription":
            await self._on_subscription(request.subscription)
        elif kind == "track_setting":
            self._on_track_setting(request.track_setting)
        elif kind == "update_metadata":
            await self._on_update_metadata(request.update_metadata)
        elif kind == "ping":
            await self.send_signal(rtc.SignalResponse(pong=int(time.time() * 1000)))
        elif kind == "ping_req":
            pong = rtc.Pong(last_ping_timestamp=request.ping_req.timestamp, timestamp=int(time.time() * 1000))
            await self.send_signal(rtc.SignalResponse(pong_resp=pong))
        elif kind == "leave":
            logger.info("client leave %s", self.log_id)
            return True
        else:
            logger.debug("ignored signal request %s %s", kind, self.log_id)
        return False

    async def _on_offer(self, offer: rtc.SessionDescription) -> None:
        lines = parse_media_lines(offer.sdp)
        async with self._pc_lock:
            self._mid_lines = {line.mid: line for line in lines}
            await self.pc_pub.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
            await self._sync_published(lines)
            mid_to_track: dict[str, str] = {}
            if self.single_pc:
                if self._offer_id == 0 or self._sub_connected:
                    self._assign_pending()
                mid_to_track = self._mid_to_track()
            answer = await self.pc_pub.createAnswer()
            await self.pc_pub.setLocalDescription(answer)
            local = self.pc_pub.localDescription
            response = rtc.SessionDescription(
                type="answer", sdp=local.sdp, id=offer.id, mid_to_track_id=mid_to_track
            )
            await self.send_signal(rtc.SignalResponse(answer=response))
            if self.single_pc:
                self._spawn(self._ensure_senders(self.pc_pub))
            self._offer_id = max(self._offer_id, offer.id, 1) if self.single_pc else self._offer_id
            if self.single_pc:
                await self._request_media_sections()

    async def _on_answer(self, answer: rtc.SessionDescription) -> None:
        if self.single_pc:
            logger.warning("unexpected answer in single peer connection mode %s", self.log_id)
            return
        async with self._pc_lock:
            await self.pc_sub.setRemoteDescription(RTCSessionDescription(sdp=answer.sdp, type="answer"))
            self._spawn(self._ensure_senders(self.pc_sub))
            self._awaiting_answer = False
            again, self._renegotiate = self._renegotiate, False
        if again:
            await self._negotiate_subscriber()

    async def _on_trickle(self, trickle: rtc.TrickleRequest) -> None:
        candidate = parse_trickle(trickle.candidateInit)
        if candidate is None:
            return
        pc = self.pc_sub if trickle.target == rtc.SignalTarget.SUBSCRIBER else self.pc_pub
        if pc.remoteDescription is None:
            return
        try:
            await pc.addIceCandidate(candidate)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, AssertionError, OSError) as exc:
            raise TrickleError(f"ICE candidate not usable: {exc!r}") from None

    async def _add_track(self, req: rtc.AddTrackRequest) -> None:
        participant = self.participant
        for existing in participant.tracks.values():
            if existing.cid == req.cid:
                await self.send_signal(
                    rtc.SignalResponse(
                        track_published=rtc.TrackPublishedResponse(cid=req.cid, track=existing.to_proto())
                    )
                )
                return
        source = req.source
        if source == models.TrackSource.UNKNOWN:
            source = (
                models.TrackSource.MICROPHONE
                if req.type == models.TrackType.AUDIO
                else models.TrackSource.CAMERA
            )
        if not may_publish_source(participant.permission, source):
            logger.warning("publish refused source=%s %s", source, self.log_id)
            await self.send_signal(
                rtc.SignalResponse(
                    request_response=rtc.RequestResponse(
                        reason=rtc.RequestResponse.Reason.NOT_ALLOWED,
                        message="does not have permission to publish this source",
                        add_track=req,
                    )
                )
            )
            return
        track = PublishedTrack(
            sid=new_sid("TR_"),
            cid=req.cid,
            publisher_sid=participant.sid,
            publisher_identity=participant.identity,
            type=req.type,
            name=req.name,
            source=source,
            muted=req.muted,
            width=req.width,
            height=req.height,
            stream=req.stream,
            disable_dtx=req.disable_dtx,
            stereo=req.stereo,
        )
        participant.tracks[track.sid] = track
        participant.bump()
        logger.info("track published sid=%s cid=%s type=%s %s", track.sid, track.cid, req.type, self.log_id)
        await self.send_signal(
            rtc.SignalResponse(
                track_published=rtc.TrackPublishedResponse(cid=req.cid, track=track.to_proto())
            )
        )
        await self.ctx.rooms.broadcast_participant(self.room, participant)
        unmatched = self._unmatched.pop(req.cid, None)
        if unmatched is not None:
            await self._attach_media(track, *unmatched)

    async def _on_mute(self, mute: rtc.MuteTrackRequest) -> None:
        track = self.participant.tracks.get(mute.sid)
        if track is None:
            raise RoomError(f"mute of unknown track {mute.sid}")
        track.muted = mute.muted
        self.participant.bump()
        await self.ctx.rooms.broadcast_participant(self.room, self.participant)

    async def _on_subscription(self, update: rtc.UpdateSubscription) -> None:
        sids = list(update.track_sids)
        for pt in update.participant_tracks:
            sids.extend(pt.track_sids)
        for sid in sids:
            self.explicit[sid] = update.subscribe
            if not update.subscribe:
                await self._unsubscribe(sid)
                continue
            for other in list(self.room.participants.values()):
                track = other.tracks.get(sid)
                if track is not None and other.identity != self.participant.identity:
                    if track.relay is not None:
                        await self.track_available(other, track)
                    break

    def _on_track_setting(self, setting: rtc.UpdateTrackSettings) -> None:
        for sid in setting.track_sids:
            sub = self.subscriptions.get(sid)
            if sub is None:
                continue
            sub.enabled = not setting.disabled
            if sub.relayed is not None:
                sub.relayed.set_enabled(sub.enabled)

    async def _on_update_metadata(self, update: rtc.UpdateParticipantMetadata) -> None:
        if not self.participant.permission.can_update_metadata:
            logger.warning("metadata update refused %s", self.log_id)
            if update.request_id:
                await self._request_response(
                    update,
                    rtc.RequestResponse.Reason.NOT_ALLOWED,
                    "does not have permission to update own metadata",
                )
            return
        await self.ctx.rooms.update_participant(
            self.room.name,
            self.participant.identity,
            metadata=update.metadata,
            attributes=dict(update.attributes),
            name=update.name or None,
        )
        if update.request_id:
            await self._request_response(update, rtc.RequestResponse.Reason.OK, "")

    async def _request_response(
        self,
        update: rtc.UpdateParticipantMetadata,
        reason: rtc.RequestResponse.Reason,
        message: str,
    ) -> None:
        response = rtc.RequestResponse(
            request_id=update.request_id, reason=reason, message=message, update_metadata=update
        )
        await self.send_signal(rtc.SignalResponse(request_response=response))

    # publishing ---------------------------------------------------------------------------------------
    async def _sync_published(self, lines: list[MediaLine]) -> None:
        """Unpublish tracks whose m-line no longer sends (the client removed them)."""
        sending = {
            line.mid for line in lines if line.port != 0 and line.direction in ("sendonly", "sendrecv")
        }
        for published in list(self.participant.tracks.values()):
            if published.mid and published.mid not in sending:
                await self._unpublish(published)
        for transceiver in self.pc_pub.getTransceivers():
            line = self._mid_lines.get(transceiver.mid or "")
            source = transceiver.receiver.track if transceiver.receiver is not None else None
            if line is None or source is None or line.mid not in sending or not line.msid_track:
                continue
            if any(t.mid == line.mid and t.cid == line.msid_track for t in self.participant.tracks.values()):
                continue
            await self._match_media(line.msid_track, source, transceiver)

    def _on_remote_track(self, track: MediaStreamTrack) -> None:
        transceiver = next((t for t in self.pc_pub.getTransceivers() if t.receiver.track is track), None)
        line = self._mid_lines.get(transceiver.mid or "") if transceiver is not None else None
        cid = line.msid_track if line is not None else track.id
        if any(t.cid == cid and t.relay is not None for t in self.participant.tracks.values()):
            return
        self._spawn(self._match_media(cid, track, transceiver))

    async def _match_media(
        self, cid: str, source: MediaStreamTrack, transceiver: RTCRtpTransceiver | None
    ) -> None:
        published = next((t for t in self.participant.tracks.values() if t.cid == cid and not t.closed), None)
        if published is None:
            self._unmatched[cid] = (source, transceiver)
            return
        if published.relay is not None:
            return
        await self._attach_media(published, source, transceiver)

    async def _attach_media(
        self, published: PublishedTrack, source: MediaStreamTrack, transceiver: RTCRtpTransceiver | None
    ) -> None:
        codecs = transceiver._codecs if transceiver is not None else []
        mime = next((c.mimeType for c in codecs if not c.mimeType.lower().endswith("/rtx")), "")
        if not mime:
            mime = "audio/opus" if published.kind == "audio" else "video/VP8"
        published.mid = (transceiver.mid or "") if transceiver is not None else ""
        relay = TrackRelay(
            source, transceiver.receiver if transceiver is not None else None, mime, published.sid
        )
        published.attach(relay)
        self.participant.bump()
        logger.info(
            "media flowing track=%s mime=%s mid=%s %s", published.sid, mime, published.mid, self.log_id
        )
        await self.ctx.rooms.broadcast_participant(self.room, self.participant)
        for other in list(self.room.participants.values()):
            if other.identity != self.participant.identity and other.session is not None:
                await other.session.track_available(self.participant, published)

    async def _unpublish(self, track: PublishedTrack) -> None:
        self.participant.tracks.pop(track.sid, None)
        track.close()
        self.participant.bump()
        logger.info("track unpublished sid=%s %s", track.sid, self.log_id)
        await self.send_signal(
            rtc.SignalResponse(track_unpublished=rtc.TrackUnpublishedResponse(track_sid=track.sid))
        )
        for other in list(self.room.participants.values()):
            if other.identity != self.participant.identity and other.session is not None:
                await other.session.track_removed(self.participant, track.sid)
        await self.ctx.rooms.broadcast_participant(self.room, self.participant)

    # subscribing --------------------------------------------------------------------------------------
    async def _subscribe(self, publisher: Participant, track: PublishedTrack) -> None:
        if track.relay is None or self._closed:
            return
        sub = Subscription(track=track, publisher_sid=publisher.sid)
        self.subscriptions[track.sid] = sub
        self.pending.append(sub)
        logger.info("subscribe track=%s of %s %s", track.sid, publisher.identity, self.log_id)
        # Called from other participants' sessions too: never wait here for this session's negotiation
        # lock (two sessions publishing at once would each hold their own and wait for the other's).
        if self.single_pc:
            await self._request_media_sections()
        else:
            self._spawn(self._negotiate_subscriber())

    async def _unsubscribe(self, track_sid: str) -> None:
        sub = self.subscriptions.pop(track_sid, None)
        if sub is None:
            return
        if sub in self.pending:
            self.pending.remove(sub)
        if sub.relayed is not None:
            sub.relayed.stop()
        if sub.transceiver is not None:
            sub.transceiver.direction = "inactive"
            # a later subscription to the same track gets a new m-line: the old one must not repeat its msid
            sub.transceiver.sender._stream_id = str(uuid.uuid4())
            sub.transceiver.sender._track_id = str(uuid.uuid4())
            if not self.single_pc:
                self._spawn(self._negotiate_subscriber())

    def _new_relayed(self, sub: Subscription) -> RelayedTrack | None:
        relay = sub.track.relay
        if relay is None or sub.track.closed:
            return None
        relayed = relay.subscribe()
        relayed.set_enabled(sub.enabled)
        if not self.participant.hidden:  # as livekit-server: hidden subscribers do not count
            relayed.on_start = lambda: self._spawn(self._subscription_started(sub))
        sub.relayed = relayed
        return relayed

    async def _subscription_started(self, sub: Subscription) -> None:
        """Media of ``sub`` flows to this subscriber: the publisher learns (once) that its track is subscribed."""
        track = sub.track
        if track.ever_subscribed or track.closed or self._closed:
            return
        track.ever_subscribed = True
        publisher = self.room.participants.get(track.publisher_identity)
        session = publisher.session if publisher is not None else None
        if isinstance(session, SignalSession):
            await session.notify_track_subscribed(track.sid)

    async def notify_track_subscribed(self, track_sid: str) -> None:
        """Send ``track_subscribed`` (the SDKs' ``local_track_subscribed``; LiveKit Agents waits for it)."""
        if not self.supports_track_subscribed:
            return
        logger.info("track subscribed sid=%s %s", track_sid, self.log_id)
        await self.send_signal(rtc.SignalResponse(track_subscribed=rtc.TrackSubscribed(track_sid=track_sid)))

    async def _negotiate_subscriber(self) -> None:
        """(Two peer connections) offer the subscriber connection again, one offer at a time."""
        if self._closed:
            return
        async with self._pc_lock:
            if self._awaiting_answer:
                self._renegotiate = True
                return
            if self._sub_offered and not self._sub_connected:
                return  # _on_sub_state negotiates the pending subscriptions once connected
            self._sub_offered = True
            for sub in self.pending:
                relayed = self._new_relayed(sub)
                if relayed is None:
                    continue
                transceiver = self.pc_sub.addTransceiver(relayed, direction="sendonly")
                prefs = _codec_prefs(sub.track.kind, sub.track.mime_type)
                if prefs:
                    transceiver.setCodecPreferences(prefs)  # type: ignore[arg-type]
                transceiver.sender._stream_id = f"{sub.publisher_sid}|{sub.track.sid}"
                sub.transceiver = transceiver
            self.pending.clear()
            offer = await self.pc_sub.createOffer()
            await self.pc_sub.setLocalDescription(offer)
            self._offer_id += 1
            self._awaiting_answer = True
            local = self.pc_sub.localDescription
            response = rtc.SessionDescription(
                type="offer", sdp=local.sdp, id=self._offer_id, mid_to_track_id=self._mid_to_track()
            )
            await self.send_signal(rtc.SignalResponse(offer=response))

    def _assign_pending(self) -> None:
        """(One peer connection) put pending subscriptions on the client's free receive-only m-lines."""
        if not self.pending:
            return
        free = [
            t
            for t in self.pc_pub.getTransceivers()
            if t.mid is not None
            and t.mid not in self._used_mids
            and t._offerDirection == "sendonly"
            and t.sender.track is None
        ]
        remaining: list[Subscription] = []
        for sub in self.pending:
            transceiver = next((t for t in free if t.kind == sub.track.kind), None)
            if transceiver is None:
                remaining.append(sub)
                continue
            relayed = self._new_relayed(sub)
            if relayed is None:
                continue
            free.remove(transceiver)
            self._used_mids.add(transceiver.mid or "")
            transceiver.sender.replaceTrack(relayed)
            transceiver.sender._stream_id = f"{sub.publisher_sid}|{sub.track.sid}"
            transceiver.direction = "sendonly"
            wanted = sub.track.mime_type.lower()
            kept = [c for c in transceiver._codecs if c.mimeType.lower() == wanted]
            if kept:
                payload_types = {c.payloadType for c in kept}
                rtx = [
                    c
                    for c in transceiver._codecs
                    if c.mimeType.lower().endswith("/rtx") and c.parameters.get("apt") in payload_types
                ]
                transceiver._codecs = kept + rtx
            sub.transceiver = transceiver
        self.pending = remaining

    async def _request_media_sections(self) -> None:
        if not self.pending or not self._sub_connected:
            return  # _on_sub_state asks again once connected
        audios = sum(1 for s in self.pending if s.track.kind == "audio")
        videos = len(self.pending) - audios
        requirement = rtc.MediaSectionsRequirement(num_audios=audios, num_videos=videos)
        await self.send_signal(rtc.SignalResponse(media_sections_requirement=requirement))

    def _mid_to_track(self) -> dict[str, str]:
        return {
            sub.transceiver.mid: sid
            for sid, sub in self.subscriptions.items()
            if sub.transceiver is not None and sub.transceiver.mid is not None
        }

    # data ---------------------------------------------------------------------------------------------
    def _add_out_channel(self, channel: RTCDataChannel) -> None:
        label = channel.label
        if label not in DATA_LABELS:
            return
        self._out[label] = channel

        def flush() -> None:
            buffer, self._out_buffer[label] = self._out_buffer[label], []
            for raw in buffer:
                channel.send(raw)

        channel.on("open", flush)
        if channel.readyState == "open":
            flush()

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        label = channel.label
        if label not in DATA_LABELS:
            logger.debug("ignoring data channel %s %s", label, self.log_id)
            return
        if self.single_pc:
            self._add_out_channel(channel)
        channel.on("message", self._data_handler(label))

    def _data_handler(self, label: str) -> Callable[[bytes | str], None]:
        def on_message(raw: bytes | str) -> None:
            self._spawn(self._on_data(raw, label))

        return on_message

    async def _on_data(self, raw: bytes | str, label: str) -> None:
        try:
            packet = parse_packet(raw, label)
        except DataPacketError as exc:
            self._log.warning("bad data", "%s %s", exc, self.log_id)
            return
        if not self.participant.permission.can_publish_data:
            self._log.warning("data refused", "data refused: no can_publish_data %s", self.log_id)
            return
        participant = self.participant
        dropped = prepare_for_forwarding(
            packet,
            identity=participant.identity,
            sid=participant.sid,
            is_agent=participant.is_agent,
            hidden=participant.hidden,
        )
        if dropped is not None:
            self._log.warning("data dropped", "data packet dropped: %s %s", dropped, self.log_id)
            return
        await self.ctx.rooms.relay_data(self.room, participant, packet)


# HTTP handlers ------------------------------------------------------------------------------------------
def _refusal(exc: TokenError) -> web.Response:
    return web.Response(status=exc.status, text=str(exc), headers=CORS_HEADERS)


def _authorize(ctx: SignalContext, request: web.Request) -> JoinGrant:
    token = extract_token(request.headers.get("Authorization"), request.query.get("access_token"))
    return ctx.auth.join_grant(token, request.query.get("room") or None)


async def handle_validate(request: web.Request) -> web.Response:
    """``GET /rtc/validate`` and ``/rtc/v1/validate``: would this join be accepted?"""
    ctx: SignalContext = request.app["devserver_signal"]
    try:
        grant = _authorize(ctx, request)
        if "join_request" in request.query:
            join = decode_join_request(request.query["join_request"])
            join_overrides(grant, join.metadata, join.participant_attributes)
    except TokenError as exc:
        logger.info("validate refused: %s", exc)
        return _refusal(exc)
    except JoinRequestError as exc:
        return web.Response(status=400, text=str(exc), headers=CORS_HEADERS)
    logger.info("validate ok room=%s identity=%s", grant.room, grant.identity)
    return web.Response(text="success", headers=CORS_HEADERS)


async def handle_options(request: web.Request) -> web.Response:
    """CORS preflight."""
    return web.Response(status=204, headers=CORS_HEADERS)


async def handle_rtc(request: web.Request) -> web.StreamResponse:
    """``GET /rtc`` (two peer connections) and ``GET /rtc/v1`` (one peer connection)."""
    ctx: SignalContext = request.app["devserver_signal"]
    single_pc = request.path.rstrip("/").endswith("/v1")
    join_request: rtc.JoinRequest | None = None
    try:
        grant = _authorize(ctx, request)
        if single_pc:
            if "join_request" not in request.query:
                raise JoinRequestError("join_request is required")
            join_request = decode_join_request(request.query["join_request"])
            metadata, attributes = join_overrides(
                grant, join_request.metadata, join_request.participant_attributes
            )
        else:
            metadata, attributes = join_overrides(grant, "", {})
    except TokenError as exc:
        logger.info("join refused path=%s: %s", request.path, exc)
        return _refusal(exc)
    except JoinRequestError as exc:
        logger.info("join refused path=%s: %s", request.path, exc)
        return web.Response(status=400, text=str(exc), headers=CORS_HEADERS)

    if single_pc and join_request is not None and join_request.reconnect:
        reconnect = True
    else:
        reconnect = _flag(request.query.get("reconnect"), False)

    ws = web.WebSocketResponse(max_msg_size=4 * 1024 * 1024)
    if not ws.can_prepare(request).ok:
        return web.Response(status=400, text="websocket upgrade required", headers=CORS_HEADERS)
    await ws.prepare(request)

    if reconnect:
        # No session survives on this server (it may have restarted): ask the client for a full rejoin.
        logger.info("resume refused, full reconnect requested identity=%s", grant.identity)
        leave = rtc.LeaveRequest(
            can_reconnect=True,
            reason=models.DisconnectReason.STATE_MISMATCH,
            action=rtc.LeaveRequest.Action.RECONNECT,
        )
        await ws.send_bytes(rtc.SignalResponse(leave=leave).SerializeToString())
        await ws.close()
        return ws

    claims = grant.claims
    if join_request is not None:
        auto_subscribe = (
            join_request.connection_settings.auto_subscribe
            if join_request.HasField("connection_settings")
            else True
        )
        client_protocol = join_request.client_info.protocol
        client_sdk = join_request.client_info.sdk
    else:
        auto_subscribe = _flag(request.query.get("auto_subscribe"), True)
        protocol = request.query.get("protocol", "0")
        client_protocol = int(protocol) if protocol.isdigit() else 0
        client_sdk = _sdk(request.query.get("sdk", ""))

    try:
        room = await ctx.rooms.get_or_create(grant.room, config=claims.room_config)
    except RoomError as exc:
        await ws.close(message=str(exc).encode())
        return ws
    participant = Participant(
        identity=grant.identity,
        name=claims.name,
        metadata=metadata,
        attributes=attributes,
        permission=grant.permission,
        kind=models.ParticipantInfo.Kind.AGENT if grant.is_agent else models.ParticipantInfo.Kind.STANDARD,
        client_protocol=client_protocol,
    )
    session = SignalSession(
        ctx,
        ws,
        room,
        participant,
        single_pc=single_pc,
        auto_subscribe=auto_subscribe,
        client_sdk=client_sdk,
    )
    participant.session = session
    ctx.sessions.add(session)
    try:
        try:
            await ctx.rooms.join(room, participant)
        except RoomError as exc:
            logger.info("join refused room=%s identity=%s: %s", room.name, grant.identity, exc)
            leave = rtc.LeaveRequest(
                reason=models.DisconnectReason.JOIN_FAILURE, action=rtc.LeaveRequest.Action.DISCONNECT
            )
            await session.send_signal(rtc.SignalResponse(leave=leave))
            return ws
        await session.send_signal(session.join_response())
        await ctx.rooms.announce_joined(room, participant)
        await session.start(join_request)
        await session.run()
    except Exception:
        logger.exception("signal session failed %s", session.log_id)
    finally:
        participant.state = models.ParticipantInfo.State.DISCONNECTED
        await ctx.rooms.leave(room, participant)
        await session.shutdown()
        ctx.sessions.discard(session)
    return ws


def add_signal_routes(app: web.Application, ctx: SignalContext) -> None:
    """Register ``/rtc``, ``/rtc/v1`` and their ``validate`` endpoints on ``app``."""
    with warnings.catch_warnings():  # string keys: other parts look the shared objects up by name
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        app["devserver_signal"] = ctx
    for path in ("/rtc", "/rtc/v1"):
        app.router.add_get(path, handle_rtc)
        app.router.add_get(path + "/validate", handle_validate)
        app.router.add_route("OPTIONS", path + "/validate", handle_options)
        app.router.add_route("OPTIONS", path, handle_options)
