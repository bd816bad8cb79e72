"""The server API of the development server: LiveKit's Twirp RoomService and AgentDispatchService.

Served at ``POST /twirp/livekit.<Service>/<Method>`` exactly as ``livekit-api`` calls it: protobuf bodies
(``application/protobuf``) or protojson (``application/json``), a Bearer token signed with the server's API
key, and failures as Twirp error JSON ``{"code": ..., "msg": ...}``. A missing or badly signed token gets
``unauthenticated`` (401); a valid token without the grant the call needs gets ``permission_denied`` (403).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit.api.access_token import Claims
from livekit.protocol import agent_dispatch as dispatch_pb
from livekit.protocol import room as room_pb

from llmrtc.errors import ProtocolError
from signalling.devserver.agents import AgentDispatcher
from signalling.devserver.auth import Authenticator, TokenError, extract_token
from signalling.devserver.rooms import RoomError, RoomManager

if TYPE_CHECKING:
    from signalling.devserver.server import DevServer

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

PREFIX = "/twirp"

#: Twirp error code -> HTTP status (https://twitchtv.github.io/twirp/docs/spec_v7.html#error-codes).
TWIRP_STATUS = {
    "canceled": 408,
    "invalid_argument": 400,
    "malformed": 400,
    "deadline_exceeded": 408,
    "not_found": 404,
    "bad_route": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "unauthenticated": 401,
    "resource_exhausted": 429,
    "failed_precondition": 412,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "dataloss": 500,
}


class TwirpError(ProtocolError):
    """A Twirp call failed; ``code`` is a Twirp error code."""

    @property
    def status(self) -> int:
        """The HTTP status for this error's code."""
        return TWIRP_STATUS.get(self.code, 500)


# A grant check: (claims, request) -> None, raising TwirpError("permission_denied") when not allowed.
GrantCheck = Callable[[Claims, Message], None]
Handler = Callable[[Message], Awaitable[Message]]


@dataclass(frozen=True)
class Method:
    """One Twirp method: its request type, the grant it needs and its implementation."""

    request: type[Message]
    check: GrantCheck
    handler: Handler


def _room_create(claims: Claims, _req: Message) -> None:
    if claims.video is None or not claims.video.room_create:
        raise TwirpError("permissions denied: roomCreate grant required", code="permission_denied")


def _room_list(claims: Claims, _req: Message) -> None:
    if claims.video is None or not claims.video.room_list:
        raise TwirpError("permissions denied: roomList grant required", code="permission_denied")


def _room_admin(claims: Claims, req: Message) -> None:
    room = getattr(req, "room", "")
    video = claims.video
    if video is None or not video.room_admin:
        raise TwirpError("permissions denied: roomAdmin grant required", code="permission_denied")
    if video.room != room:
        # as livekit-server: roomAdmin is for the token's own room only; a token naming no room administers
        # none (not every room)
        raise TwirpError(
            f"permissions denied: token is not valid for room {room!r}", code="permission_denied"
        )


