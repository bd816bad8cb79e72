"""Minting least-privilege room tokens that bring the agent with the room."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from livekit import api
from livekit.protocol.agent_dispatch import RoomAgentDispatch
from livekit.protocol.room import RoomConfiguration

from signalling.service.config import TokenServiceSettings

PUBLISH_SOURCES = ["microphone", "camera", "screen_share", "screen_share_audio"]


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    identity: str
    room: str
    ttl_s: int


def generate_identity() -> str:
    return f"user-{secrets.token_hex(6)}"


def mint_room_token(
    settings: TokenServiceSettings,
    *,
    room: str,
    identity: str,
    name: str | None = None,
    metadata: str | None = None,
) -> IssuedToken:
    """A token for one room: join, publish mic/camera/screen, subscribe, data. Nothing else."""
    grants = api.VideoGrants(
        room_join=True,
        room=room,
        can_publish=True,
        can_publish_sources=list(PUBLISH_SOURCES),
        can_subscribe=True,
        can_publish_data=True,
        can_update_own_metadata=False,
    )
    token = (
        api.AccessToken(settings.livekit_api_key, settings.livekit_api_secret.get_secret_value())
        .with_identity(identity)
        .with_grants(grants)
        .with_ttl(timedelta(seconds=settings.token_ttl_s))
    )
    if name:
        token = token.with_name(name)
    if metadata:
        token = token.with_metadata(metadata)
    if settings.agent_name:
        token = token.with_room_config(
            RoomConfiguration(agents=[RoomAgentDispatch(agent_name=settings.agent_name)])
        )
    return IssuedToken(token=token.to_jwt(), identity=identity, room=room, ttl_s=settings.token_ttl_s)
