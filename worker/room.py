"""Room I/O: the worker's audio and data through ``livekit.rtc`` (with :mod:`worker.audio_sources` and
:mod:`worker.ffi_events`).

:class:`RoomIO` subscribes to every human's microphone and hands 16 kHz mono PCM16 to a
:class:`RoomHandler`, one stream per participant; publishes the agent's audio track (:class:`AgentAudio`);
sends data messages, ``lk.transcription`` text streams and the ``lk.agent.state`` attribute, in order,
from one outbox task; and passes client messages on the ``llmrtc`` topic to the handler.

When a room ends, its agent track is unpublished while the room is still connected, so the SDK frees the
track's native audio source (and that source's capture thread); a source the SDK could not free (the server
ended the room first: :class:`worker.audio_sources.SourcePool`) is kept for the next rooms of the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from livekit import rtc

from worker.audio_sources import SOURCES
from worker.ffi_events import only_own_frames, only_own_room_events
from worker.load import note_underrun
from worker.protocol import TOPIC, AgentState, LLMChunkMsg, ServerEvent

log = logging.getLogger("llmrtc.worker.room")

LISTEN_RATE = 16000
TOPIC_TRANSCRIPTION = "lk.transcription"
ATTR_AGENT_STATE = "lk.agent.state"
ATTR_SEGMENT_ID = "lk.segment_id"
ATTR_TRACK_ID = "lk.transcribed_track_id"
ATTR_FINAL = "lk.transcription_final"
FRAME_MS = 40
"""Agent audio goes to the native source in 40 ms frames (25 requests a second while speaking). A clear still
takes effect at once: it drops the native queue, and of what is not yet handed over at most one frame."""
QUEUE_MS = 120
"""The native source's queue. A frame is handed over only when it fits (:meth:`AgentAudio._wait_for_room`)."""
SILENCE_AFTER_CLEAR_MS = 150
LISTEN_FRAME_MS = 32
"""Humans' audio arrives in 32 ms frames (512 samples at 16 kHz: one Silero window each), a third of the
hand-offs from the native SDK of its default 10 ms frames, for at most 22 ms more before a decision."""
UNDERRUN_GAP_S = 0.5
"""A capture finding the track's queue empty within this long of the previous one is an underrun (a gap
a listener hears mid-answer), reported to :mod:`worker.load`."""


@dataclass(frozen=True, slots=True)
class ParticipantInfo:
    identity: str
    name: str
    attributes: dict[str, str] = field(default_factory=dict)
    is_agent: bool = False


class RoomHandler(Protocol):
    """What the room reports to the conversation session. Called on the job's event loop."""

    def on_participant_joined(self, participant: ParticipantInfo) -> None: ...

    def on_participant_left(self, identity: str) -> None: ...

    def on_participant_attributes(self, participant: ParticipantInfo) -> None: ...

    def on_audio(self, identity: str, pcm16k: bytes) -> None: ...

    def on_data(self, identity: str, payload: bytes) -> None: ...


def _info(participant: rtc.RemoteParticipant) -> ParticipantInfo:
    return ParticipantInfo(
        identity=participant.identity,
        name=participant.name or participant.identity,
        attributes=dict(participant.attributes),
        is_agent=participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT,
    )