class TwirpAPI:
    """RoomService and AgentDispatchService over Twirp, backed by the room manager and the dispatcher."""

    def __init__(
        self, rooms: RoomManager, dispatcher: AgentDispatcher, *, api_key: str, api_secret: str
    ) -> None:
        self.rooms = rooms
        self.dispatcher = dispatcher
        self._auth = Authenticator(api_key, api_secret)
        self.methods: dict[tuple[str, str], Method] = {
            ("RoomService", "CreateRoom"): Method(room_pb.CreateRoomRequest, _room_create, self.create_room),
            ("RoomService", "ListRooms"): Method(room_pb.ListRoomsRequest, _room_list, self.list_rooms),
            ("RoomService", "DeleteRoom"): Method(room_pb.DeleteRoomRequest, _room_create, self.delete_room),
            ("RoomService", "UpdateRoomMetadata"): Method(
                room_pb.UpdateRoomMetadataRequest, _room_admin, self.update_room_metadata
            ),
            ("RoomService", "ListParticipants"): Method(
                room_pb.ListParticipantsRequest, _room_admin, self.list_participants
            ),
            ("RoomService", "GetParticipant"): Method(
                room_pb.RoomParticipantIdentity, _room_admin, self.get_participant
            ),
            ("RoomService", "RemoveParticipant"): Method(
                room_pb.RoomParticipantIdentity, _room_admin, self.remove_participant
            ),
            ("RoomService", "UpdateParticipant"): Method(
                room_pb.UpdateParticipantRequest, _room_admin, self.update_participant
            ),
            ("RoomService", "SendData"): Method(room_pb.SendDataRequest, _room_admin, self.send_data),
            ("AgentDispatchService", "CreateDispatch"): Method(
                dispatch_pb.CreateAgentDispatchRequest, _room_admin, self.create_dispatch
            ),
            ("AgentDispatchService", "ListDispatch"): Method(
                dispatch_pb.ListAgentDispatchRequest, _room_admin, self.list_dispatch
            ),
            ("AgentDispatchService", "DeleteDispatch"): Method(
                dispatch_pb.DeleteAgentDispatchRequest, _room_admin, self.delete_dispatch
            ),
        }

    def add_routes(self, app: web.Application) -> None:
        """Serve ``/twirp/livekit.<Service>/<Method>`` on ``app``."""
        app.router.add_route("*", PREFIX + "/livekit.{service}/{method}", self.handle)

    # transport ---------------------------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.Response:
        """Decode, authenticate, authorize and run one Twirp call."""
        service, name = request.match_info["service"], request.match_info["method"]
        try:
            return await self._call(request, service, name)
        except TwirpError as exc:
            logger.info("twirp %s/%s refused: %s %s", service, name, exc.code, exc.message)
            return _error(exc.code, exc.message)
        except TokenError as exc:
            logger.info("twirp %s/%s refused: %s", service, name, exc.message)
            code = "permission_denied" if exc.status == 403 else "unauthenticated"
            return _error(code, exc.message)
        except RoomError as exc:
            return _error(exc.code if exc.code in TWIRP_STATUS else "not_found", exc.message)
        except Exception:
            logger.exception("twirp %s/%s failed", service, name)
            return _error("internal", "internal server error")

    async def _call(self, request: web.Request, service: str, name: str) -> web.Response:
        if request.method != "POST":
            raise TwirpError(f"unsupported method {request.method} (only POST is allowed)", code="bad_route")
        method = self.methods.get((service, name))
        if method is None:
            raise TwirpError(f"no handler for livekit.{service}/{name}", code="bad_route")
        content_type = request.content_type
        if content_type not in ("application/protobuf", "application/json"):
            raise TwirpError(f"unexpected Content-Type {content_type!r}", code="bad_route")
        token = extract_token(request.headers.get("Authorization"), None)
        claims = self._auth.verify(token)
        body = await request.read()
        req = method.request()
        try:
            if content_type == "application/json":
                json_format.Parse(body or b"{}", req, ignore_unknown_fields=True)
            else:
                req.ParseFromString(body)
        except (DecodeError, json_format.ParseError) as exc:
            raise TwirpError(f"the request body could not be decoded: {exc}", code="malformed") from None
        method.check(claims, req)
        result = await method.handler(req)
        logger.info("twirp %s/%s ok identity=%s", service, name, claims.identity or "-")
        if content_type == "application/json":
            return web.Response(
                # like Twirp's default JSON: proto field names, zero values included
                text=json_format.MessageToJson(
                    result,
                    preserving_proto_field_name=True,
                    always_print_fields_with_no_presence=True,
                    indent=None,
                ),
                content_type="application/json",
            )
        return web.Response(body=result.SerializeToString(), content_type="application/protobuf")

    # RoomService -------------------------------------------------------------------------------------------
    async def create_room(self, msg: Message) -> Message:
        req = _as(msg, room_pb.CreateRoomRequest)
        if not req.name:
            raise TwirpError("name is required", code="invalid_argument")
        room = await self.rooms.get_or_create(
            req.name,
            empty_timeout=req.empty_timeout or None,
            departure_timeout=req.departure_timeout or None,
            metadata=req.metadata or None,
            agents=list(req.agents) or None,
            max_participants=req.max_participants or None,
        )
        return room.to_proto()

    async def list_rooms(self, msg: Message) -> Message:
        req = _as(msg, room_pb.ListRoomsRequest)
        rooms = self.rooms.list(list(req.names) or None)
        return room_pb.ListRoomsResponse(rooms=[r.to_proto() for r in rooms])

    async def delete_room(self, msg: Message) -> Message:
        req = _as(msg, room_pb.DeleteRoomRequest)
        await self.rooms.delete(req.room)
        return room_pb.DeleteRoomResponse()

    async def update_room_metadata(self, msg: Message) -> Message:
        req = _as(msg, room_pb.UpdateRoomMetadataRequest)
        room = await self.rooms.update_room_metadata(req.room, req.metadata)
        return room.to_proto()

    async def list_participants(self, msg: Message) -> Message:
        req = _as(msg, room_pb.ListParticipantsRequest)
        room = self.rooms.get(req.room)
        if room is None:
            raise TwirpError(f"room {req.room!r} does not exist", code="not_found")
        return room_pb.ListParticipantsResponse(
            participants=[p.to_proto() for p in room.participants.values()]
        )

    async def get_participant(self, msg: Message) -> Message:
        req = _as(msg, room_pb.RoomParticipantIdentity)
        return self.rooms.get_participant(req.room, req.identity).to_proto()

    async def remove_participant(self, msg: Message) -> Message:
        req = _as(msg, room_pb.RoomParticipantIdentity)
        await self.rooms.remove_participant(req.room, req.identity)
        return room_pb.RemoveParticipantResponse()

    async def update_participant(self, msg: Message) -> Message:
        req = _as(msg, room_pb.UpdateParticipantRequest)
        participant = await self.rooms.update_participant(
            req.room,
            req.identity,
            metadata=req.metadata or None,
            attributes=dict(req.attributes) or None,
            permission=req.permission if req.HasField("permission") else None,
            name=req.name or None,
        )
        return participant.to_proto()

    async def send_data(self, msg: Message) -> Message:
        req = _as(msg, room_pb.SendDataRequest)
        if not req.data:
            raise TwirpError("data is required", code="invalid_argument")
        await self.rooms.send_data(
            req.room,
            req.data,
            kind=req.kind,
            destination_identities=list(req.destination_identities),
            topic=req.topic if req.HasField("topic") else None,
        )
        return room_pb.SendDataResponse()

    # AgentDispatchService ----------------------------------------------------------------------------------
    async def create_dispatch(self, msg: Message) -> Message:
        req = _as(msg, dispatch_pb.CreateAgentDispatchRequest)
        if not req.room:
            raise TwirpError("room is required", code="invalid_argument")
        if self.rooms.get(req.room) is None:
            # a new room created for this dispatch: its configuration names the agent, so the dispatcher
            # makes exactly this dispatch (and not the automatic unnamed one)
            spec = dispatch_pb.RoomAgentDispatch(
                agent_name=req.agent_name, metadata=req.metadata, attributes=dict(req.attributes)
            )
            await self.rooms.get_or_create(req.room, agents=[spec])
            made = self.dispatcher.list_dispatches(req.room)
            if made:
                return made[-1].to_proto()
        dispatch = self.dispatcher.create_dispatch(
            req.room, agent_name=req.agent_name, metadata=req.metadata, attributes=dict(req.attributes)
        )
        return dispatch.to_proto()

    async def list_dispatch(self, msg: Message) -> Message:
        req = _as(msg, dispatch_pb.ListAgentDispatchRequest)
        found = self.dispatcher.list_dispatches(req.room, req.dispatch_id)
        return dispatch_pb.ListAgentDispatchResponse(agent_dispatches=[d.to_proto() for d in found])

    async def delete_dispatch(self, msg: Message) -> Message:
        req = _as(msg, dispatch_pb.DeleteAgentDispatchRequest)
        dispatch = await self.dispatcher.delete_dispatch(req.room, req.dispatch_id)
        return dispatch.to_proto()


