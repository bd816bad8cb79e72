"""Narrowing livekit's process-wide native event subscriptions to what each subscriber needs.

The livekit Python SDK delivers every event of its native core (every audio frame of every stream, every
callback of every request, the events of every room) from one callback thread to each subscriber's event
loop, and each subscriber drops what is not its own on that loop: every delivery is a cross-thread wake-up.
In a worker holding N rooms on the thread executor that is N loops woken for each room's events, N² wake-ups
in all, the dominant per-room cost past a few rooms. These helpers narrow a subscription's filter, which the
SDK runs on its callback thread, so an event wakes only the loop that wants it.

They reach into the SDK's private subscriber list (``FfiClient.instance.queue``); with an SDK that does not
have it they change nothing (the SDK's own filtering stays, and is correct, only costlier).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from livekit import rtc

log = logging.getLogger("llmrtc.worker.ffi_events")

Filter = Callable[[Any], bool]

STREAM_EVENTS = frozenset({"audio_stream_event", "video_stream_event"})
"""Frames: each stream subscribes to its own (:func:`only_own_frames`)."""
CAPTURE_CALLBACK = "capture_audio_frame"
"""Each audio source's capture waits for its own callback on a subscription of its own."""


def _narrow(subscription: object, keep: Filter) -> bool:
    try:
        from livekit.rtc._ffi_client import FfiClient

        ffi_queue = FfiClient.instance.queue
        with ffi_queue._lock:
            subscribers = ffi_queue._subscribers
            if not any(q is subscription for q, _, _ in subscribers):
                return False
            ffi_queue._subscribers = [
                (q, loop, keep if q is subscription else f) for q, loop, f in subscribers
            ]
    except (AttributeError, ImportError, TypeError, ValueError):  # another SDK version
        log.debug("livekit SDK without the expected event queue: subscriptions left as they are")
        return False
    return True


def only_own_frames(stream: rtc.AudioStream) -> bool:
    """Deliver to ``stream`` only its own frames (the SDK gives each stream every stream's frames and drops the
    others on the stream's loop). Returns whether the subscription was narrowed."""
    try:
        subscription = stream._ffi_queue
        handle = stream._ffi_handle.handle
    except AttributeError:
        return False

    def is_own(event: Any) -> bool:
        return bool(
            event.WhichOneof("message") == "audio_stream_event"
            and event.audio_stream_event.stream_handle == handle
        )

    return _narrow(subscription, is_own)


def only_own_room_events(room: rtc.Room) -> bool:
    """Deliver to a connected ``room`` only what its event task acts on: its own room events and everything
    that is not a frame, a capture callback or another room's event (the request callbacks its local
    participant waits for carry no room handle, so they all pass). The SDK gives each room every event but
    frames: with N rooms each agent audio frame captured, and each room event, woke all N rooms' loops.
    Returns whether the subscription was narrowed."""
    try:
        subscription = room._ffi_queue
        ffi_handle = room._ffi_handle
    except AttributeError:  # another SDK version
        return False
    if ffi_handle is None:  # not connected
        return False
    handle = ffi_handle.handle

    def is_for_room(event: Any) -> bool:
        kind = event.WhichOneof("message")
        if kind in STREAM_EVENTS or kind == CAPTURE_CALLBACK:
            return False
        return kind != "room_event" or bool(event.room_event.room_handle == handle)

    return _narrow(subscription, is_for_room)


__all__ = ["only_own_frames", "only_own_room_events"]
