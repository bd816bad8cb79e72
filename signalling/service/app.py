"""The token service HTTP API (FastAPI).

``POST /api/token`` issues a room token; ``GET /healthz`` says it is alive and ``GET /readyz`` whether it takes
requests (not while draining); ``/api/admin/*`` lists rooms and participants through the LiveKit server API;
``/`` serves the built web client when present. The API key is checked before a body is read, bodies are capped,
failed authentications are throttled per client address, and every error is ``{"error": {...}}``.
"""

import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from signalling.service.admin import AdminAPI, ParticipantSummary, RoomSummary
from signalling.service.clientaddr import client_address
from signalling.service.config import TokenServiceSettings
from signalling.service.drain import Drain, DrainMiddleware
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


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


async def read_capped_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ServiceError(400, "bad_request", "Content-Length is not a number")
        if int(declared) > limit:
            raise ServiceError(413, "body_too_large", f"request bodies are limited to {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ServiceError(413, "body_too_large", f"request bodies are limited to {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_token_request(raw: bytes) -> TokenRequest:
    """Parse a ``POST /api/token`` body; any malformation is a 422 ``invalid_request`` naming the field."""
    try:
        return TokenRequest.model_validate_json(raw or b"null")
    except ValidationError as exc:
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":
            raise ServiceError(422, "invalid_request", "the body is not valid JSON") from None
        loc = ".".join(str(p) for p in first.get("loc", ()))
        raise ServiceError(
            422, "invalid_request", str(first.get("msg", "invalid request")), field=loc or None
        ) from None


def _add_metrics(app: FastAPI) -> None:
    """``GET /metrics``: requests by route and status, and their latency (Prometheus text format).

    Routes are the app's own paths (unknown paths count as ``other``), so a scan cannot grow the label set.
    """
    try:
        import prometheus_client
    except ImportError:  # pragma: no cover - depends on the installed extras
        log.info("prometheus-client is not installed: no /metrics")
        return
    registry = prometheus_client.CollectorRegistry()
    requests = prometheus_client.Counter(
        "llmrtc_token_service_requests",
        "HTTP requests by route and status",
        ["route", "status"],
        registry=registry,
    )
    latency = prometheus_client.Histogram(
        "llmrtc_token_service_request_seconds", "HTTP request latency by route", ["route"], registry=registry
    )
    known = {"/api/token", "/api/admin/rooms", "/healthz", "/readyz", "/metrics", "/"}

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Any:
        route = request.url.path if request.url.path in known else "other"
        started = time.perf_counter()
        response = await call_next(request)
        requests.labels(route, str(response.status_code)).inc()
        latency.labels(route).observe(time.perf_counter() - started)
        return response

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(
            prometheus_client.generate_latest(registry), media_type=prometheus_client.CONTENT_TYPE_LATEST
        )


def create_app(settings: TokenServiceSettings | None = None, *, admin_api: AdminAPI | None = None) -> FastAPI:
    """Build the service. ``settings`` default to the environment."""
    settings = settings or TokenServiceSettings()
    limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
    auth_failures = RateLimiter(settings.auth_failures_per_minute, settings.auth_failure_burst)
    drain = Drain()
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
        responses={
            401: {"model": ErrorResponse},
            429: {"model": ErrorResponse},
            503: {"model": ErrorResponse},
        },
    )
    app.state.drain = drain
    app.add_middleware(DrainMiddleware, drain=drain)
    _add_metrics(app)
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

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        headers = dict(exc.headers) if exc.headers else None
        return _error_json(exc.status_code, ErrorBody(code=code, message=str(exc.detail)), headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error", exc_info=exc)
        return _error_json(500, ErrorBody(code="internal", message="internal error"))

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

    def _address(request: Request) -> str:
        peer = request.client.host if request.client else None
        return client_address(peer, request.headers.get("x-forwarded-for"), settings.trusted_proxies)

    def _refuse(address: str, message: str) -> ServiceError:
        """A failed authentication: counted against the address (throttled once its budget is spent)."""
        auth_failures.check(address)
        log.info("authentication failed", extra={"client": address})
        return ServiceError(401, "unauthorized", message)

    def _throttled(address: str) -> None:
        wait = auth_failures.peek(address)
        if wait > 0:
            raise ServiceError(
                429,
                "too_many_failures",
                "too many failed authentications from this address; retry later",
                headers={"Retry-After": RateLimiter.retry_after_header(wait)},
            )

    def caller(request: Request, x_api_key: Annotated[str | None, Header()] = None) -> str:
        """Authenticate (headers only, before any body is read): an API key, or (open mode) the address."""
        address = _address(request)
        digest = _match_key(x_api_key)
        if digest is not None:
            return "key:" + digest.hex()[:16]
        _throttled(address)
        if x_api_key:
            raise _refuse(address, "the API key is not valid")
        if settings.open_mode:
            return "ip:" + address
        raise _refuse(address, "send an API key in the X-API-Key header")

    def admin_caller(request: Request, x_api_key: Annotated[str | None, Header()] = None) -> str:
        """Admin endpoints always need an API key, even in open mode."""
        digest = _match_key(x_api_key)
        if digest is None:
            address = _address(request)
            _throttled(address)
            raise _refuse(address, "admin endpoints need a valid X-API-Key header")
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
        """Liveness: the process answers (also while draining)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"model": ErrorResponse}})
    async def readyz() -> JSONResponse:
        """Readiness: takes requests; 503 while draining (a load balancer stops sending new ones)."""
        if drain.draining:
            return _error_json(
                503, ErrorBody(code="shutting_down", message="the service is draining for shutdown")
            )
        return JSONResponse({"status": "ready"})

    @app.post(
        "/api/token",
        response_model=TokenResponse,
        tags=["tokens"],
        responses={
            400: {"model": ErrorResponse},
            413: {"model": ErrorResponse},
            422: {"model": ErrorResponse},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": TokenRequest.model_json_schema()}},
            }
        },
    )
    async def issue_token(request: Request, who: Annotated[str, Depends(rate_limited)]) -> TokenResponse:
        # the key was checked (a dependency, headers only) before a byte of the body is read
        body = parse_token_request(await read_capped_body(request, settings.max_body_bytes))
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
        log.info("serving the web client from %s at /", settings.static_dir)
    elif settings.static_dir is not None:
        log.warning(
            "no web client at %s (no index.html): / is not served; build it with `make -C web build` "
            "or set WEB_STATIC_DIR",
            settings.static_dir,
        )

    return app


async def _admin_call(awaitable: Awaitable[T]) -> T:
    try:
        return await awaitable
    except Exception as exc:
        log.warning("LiveKit server API call failed", extra={"error": type(exc).__name__})
        raise ServiceError(502, "livekit_unavailable", "the LiveKit server API did not answer") from exc