class AgentAudio:
    """The agent's published audio track: capture PCM at any rate, clear it at once on barge-in."""

    def __init__(self, sample_rate: int = 24000, queue_ms: int = QUEUE_MS) -> None:
        self.sample_rate = sample_rate
        self._queue_ms = queue_ms
        self._source = SOURCES.take(sample_rate, 1, queue_ms)  # a pinned one of an ended room, or new
        self.track = rtc.LocalAudioTrack.create_audio_track("agent-voice", self._source)
        self._resamplers: dict[int, rtc.AudioResampler] = {}
        self._frame_bytes = sample_rate * FRAME_MS // 1000 * 2
        self._pending = bytearray()
        self._silence_task: asyncio.Task[None] | None = None
        self._capture_lock = asyncio.Lock()  # the native source takes one capture at a time
        # clears so far: a frame still waiting for room when one comes is dropped with the rest
        self._cleared = 0
        self._waiting_s = 0.0  # frames given to _capture_frame and not yet handed to the native source
        self._silence_only = False  # since the last clear only its silence was queued
        self._last_capture = 0.0
        self._streaming = False
        self.underruns = 0

    async def capture(self, pcm: bytes, sample_rate: int) -> None:
        """Queue PCM16 mono for playout (waits while the source's small queue is full)."""
        if sample_rate != self.sample_rate:
            resampler = self._resamplers.get(sample_rate)
            if resampler is None:
                resampler = rtc.AudioResampler(sample_rate, self.sample_rate, num_channels=1)
                self._resamplers[sample_rate] = resampler
            frames = resampler.push(bytearray(pcm))
            pcm = b"".join(bytes(f.data) for f in frames)
        if self._silence_only and pcm:
            await self._end_silence()
        self._pending.extend(pcm)
        while len(self._pending) >= self._frame_bytes:
            chunk = bytes(self._pending[: self._frame_bytes])
            del self._pending[: self._frame_bytes]
            await self._capture_frame(chunk)

    async def _end_silence(self) -> None:
        """Real audio follows a clear: drop the silence queued after it (it covers a cut that is now followed
        by speech, and would only delay that speech by up to the queue's length)."""
        self._silence_only = False
        task, self._silence_task = self._silence_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._source.clear_queue()

    async def flush(self) -> None:
        """Send the last partial frame, padded with silence."""
        if self._pending:
            chunk = bytes(self._pending) + b"\x00" * (self._frame_bytes - len(self._pending))
            self._pending.clear()
            await self._capture_frame(chunk)
        self._streaming = False  # the end of an answer: the queue may run dry now

    def _check_underrun(self) -> None:
        now = time.monotonic()
        if (
            self._streaming
            and now - self._last_capture < UNDERRUN_GAP_S
            and self._source.queued_duration <= 0.0
        ):
            self.underruns += 1
            note_underrun()
        self._last_capture = now
        self._streaming = True

    async def _capture_frame(self, chunk: bytes) -> None:
        samples = len(chunk) // 2
        frame_s = samples / self.sample_rate
        cleared = self._cleared
        self._waiting_s += frame_s
        try:
            async with self._capture_lock:
                await self._wait_for_room(frame_s)
                if cleared != self._cleared:
                    return  # a clear came while it waited: dropped (and counted) with the rest
                self._waiting_s -= frame_s
                frame_s = 0.0
                self._check_underrun()
                await self._source.capture_frame(rtc.AudioFrame(chunk, self.sample_rate, 1, samples))
        finally:
            self._waiting_s -= frame_s

    async def _wait_for_room(self, frame_s: float) -> None:
        """Wait until the native queue has room for a frame, so the SDK's capture returns at once.

        The SDK's ``capture_frame`` waits for room itself, but while it waits its loop receives every native
        event of the process (every room's audio frames included): pacing here waits on a timer instead.
        """
        # the queue drains in real time; a clear meanwhile empties it (and the frame is then dropped)
        delay = self._source.queued_duration - (self._queue_ms / 1000 - frame_s)
        if delay > 0:
            await asyncio.sleep(delay)

    @property
    def queued_s(self) -> float:
        """Audio captured but not yet played out, in seconds."""
        return float(self._source.queued_duration)

    def clear(self) -> float:
        """Drop everything not yet played; return how many seconds were dropped.

        A little real silence follows, so listeners decode silence at once instead of concealing the cut
        (a receiver that stops getting packets mid-word extrapolates the last sound for a while).
        """
        dropped = self.queued_s + self._waiting_s + len(self._pending) / 2 / self.sample_rate
        self._cleared += 1
        self._silence_only = True
        self._pending.clear()
        self._source.clear_queue()
        self._streaming = False
        if self._silence_task is None or self._silence_task.done():
            self._silence_task = asyncio.ensure_future(self._send_silence(SILENCE_AFTER_CLEAR_MS))
        return dropped

    async def _send_silence(self, ms: int) -> None:
        silence = b"\x00" * self._frame_bytes
        try:
            for _ in range(-(-ms // FRAME_MS)):
                await self._capture_frame(silence)
        except Exception as exc:  # the track may be closing
            log.debug("could not send silence: %s", exc)

    async def wait_for_playout(self) -> None:
        await self._source.wait_for_playout()

    async def aclose(self, *, pinned: bool = False) -> None:
        """Stop sending. ``pinned``: the room ended without this track being unpublished (the server ended
        it), so the SDK keeps the native source alive anyway: keep it for a later room
        (:class:`worker.audio_sources.SourcePool`) instead of closing it."""
        if self._silence_task is not None:
            self._silence_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._silence_task
        if pinned:
            await SOURCES.give(self._source, self._queue_ms)
            return
        await self._source.aclose()
        handle = getattr(self.track, "_ffi_handle", None)
        if handle is not None:
            # the unpublished track held the native source: free it now, even while livekit-agents' JobContext
            # still references the room, its participant and so this track after the job
            handle.dispose()


@dataclass
class _Pending:
    """A queued message that later pieces of the same turn or segment join until it is sent."""

    key: str
    parts: list[str]


class RoomIO:
    """Audio in, agent audio out, data in and out for one room."""

    def __init__(self, room: rtc.Room, *, sample_rate: int = 24000) -> None:
        self.room = room
        self._handler: RoomHandler | None = None
        self.audio = AgentAudio(sample_rate)
        self._agent_track_sid = ""
        self._streams: dict[str, tuple[str, asyncio.Task[None]]] = {}
        self._stopped: set[asyncio.Task[None]] = set()
        self._outbox: asyncio.Queue[Callable[[], Awaitable[None]] | asyncio.Event | None] = asyncio.Queue()
        """Sends in order; an event is set when reached (:meth:`drain`), also once the room is gone."""
        self._outbox_task: asyncio.Task[None] | None = None
        self._agent_writer: rtc.TextStreamWriter | None = None
        self._agent_segment = ""
        self._chunk: _Pending | None = None
        """The last queued, not yet sent ``llm_chunk``: later chunks of its turn join it (one message)."""
        self._delta: _Pending | None = None
        """The last queued, not yet sent transcription delta: later deltas of its segment join it."""
        self._state: AgentState | None = None
        self._closed = False

    def _h(self) -> RoomHandler:
        assert self._handler is not None, "RoomIO.start() binds the handler"
        return self._handler

    @property
    def local_identity(self) -> str:
        return self.room.local_participant.identity

    async def start(self, handler: RoomHandler) -> None:
        """Publish the agent track, hook room events and pick up participants already there."""
        self._handler = handler
        only_own_room_events(self.room)  # not every other room's events and agent audio callbacks too
        self._outbox_task = asyncio.create_task(self._run_outbox(), name="llmrtc-outbox")
        opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        publication = await self.room.local_participant.publish_track(self.audio.track, opts)
        self._agent_track_sid = publication.sid
        self.room.on("participant_connected", self._on_participant_connected)
        self.room.on("participant_disconnected", self._on_participant_disconnected)
        self.room.on("participant_attributes_changed", self._on_attributes_changed)
        self.room.on("track_subscribed", self._on_track_subscribed)
        self.room.on("track_unsubscribed", self._on_track_unsubscribed)
        self.room.on("data_received", self._on_data_received)
        for participant in list(self.room.remote_participants.values()):
            self._on_participant_connected(participant)
            for pub in list(participant.track_publications.values()):
                if pub.track is not None and pub.subscribed:
                    self._on_track_subscribed(pub.track, pub, participant)

    def humans(self) -> list[ParticipantInfo]:
        return [i for i in (_info(p) for p in self.room.remote_participants.values()) if not i.is_agent]

    # ------------------------------------------------------------------------------------------ room events

    def _on_participant_connected(self, participant: rtc.RemoteParticipant) -> None:
        info = _info(participant)
        if not info.is_agent:
            self._h().on_participant_joined(info)

    def _on_participant_disconnected(self, participant: rtc.RemoteParticipant) -> None:
        self._stop_stream(participant.identity)
        if participant.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            self._h().on_participant_left(participant.identity)

    def _on_attributes_changed(self, changed: dict[str, str], participant: rtc.Participant) -> None:
        if isinstance(participant, rtc.RemoteParticipant):
            self._h().on_participant_attributes(_info(participant))

    def _on_track_subscribed(
        self, track: rtc.Track, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if track.kind != rtc.TrackKind.KIND_AUDIO or self._closed:
            return
        if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            return
        if publication.source not in (rtc.TrackSource.SOURCE_MICROPHONE, rtc.TrackSource.SOURCE_UNKNOWN):
            return
        self._stop_stream(participant.identity)
        stream = rtc.AudioStream(
            track, sample_rate=LISTEN_RATE, num_channels=1, frame_size_ms=LISTEN_FRAME_MS
        )
        only_own_frames(stream)
        task = asyncio.create_task(
            self._pump_audio(participant.identity, stream), name=f"llmrtc-audio-{participant.identity}"
        )
        self._streams[participant.identity] = (publication.sid, task)
        log.info("listening to %s (track %s)", participant.identity, publication.sid)

    def _on_track_unsubscribed(
        self, track: rtc.Track, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        current = self._streams.get(participant.identity)
        if current is not None and current[0] == publication.sid:
            self._stop_stream(participant.identity)

    def _on_data_received(self, packet: rtc.DataPacket) -> None:
        if packet.topic != TOPIC or packet.participant is None:
            return
        self._h().on_data(packet.participant.identity, bytes(packet.data))

    async def _pump_audio(self, identity: str, stream: rtc.AudioStream) -> None:
        try:
            async for event in stream:
                self._h().on_audio(identity, bytes(event.frame.data))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("audio stream of %s failed", identity)
        finally:
            await stream.aclose()

    def _stop_stream(self, identity: str) -> None:
        entry = self._streams.pop(identity, None)
        if entry is not None:
            entry[1].cancel()
            self._stopped.add(entry[1])
            entry[1].add_done_callback(self._stopped.discard)

    def track_sid_of(self, identity: str) -> str:
        entry = self._streams.get(identity)
        return entry[0] if entry else ""

    # ------------------------------------------------------------------------------------------ outbound

    def send(self, event: ServerEvent, destination: list[str] | None = None) -> None:
        """Send one event on the ``llmrtc`` topic (to everyone, or only to ``destination``).

        ``llm_chunk`` events that queue up behind a busy outbox are sent as one (their contents joined,
        in order): fewer messages exactly when the worker is loaded; none are merged when it keeps up.
        """
        dest = list(destination or [])
        self._delta = None  # order: no later delta joins one queued before this event
        if isinstance(event, LLMChunkMsg) and not dest:
            pending = self._chunk
            if pending is not None and pending.key == event.turn_id:
                pending.parts.append(event.content)
                return
            pending = _Pending(event.turn_id, [event.content])
            self._chunk = pending
            chunk = event

            async def publish_chunk() -> None:
                if self._chunk is pending:
                    self._chunk = None
                merged = chunk.model_copy(update={"content": "".join(pending.parts)})
                await self.room.local_participant.publish_data(
                    merged.to_bytes(), reliable=True, topic=TOPIC, destination_identities=[]
                )

            self._enqueue(publish_chunk)
            return
        self._chunk = None  # order: nothing joins a chunk queued before another event
        payload = event.to_bytes()

        async def publish() -> None:
            await self.room.local_participant.publish_data(
                payload, reliable=True, topic=TOPIC, destination_identities=dest
            )

        self._enqueue(publish)

    def set_agent_state(self, state: AgentState) -> None:
        """Set ``lk.agent.state`` (sent only when it changes)."""
        if state == self._state:
            return
        self._state = state
        self._chunk = self._delta = None

        async def update() -> None:
            await self.room.local_participant.set_attributes({ATTR_AGENT_STATE: state})

        self._enqueue(update)

    def user_transcription(self, identity: str, text: str, segment_id: str, final: bool = True) -> None:
        """An ``lk.transcription`` of what ``identity`` said, on behalf of their microphone track: interim
        (``final=False``, each one replacing the previous) or final, all of one utterance with ``segment_id``."""
        attrs = {ATTR_FINAL: "true" if final else "false", ATTR_SEGMENT_ID: segment_id}
        self._chunk = self._delta = None
        track_sid = self.track_sid_of(identity)
        if track_sid:
            attrs[ATTR_TRACK_ID] = track_sid

        async def publish() -> None:
            writer = await self.room.local_participant.stream_text(
                topic=TOPIC_TRANSCRIPTION, attributes=attrs, sender_identity=identity
            )
            await writer.write(text)
            await writer.aclose()

        self._enqueue(publish)

    def agent_transcription(self, segment_id: str, delta: str, final: bool = False) -> None:
        """Stream the agent's words as one ``lk.transcription`` segment; ``final`` closes it. Deltas that
        queue up behind a busy outbox are written as one."""
        self._chunk = None
        pending = self._delta
        if delta and not final and pending is not None and pending.key == segment_id:
            pending.parts.append(delta)
            return
        if delta and not final:
            pending = _Pending(segment_id, [delta])
            self._delta = pending
        else:
            self._delta = None
            pending = _Pending(segment_id, [delta])

        async def publish() -> None:
            if self._delta is pending:
                self._delta = None
            text = "".join(pending.parts)
            if self._agent_writer is None or self._agent_segment != segment_id:
                if self._agent_writer is not None:
                    await self._agent_writer.aclose(attributes={ATTR_FINAL: "true"})
                self._agent_writer = await self.room.local_participant.stream_text(
                    topic=TOPIC_TRANSCRIPTION,
                    attributes={
                        ATTR_FINAL: "false",
                        ATTR_SEGMENT_ID: segment_id,
                        ATTR_TRACK_ID: self._agent_track_sid,
                    },
                )
                self._agent_segment = segment_id
            if text:
                await self._agent_writer.write(text)
            if final:
                await self._agent_writer.aclose(
                    attributes={
                        ATTR_FINAL: "true",
                        ATTR_SEGMENT_ID: segment_id,
                        ATTR_TRACK_ID: self._agent_track_sid,
                    }
                )
                self._agent_writer = None

        self._enqueue(publish)

    def _enqueue(self, op: Callable[[], Awaitable[None]] | asyncio.Event) -> None:
        if self._closed:
            return
        self._outbox.put_nowait(op)

    async def _run_outbox(self) -> None:
        while True:
            op = await self._outbox.get()
            if op is None:
                return
            if isinstance(op, asyncio.Event):
                op.set()
                continue
            if not self.room.isconnected():
                continue
            try:
                await op()
            except Exception as exc:
                log.warning("could not send to the room: %s", exc)

    async def drain(self, limit_s: float = 5.0) -> None:
        """Wait until everything queued so far was sent (or dropped: the room is gone)."""
        done = asyncio.Event()
        self._enqueue(done)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(done.wait(), limit_s)

    async def _unpublish_agent_track(self) -> bool:
        """Unpublish the agent's track while the room is connected, so the SDK detaches it from its sender and
        frees its native source. Returns whether the source stays pinned by a sender that can no longer send
        (the server ended the session first: :class:`worker.audio_sources.SourcePool`)."""
        if not self._agent_track_sid:
            return False  # never published
        if not self.room.isconnected():
            return True
        ended = asyncio.Event()  # the SDK answers no request of a room it has seen end: wait for either

        def on_disconnected(*_: object) -> None:
            ended.set()

        self.room.on("disconnected", on_disconnected)
        unpublish = asyncio.ensure_future(self.room.local_participant.unpublish_track(self._agent_track_sid))
        disconnected = asyncio.ensure_future(ended.wait())
        try:
            await asyncio.wait({unpublish, disconnected}, timeout=2.0, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.room.off("disconnected", on_disconnected)
            for waiter in (unpublish, disconnected):
                waiter.cancel()
            await asyncio.gather(unpublish, disconnected, return_exceptions=True)
        if unpublish.done() and not unpublish.cancelled():
            exc = unpublish.exception()
            if exc is None:
                return False  # detached: the source goes with its last handle
            log.debug("could not unpublish the agent track: %s", exc)  # the server ended the session
            return True
        if ended.is_set() or not self.room.isconnected():
            return True
        log.warning("could not unpublish the agent track: timed out")
        return False  # still connected: it may still send, its source is not for another room

    async def aclose(self) -> None:
        """Stop every audio stream and the outbox; unpublish the agent track and close its source."""
        if self._closed:
            return
        if self._outbox_task is not None:
            await self.drain(limit_s=2.0)
        self._closed = True
        for identity in list(self._streams):
            self._stop_stream(identity)
        if self._stopped:
            await asyncio.gather(*self._stopped, return_exceptions=True)
        self._outbox.put_nowait(None)
        if self._outbox_task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._outbox_task, 2.0)
        for event in (
            "participant_connected",
            "participant_disconnected",
            "participant_attributes_changed",
            "track_subscribed",
            "track_unsubscribed",
            "data_received",
        ):
            with contextlib.suppress(Exception):
                self.room.off(event, getattr(self, _HANDLERS[event]))
        await self.audio.aclose(pinned=await self._unpublish_agent_track())


_HANDLERS = {
    "participant_connected": "_on_participant_connected",
    "participant_disconnected": "_on_participant_disconnected",
    "participant_attributes_changed": "_on_attributes_changed",
    "track_subscribed": "_on_track_subscribed",
    "track_unsubscribed": "_on_track_unsubscribed",
    "data_received": "_on_data_received",
}

__all__ = ["AgentAudio", "ParticipantInfo", "RoomHandler", "RoomIO"]
