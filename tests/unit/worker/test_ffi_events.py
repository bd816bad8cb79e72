"""``worker.ffi_events``: each room's and each audio stream's subscription to livekit's native events is narrowed
to what it acts on, on the SDK's callback thread (real SDK event types and subscriber list)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from livekit.rtc._ffi_client import FfiClient
from livekit.rtc._proto import ffi_pb2 as proto_ffi

from worker.ffi_events import only_own_frames, only_own_room_events

OWN, OTHER = 7, 8


def _event(**fields: Any) -> proto_ffi.FfiEvent:
    event = proto_ffi.FfiEvent()
    for path, value in fields.items():
        target: Any = event
        *parents, leaf = path.split("__")
        for name in parents:
            target = getattr(target, name)
        setattr(target, leaf, value)
    return event


@pytest.fixture
def subscription() -> Any:
    loop = asyncio.new_event_loop()
    queue = FfiClient.instance.queue.subscribe(
        loop, filter_fn=lambda e: e.WhichOneof("message") not in ("audio_stream_event", "video_stream_event")
    )
    yield queue
    FfiClient.instance.queue.unsubscribe(queue)
    loop.close()


def _filter_of(queue: object) -> Any:
    return next(f for q, _, f in FfiClient.instance.queue._subscribers if q is queue)


def test_a_room_gets_its_own_events_and_the_callbacks_its_participant_waits_for(subscription: Any) -> None:
    room = SimpleNamespace(_ffi_queue=subscription, _ffi_handle=SimpleNamespace(handle=OWN))
    assert only_own_room_events(room)  # type: ignore[arg-type]
    keep = _filter_of(subscription)
    assert keep(_event(room_event__room_handle=OWN))
    assert keep(_event(publish_track__async_id=3))  # what publish_track / unpublish_track wait for
    assert keep(_event(rpc_method_invocation__invocation_id=1))
    assert not keep(_event(room_event__room_handle=OTHER))  # another room of the process
    assert not keep(_event(capture_audio_frame__async_id=3))  # any room's agent audio callbacks
    assert not keep(_event(audio_stream_event__stream_handle=OWN))


def test_a_stream_gets_only_its_own_frames(subscription: Any) -> None:
    stream = SimpleNamespace(_ffi_queue=subscription, _ffi_handle=SimpleNamespace(handle=OWN))
    assert only_own_frames(stream)  # type: ignore[arg-type]
    keep = _filter_of(subscription)
    assert keep(_event(audio_stream_event__stream_handle=OWN))
    assert not keep(_event(audio_stream_event__stream_handle=OTHER))
    assert not keep(_event(room_event__room_handle=OWN))


def test_without_the_sdk_internals_nothing_changes(subscription: Any) -> None:
    before = list(FfiClient.instance.queue._subscribers)
    assert not only_own_room_events(SimpleNamespace(_ffi_handle=None, _ffi_queue=subscription))  # type: ignore[arg-type]
    assert not only_own_room_events(SimpleNamespace())  # type: ignore[arg-type]
    assert not only_own_frames(SimpleNamespace(_ffi_queue=object(), _ffi_handle=SimpleNamespace(handle=1)))  # type: ignore[arg-type]
    assert FfiClient.instance.queue._subscribers == before
