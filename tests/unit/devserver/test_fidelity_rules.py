"""The development server's rules that must match livekit-server: data packets from the signal path, ICE
trickles, join-time metadata, roomAdmin scope, job migration and the rate-limited log."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp import WSMessage, WSMsgType
from livekit import api
from livekit.protocol import agent as agent_pb
from livekit.protocol import models, rtc
from livekit.protocol import room as room_pb

from signalling.devserver.agents import AgentDispatcher, Worker
from signalling.devserver.auth import Authenticator, TokenError, join_overrides
from signalling.devserver.ratelog import RateLimitedLog
from signalling.devserver.rooms import Participant, RoomManager
from signalling.devserver.signal import SignalContext, SignalSession, TrickleError, parse_trickle
from signalling.devserver.twirp import TwirpError, _room_admin
from tests.unit.devserver.test_rooms import FakeSession

KEY, SECRET = "devkey", "unit-secret-unit-secret-unit-secret!"


class _FakeWS:
    closed = False

    async def send_bytes(self, data: bytes) -> None:
        return None

    async def close(self) -> None:
        self.closed = True


async def _room_with_sender(
    *, sender_permission: models.ParticipantPermission, kind: int = models.ParticipantInfo.Kind.STANDARD
) -> tuple[SignalSession, FakeSession]:
    """A real SignalSession for ``sender`` (its data handler under test) and a recording peer ``bob``."""
    manager = RoomManager()
    room = await manager.get_or_create("r")
    bob = Participant(identity="bob")
    bob_session = FakeSession()
    bob.session = bob_session
    await manager.join(room, bob)
    sender = Participant(identity="sender", permission=sender_permission, kind=kind)  # type: ignore[arg-type]
    ctx = SignalContext(rooms=manager, auth=Authenticator(KEY, SECRET))
    session = SignalSession(ctx, _FakeWS(), room, sender, single_pc=True, auto_subscribe=True)  # type: ignore[arg-type]
    sender.session = session
    await manager.join(room, sender)
    return session, bob_session


def _publisher() -> models.ParticipantPermission:
    return models.ParticipantPermission(can_publish_data=True, can_subscribe=True)


async def test_transcription_packets_from_non_agents_are_not_forwarded() -> None:
    session, bob = await _room_with_sender(sender_permission=_publisher())
    forged = models.DataPacket(
        transcription=models.Transcription(transcribed_participant_identity="bob", track_id="TR_x")
    )
    forged.transcription.segments.add(id="s1", text="words bob never said", final=True)
    await session._on_data(forged.SerializeToString(), "_reliable")
    user = models.DataPacket(user=models.UserPacket(payload=b"hello"))
    await session._on_data(user.SerializeToString(), "_reliable")
    assert [p.WhichOneof("value") for p in bob.data] == ["user"]
    assert bob.data[0].participant_identity == "sender"
    await session.shutdown()


async def test_transcription_packets_from_agents_are_forwarded_as_theirs() -> None:
    session, bob = await _room_with_sender(
        sender_permission=models.ParticipantPermission(can_publish_data=True, agent=True),
        kind=models.ParticipantInfo.Kind.AGENT,
    )
    packet = models.DataPacket(
        participant_identity="bob",
        transcription=models.Transcription(transcribed_participant_identity="bob", track_id="TR_x"),
    )
    await session._on_data(packet.SerializeToString(), "_reliable")
    (got,) = bob.data
    assert got.participant_identity == "sender"  # the sender is stamped; the transcribed identity stays
    assert got.transcription.transcribed_participant_identity == "bob"
    await session.shutdown()


async def test_agent_text_stream_on_behalf_of_a_participant_keeps_that_identity() -> None:
    session, bob = await _room_with_sender(
        sender_permission=models.ParticipantPermission(can_publish_data=True, agent=True),
        kind=models.ParticipantInfo.Kind.AGENT,
    )
    header = models.DataStream.Header(stream_id="st1", topic="lk.transcription")
    header.text_header.CopyFrom(models.DataStream.TextHeader())
    packet = models.DataPacket(participant_identity="bob", stream_header=header)
    await session._on_data(packet.SerializeToString(), "_reliable")
    (got,) = bob.data
    assert got.participant_identity == "bob" and got.stream_header.text_header.generated
    await session.shutdown()

    human, bob2 = await _room_with_sender(sender_permission=_publisher())
    await human._on_data(packet.SerializeToString(), "_reliable")
    assert bob2.data[0].participant_identity == "sender"  # a non-agent cannot speak for anyone
    await human.shutdown()


async def test_hidden_participant_identity_does_not_travel_on_its_data() -> None:
    session, bob = await _room_with_sender(
        sender_permission=models.ParticipantPermission(can_publish_data=True, hidden=True)
    )
    packet = models.DataPacket(user=models.UserPacket(payload=b"x", participant_identity="spoof"))
    await session._on_data(packet.SerializeToString(), "_reliable")
    (got,) = bob.data
    assert got.participant_identity == "" and got.participant_sid == ""
    assert got.user.participant_identity == "" and got.user.participant_sid == ""
    assert got.user.payload == b"x"
    await session.shutdown()


@pytest.mark.parametrize(
    "init",
    [
        "{not json",
        "[1, 2]",
        '{"candidate": "candidate:garbage"}',
        '{"candidate": "candidate:1 1 udp x 1.2.3.4 5 typ host"}',
        '{"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host", "sdpMLineIndex": "zero"}',
        '{"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host", "sdpMid": 7}',
    ],
)
def test_malformed_trickles_are_one_typed_error(init: str) -> None:
    with pytest.raises(TrickleError):
        parse_trickle(init)


def test_good_and_end_of_candidates_trickles() -> None:
    assert parse_trickle("") is None and parse_trickle('{"candidate": ""}') is None
    cand = parse_trickle(
        '{"candidate": "candidate:1 1 udp 2130706431 10.0.0.1 5000 typ host", "sdpMid": "0"}'
    )
    assert cand is not None and cand.ip == "10.0.0.1" and cand.port == 5000 and cand.sdpMid == "0"


async def test_malformed_trickles_log_one_line_each_and_are_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    session, _ = await _room_with_sender(sender_permission=_publisher())
    bad = rtc.SignalRequest(trickle=rtc.TrickleRequest(candidateInit='{"candidate": "candidate:garbage"}'))
    messages = [bad.SerializeToString()] * 40

    class _WS(_FakeWS):
        async def receive(self, timeout: float | None = None) -> WSMessage:  # noqa: ASYNC109
            if messages:
                return WSMessage(WSMsgType.BINARY, messages.pop(), None)
            return WSMessage(WSMsgType.CLOSE, None, None)

    session.ws = _WS()  # type: ignore[assignment]
    with caplog.at_level(logging.INFO, logger="signalling.devserver.signal"):
        await session.run()
    records = [r for r in caplog.records if "trickle" in r.getMessage()]
    assert 1 <= len(records) <= session._log.burst
    assert all(not r.exc_info and r.levelno == logging.WARNING for r in records)
    await session.shutdown()


def test_rate_limited_log_reports_what_it_suppressed(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = RateLimitedLog(logging.getLogger("t.ratelog"), burst=2, window_s=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="t.ratelog"):
        assert [log.warning("k", "line %d", i) for i in range(5)] == [True, True, False, False, False]
        assert log.warning("other", "another key")
        now[0] = 11.0
        assert log.warning("k", "later")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["line 0", "line 1", "another key", "3 more 'k' warnings were suppressed", "later"]


def _grant(**video: Any) -> Any:
    token = (
        api.AccessToken(KEY, SECRET)
        .with_identity("guest")
        .with_metadata("from-token")
        .with_attributes({"role": "guest"})
        .with_grants(api.VideoGrants(room_join=True, room="r", **video))
        .to_jwt()
    )
    return Authenticator(KEY, SECRET).join_grant(token)


def test_join_metadata_and_attributes_need_can_update_own_metadata() -> None:
    grant = _grant()
    assert join_overrides(grant, "", {}) == ("from-token", {"role": "guest"})
    with pytest.raises(TokenError) as err:
        join_overrides(grant, "", {"lk.agent.state": "speaking"})
    assert err.value.status == 401
    with pytest.raises(TokenError):
        join_overrides(grant, "self-made", {})
    allowed = _grant(can_update_own_metadata=True)
    assert join_overrides(allowed, "mine", {"floor": "yes", "role": ""}) == (
        "mine",
        {"role": "guest", "floor": "yes"},
    )


def _claims(**video: Any) -> Any:
    token = api.AccessToken(KEY, SECRET).with_identity("ops").with_grants(api.VideoGrants(**video)).to_jwt()
    return Authenticator(KEY, SECRET).verify(token)


def test_room_admin_without_a_room_administers_no_room() -> None:
    req = room_pb.ListParticipantsRequest(room="anyroom")
    with pytest.raises(TwirpError) as err:
        _room_admin(_claims(room_admin=True), req)
    assert err.value.code == "permission_denied"
    with pytest.raises(TwirpError):
        _room_admin(_claims(room_admin=True, room="other"), req)
    _room_admin(_claims(room_admin=True, room="anyroom"), req)  # its own room: allowed


def _worker(dispatcher: AgentDispatcher, wid: str, agent_name: str = "") -> Worker:
    worker = Worker(
        id=wid,
        agent_name=agent_name,
        job_type=agent_pb.JobType.JT_ROOM,
        version="1",
        permissions=models.ParticipantPermission(),
        ws=None,  # type: ignore[arg-type]
    )
    dispatcher.workers[wid] = worker
    return worker


async def test_a_worker_may_take_over_only_its_own_job_on_migration() -> None:
    manager = RoomManager()
    dispatcher = AgentDispatcher(manager, KEY, SECRET, retry_interval=60)
    await manager.get_or_create("r")
    (dispatch,) = dispatcher.list_dispatches("r")
    job = dispatch.jobs[0]
    await dispatcher._stop_task(dispatch)
    holder = _worker(dispatcher, "AW_holder")
    thief = _worker(dispatcher, "AW_thief")
    job.worker_id = holder.id
    job.proto.state.status = agent_pb.JobStatus.JS_RUNNING
    holder.jobs[job.id] = job

    dispatcher._on_migrate(thief, agent_pb.MigrateJobRequest(job_ids=[job.id]))
    assert job.worker_id == holder.id and job.id in holder.jobs and not thief.jobs

    other_agent = _worker(dispatcher, "AW_other", agent_name="someone-else")
    holder.connected = False  # its connection is gone: the job is an orphan
    dispatcher._on_migrate(other_agent, agent_pb.MigrateJobRequest(job_ids=[job.id]))
    assert job.worker_id == holder.id and not other_agent.jobs

    reconnected = _worker(dispatcher, "AW_again")
    dispatcher._on_migrate(reconnected, agent_pb.MigrateJobRequest(job_ids=[job.id]))
    assert job.worker_id == reconnected.id and job.id in reconnected.jobs
    await dispatcher.close()
    await asyncio.sleep(0)


async def test_a_failed_background_negotiation_step_is_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    session, _ = await _room_with_sender(sender_permission=_publisher())

    async def _match_media() -> None:
        raise RuntimeError("relay could not start")

    async def _fine() -> None:
        return None

    with caplog.at_level(logging.ERROR, logger="signalling.devserver.signal"):
        session._spawn(_match_media())
        session._spawn(_fine())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "_match_media" in errors[0].getMessage() and "identity=sender" in errors[0].getMessage()
    assert errors[0].exc_info is not None and "relay could not start" in str(errors[0].exc_info[1])
    assert not session._tasks  # finished tasks are let go either way
    await session.shutdown()