def add_server_api(app: web.Application, server: DevServer) -> None:
    """Add agent workers (``/agent``) and the Twirp API to a :class:`DevServer`'s application.

    Stores ``app["devserver_agents"]`` (the :class:`AgentDispatcher`) and ``app["devserver_twirp"]``; workers
    are disconnected when the application shuts down.
    """
    signal = app.get("devserver_signal")
    dispatcher = AgentDispatcher(
        server.rooms,
        server.api_key,
        server.api_secret,
        server_info=signal.server_info if signal is not None else None,
    )
    twirp = TwirpAPI(server.rooms, dispatcher, api_key=server.api_key, api_secret=server.api_secret)
    dispatcher.add_routes(app)
    twirp.add_routes(app)
    app["devserver_agents"] = dispatcher
    app["devserver_twirp"] = twirp

    async def _close(_app: web.Application) -> None:
        await dispatcher.close()

    app.on_shutdown.append(_close)


def _as(msg: Message, cls: type[M]) -> M:
    if not isinstance(msg, cls):
        raise TwirpError(f"expected {cls.__name__}", code="internal")
    return msg


def _error(code: str, msg: str) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=TWIRP_STATUS.get(code, 500))


__all__ = ["PREFIX", "TWIRP_STATUS", "TwirpAPI", "TwirpError", "add_server_api"]
