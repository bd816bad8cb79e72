"""Settings of the token service, from the environment and ``.env``."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class TokenServiceSettings(BaseSettings):
    """Everything the token service needs. Secrets are ``SecretStr`` so they never print."""

    # a blank value (``WEB_STATIC_DIR=`` in .env.example) means unset: the default applies
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, env_ignore_empty=True
    )

    livekit_url: str = Field(default="ws://localhost:7880", alias="LIVEKIT_URL")
    """The URL clients connect to (given back with every token)."""
    livekit_api_url: str | None = Field(default=None, alias="LIVEKIT_API_URL")
    """The URL this service uses for the server API (admin endpoints); defaults to ``livekit_url`` over HTTP."""
    livekit_api_key: str = Field(default="devkey", alias="LIVEKIT_API_KEY")
    livekit_api_secret: SecretStr = Field(default=SecretStr("secret"), alias="LIVEKIT_API_SECRET")

    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, alias="TOKEN_SERVICE_API_KEYS"
    )
    """Keys callers send in the ``X-API-Key`` header (comma-separated in the environment)."""
    open_mode: bool = Field(default=False, alias="TOKEN_SERVICE_OPEN_MODE")
    """Local development only: issue tokens without an API key. Off by default."""

    token_ttl_s: int = Field(default=600, ge=30, le=86_400, alias="TOKEN_TTL_S")
    agent_name: str = Field(default="llmrtc-agent", alias="AGENT_NAME")
    """The agent dispatched with every room; empty means rely on automatic dispatch."""
    agent_identity_prefix: str = Field(default="agent-", alias="AGENT_IDENTITY_PREFIX")
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list, alias="CORS_ORIGINS")
    rate_limit_per_minute: int = Field(default=30, ge=1, alias="TOKEN_RATE_LIMIT_PER_MINUTE")
    rate_limit_burst: int = Field(default=10, ge=1, alias="TOKEN_RATE_LIMIT_BURST")
    static_dir: Path | None = Field(default=DEFAULT_STATIC_DIR, alias="WEB_STATIC_DIR")
    max_body_bytes: int = Field(default=16_384, ge=1024, le=1_048_576, alias="TOKEN_MAX_BODY_BYTES")
    """Largest request body read; a larger one is refused (413) without being read."""
    trusted_proxies: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list, alias="TOKEN_TRUSTED_PROXIES"
    )
    """Addresses (or networks) of reverse proxies whose ``X-Forwarded-For`` is believed; nobody else's is."""
    auth_failures_per_minute: int = Field(default=10, ge=1, alias="TOKEN_AUTH_FAILURES_PER_MINUTE")
    auth_failure_burst: int = Field(default=5, ge=1, alias="TOKEN_AUTH_FAILURE_BURST")
    """Failed authentications allowed per client address (at once, and sustained) before it gets 429."""
    drain_timeout_s: float = Field(default=10.0, ge=0, le=600, alias="TOKEN_DRAIN_TIMEOUT_S")
    """On SIGTERM: how long in-flight requests may take to finish before the service exits anyway."""

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys_csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies_csv(cls, value: object) -> object:
        parts = _split_csv(value)
        if isinstance(parts, list):
            try:
                return [ip_network(str(p), strict=False) for p in parts]
            except ValueError as exc:
                raise ValueError(f"TOKEN_TRUSTED_PROXIES: {exc}") from None
        return parts

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins_csv(cls, value: object) -> object:
        return _split_csv(value)

    @model_validator(mode="after")
    def _usable(self) -> TokenServiceSettings:
        if not self.open_mode and not self.api_keys:
            raise ValueError(
                "no caller can be authenticated: set TOKEN_SERVICE_API_KEYS (comma-separated keys), "
                "or TOKEN_SERVICE_OPEN_MODE=true for local development only"
            )
        if not self.livekit_url.startswith(("ws://", "wss://", "http://", "https://")):
            raise ValueError("LIVEKIT_URL must be a ws://, wss://, http:// or https:// URL")
        return self

    @property
    def server_api_url(self) -> str:
        """HTTP(S) URL of the LiveKit server API."""
        url = self.livekit_api_url or self.livekit_url
        if url.startswith("ws://"):
            return "http://" + url[len("ws://") :]
        if url.startswith("wss://"):
            return "https://" + url[len("wss://") :]
        return url
