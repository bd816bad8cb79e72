"""The token service HTTP API (FastAPI).

``POST /api/token`` issues a room token; ``GET /healthz`` says it is alive; ``/api/admin/*`` lists rooms and
participants through the LiveKit server API; ``/`` serves the built web client when present.
"""

import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Annotated, TypeVar

from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from signalling.service.admin import AdminAPI, ParticipantSummary, RoomSummary
from signalling.service.config import TokenServiceSettings
from signalling.service.ratelimit import RateLimiter
from signalling.service.tokens import generate_identity, mint_room_token
from signalling.service.validation import (
    RequestRejected,
    check_identity,
    check_metadata,
    check_name,
    check_room,
)

log = logging.getLogger("signalling.service")
T = TypeVar("T")


class TokenRequest(BaseModel):
    room: str = Field(description="Room to join (1-64 of letters, digits, '_', '-', '.').", max_length=256)
    identity: str | None = Field(default=None, description="Participant identity; generated when absent.")
    name: str | None = Field(default=None, description="Display name shown to others.")
    metadata: str | None = Field(default=None, description="Participant metadata (at most 4 KiB).")


class TokenResponse(BaseModel):
    url: str = Field(description="The LiveKit URL to connect to.")
    token: str = Field(description="The room token (JWT).")
    room: str
    identity: str
    expires_in: int = Field(description="Seconds until the token expires.")


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ServiceError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(code=code, message=message, field=field)
        self.headers = headers or {}


def _error_json(status: int, body: ErrorBody, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        ErrorResponse(error=body).model_dump(exclude_none=True), status_code=status, headers=headers
    )


def create_app(settings: TokenServiceSettings | None = None, *, admin_api: AdminAPI | None = None) -> FastAPI:
    """Build the service. ``settings`` default to the environment."""
    settings = settings or TokenServiceSettings()
    limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
    admin = admin_api or AdminAPI(
        settings.server_api_url, settings.livekit_api_key, settings.livekit_api_secret.get_secret_value()
    )
    key_digests = [hashlib.sha256(k.get_secret_value().encode()).digest() for k in settings.api_keys]

    if settings.open_mode:
        log.warning(
            "TOKEN SERVICE IN OPEN MODE: anyone who can reach it gets room tokens without an API key. "
            "Use this for local development only; set TOKEN_SERVICE_OPEN_MODE=false and TOKEN_SERVICE_API_KEYS "
            "in any shared or production deployment."
        )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await admin.aclose()

    app = FastAPI(
        lifespan=lifespan,
        title="llmrtc token service",
        version="1.0.0",
        description="Issues least-privilege LiveKit room tokens that bring the llmrtc agent with the room.",
        responses={401: {"model": ErrorResponse}, 429: {"model": ErrorResponse}},
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "X-API-Key"],
            max_age=600,
        )

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return _error_json(exc.status, exc.body, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        return _error_json(
            422,
            ErrorBody(
                code="invalid_request",
                message=str(first.get("msg", "invalid request")),
                field=".".join(loc) or None,
            ),
        )

    def _match_key(presented: str | None) -> bytes | None:
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for candidate in key_digests:
            if hmac.compare_digest(candidate, digest):
                found = digest
        return found

    def caller(request: Request, x_api_key: Annotated[str | None, Header()] = None) -> str:
        """Authenticate: an API key, or (open mode only) the client address."""
        digest = _match_key(x_api_key)
        if digest is not None:
            return "key:" + digest.hex()[:16]
        if x_api_key:
            raise ServiceError(401, "unauthorized", "the API key is not valid")
        if settings.open_mode:
            return "ip:" + (request.client.host if request.client else "unknown")
        raise ServiceError(401, "unauthorized", "send an API key in the X-API-Key header")

    def admin_caller(x_api_key: Annotated[str | None, Header()] = None) -> str:
        """Admin endpoints always need an API key, even in open mode."""
        digest = _match_key(x_api_key)
        if digest is None:
            raise ServiceError(401, "unauthorized", "admin endpoints need a valid X-API-Key header")
        return "key:" + digest.hex()[:16]

    def rate_limited(who: Annotated[str, Depends(caller)]) -> str:
        wait = limiter.check(who)
        if wait > 0:
            raise ServiceError(
                429,
                "rate_limited",
                "too many token requests; retry later",
                headers={"Retry-After": RateLimiter.retry_after_header(wait)},
            )
        return who

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(
        "/api/token",
        response_model=TokenResponse,
        tags=["tokens"],
        responses={400: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
    )
    async def issue_token(body: TokenRequest, who: Annotated[str, Depends(rate_limited)]) -> TokenResponse:
        try:
            room = check_room(body.room)
            identity = (
                check_identity(body.identity, settings.agent_identity_prefix)
                if body.identity is not None
                else generate_identity()
            )
            name = check_name(body.name) if body.name else None
            metadata = check_metadata(body.metadata) if body.metadata else None
        except RequestRejected as exc:
            log.info(
                "token request refused", extra={"caller": who, "field": exc.field, "reason": exc.message}
            )
            raise ServiceError(400, "invalid_" + exc.field, exc.message, field=exc.field) from exc
        issued = mint_room_token(settings, room=room, identity=identity, name=name, metadata=metadata)
        log.info(
            "token issued", extra={"caller": who, "room": room, "identity": identity, "ttl_s": issued.ttl_s}
        )
        return TokenResponse(
            url=settings.livekit_url,
            token=issued.token,
            room=room,
            identity=identity,
            expires_in=issued.ttl_s,
        )

    @app.get(
        "/api/admin/rooms",
        response_model=list[RoomSummary],
        tags=["admin"],
        responses={502: {"model": ErrorResponse}},
    )
    async def list_rooms(_: Annotated[str, Depends(admin_caller)]) -> list[RoomSummary]:
        return await _admin_call(admin.list_rooms())

    @app.get(
        "/api/admin/rooms/{room}/participants",
        response_model=list[ParticipantSummary],
        tags=["admin"],
        responses={400: {"model": ErrorResponse}, 502: {"model": ErrorResponse}},
    )
    async def list_participants(
        room: str, _: Annotated[str, Depends(admin_caller)]
    ) -> list[ParticipantSummary]:
        try:
            check_room(room)
        except RequestRejected as exc:
            raise ServiceError(400, "invalid_room", exc.message, field="room") from exc
        return await _admin_call(admin.list_participants(room))

    if settings.static_dir is not None and (settings.static_dir / "index.html").is_file():
        app.mount("/", StaticFiles(directory=settings.static_dir, html=True), name="web")

    return app


async def _admin_call(awaitable: Awaitable[T]) -> T:
    try:
        return await awaitable
    except Exception as exc:
        log.warning("LiveKit server API call failed", extra={"error": type(exc).__name__})
        raise ServiceError(502, "livekit_unavailable", "the LiveKit server API did not answer") from exc
