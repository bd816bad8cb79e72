"""Access-token checks for the development server (same refusals as livekit-server: HTTP 401 + reason)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import jwt
from livekit.api import TokenVerifier
from livekit.api.access_token import Claims
from livekit.protocol import models

from llmrtc.errors import ProtocolError

logger = logging.getLogger(__name__)

_SOURCES = {
    "camera": models.TrackSource.CAMERA,
    "microphone": models.TrackSource.MICROPHONE,
    "screen_share": models.TrackSource.SCREEN_SHARE,
    "screen_share_audio": models.TrackSource.SCREEN_SHARE_AUDIO,
}


class TokenError(ProtocolError):
    """A token was refused; ``status`` is the HTTP status the server answers with."""

    def __init__(self, message: str, *, status: int = 401, code: str = "unauthenticated") -> None:
        super().__init__(message, code=code)
        self.status = status


@dataclass(frozen=True)
class JoinGrant:
    """What a verified join token allows."""

    claims: Claims
    room: str
    identity: str
    permission: models.ParticipantPermission
    is_agent: bool


def extract_token(authorization: str | None, query_token: str | None) -> str:
    """The token from ``Authorization: Bearer ...`` or the ``access_token`` query parameter."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if query_token:
        return query_token
    raise TokenError("no authorization token provided")


class Authenticator:
    """Verifies tokens signed with one API key/secret pair."""

    def __init__(self, api_key: str, api_secret: str) -> None:
        self.api_key = api_key
        self._verifier = TokenVerifier(api_key, api_secret)

    def verify(self, token: str) -> Claims:
        """Verify signature, issuer and expiry; raise :class:`TokenError` otherwise."""
        try:
            return self._verifier.verify(token)
        except jwt.ExpiredSignatureError as exc:
            raise TokenError(f"invalid token: {exc}") from exc
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            raise TokenError(f"invalid token: {exc}") from exc

    def join_grant(self, token: str, room: str | None = None) -> JoinGrant:
        """Verify a join token; ``room`` (if the client named one) must match the token's room."""
        claims = self.verify(token)
        video = claims.video
        if video is None or not video.room_join:
            raise TokenError("permissions denied: token has no roomJoin grant")
        if not video.room:
            raise TokenError("permissions denied: token names no room")
        if room and room != video.room:
            raise TokenError(f"permissions denied: token is not valid for room {room!r}")
        if not claims.identity:
            raise TokenError("permissions denied: token has no identity", status=400, code="invalid_argument")
        permission = models.ParticipantPermission(
            can_subscribe=video.can_subscribe,
            can_publish=video.can_publish,
            can_publish_data=video.can_publish_data,
            hidden=bool(video.hidden),
            recorder=bool(video.recorder),
            can_update_metadata=bool(video.can_update_own_metadata),
            agent=bool(video.agent),
            can_subscribe_metrics=bool(video.can_subscribe_metrics),
        )
        for source in video.can_publish_sources or []:
            if source in _SOURCES:
                permission.can_publish_sources.append(_SOURCES[source])
        is_agent = bool(video.agent) or claims.kind == "agent"
        return JoinGrant(
            claims=claims, room=video.room, identity=claims.identity, permission=permission, is_agent=is_agent
        )


def join_overrides(
    grant: JoinGrant, metadata: str, attributes: Mapping[str, str]
) -> tuple[str, dict[str, str]]:
    """The metadata and attributes a participant joins with, after its own join-time overrides.

    As livekit-server: a join request that sets metadata or attributes needs ``canUpdateOwnMetadata``
    (refused with 401 otherwise); its metadata replaces the token's, its attributes are added to the
    token's, and an empty attribute value deletes nothing.
    """
    claims = grant.claims
    merged = dict(claims.attributes or {})
    if (metadata or attributes) and not grant.permission.can_update_metadata:
        raise TokenError("permissions denied: setting metadata or attributes needs canUpdateOwnMetadata")
    merged.update({key: value for key, value in attributes.items() if value != ""})
    return (metadata or claims.metadata or ""), merged


def may_publish_source(permission: models.ParticipantPermission, source: models.TrackSource) -> bool:
    """Whether ``permission`` allows publishing a track from ``source``."""
    if not permission.can_publish:
        return False
    if not permission.can_publish_sources:
        return True
    return source in permission.can_publish_sources
