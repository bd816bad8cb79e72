"""Admin queries against the LiveKit server API (livekit-api)."""

from __future__ import annotations

import aiohttp
from livekit import api
from pydantic import BaseModel


class RoomSummary(BaseModel):
    name: str
    sid: str
    num_participants: int
    created_at: int


class ParticipantSummary(BaseModel):
    identity: str
    name: str
    sid: str
    kind: str
    joined_at: int


class AdminAPI:
    """Lists rooms and participants. The HTTP session opens lazily, on the service's own loop."""

    def __init__(self, url: str, api_key: str, api_secret: str) -> None:
        self._url = url
        self._key = api_key
        self._secret = api_secret
        self._session: aiohttp.ClientSession | None = None
        self._api: api.LiveKitAPI | None = None

    def _client(self) -> api.LiveKitAPI:
        if self._api is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
            self._api = api.LiveKitAPI(self._url, self._key, self._secret, session=self._session)
        return self._api

    async def list_rooms(self) -> list[RoomSummary]:
        res = await self._client().room.list_rooms(api.ListRoomsRequest())
        return [
            RoomSummary(
                name=r.name, sid=r.sid, num_participants=r.num_participants, created_at=r.creation_time
            )
            for r in res.rooms
        ]

    async def list_participants(self, room: str) -> list[ParticipantSummary]:
        res = await self._client().room.list_participants(api.ListParticipantsRequest(room=room))
        return [
            ParticipantSummary(
                identity=p.identity,
                name=p.name,
                sid=p.sid,
                kind=api.ParticipantInfo.Kind.Name(p.kind).lower(),
                joined_at=p.joined_at,
            )
            for p in res.participants
        ]

    async def aclose(self) -> None:
        if self._api is not None:
            await self._api.aclose()
        if self._session is not None:
            await self._session.close()
        self._api = None
        self._session = None
