"""Rules for what callers may ask for: room names, identities, display names, metadata."""

from __future__ import annotations

import re
import unicodedata

ROOM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
IDENTITY_MAX = 128
NAME_MAX = 128
METADATA_MAX_BYTES = 4096


class RequestRejected(ValueError):
    """A token request broke a rule; ``field`` says which input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _has_control_chars(value: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in value)


def check_room(room: str) -> str:
    if not ROOM_NAME.fullmatch(room):  # fullmatch: "$" would let a trailing newline through
        raise RequestRejected(
            "room",
            "room names are 1-64 characters: letters, digits, '_', '-' or '.', starting with a letter or digit",
        )
    return room


def check_identity(identity: str, agent_prefix: str) -> str:
    if not identity or not identity.strip():
        raise RequestRejected("identity", "identity must not be blank")
    if len(identity) > IDENTITY_MAX:
        raise RequestRejected("identity", f"identity is longer than {IDENTITY_MAX} characters")
    if _has_control_chars(identity):
        raise RequestRejected("identity", "identity contains control characters")
    if agent_prefix and identity.lower().startswith(agent_prefix.lower()):
        raise RequestRejected(
            "identity", f"identities starting with {agent_prefix!r} are reserved for the agent"
        )
    return identity


def check_name(name: str) -> str:
    if len(name) > NAME_MAX:
        raise RequestRejected("name", f"name is longer than {NAME_MAX} characters")
    if _has_control_chars(name):
        raise RequestRejected("name", "name contains control characters")
    return name


def check_metadata(metadata: str) -> str:
    if len(metadata.encode("utf-8")) > METADATA_MAX_BYTES:
        raise RequestRejected("metadata", f"metadata is larger than {METADATA_MAX_BYTES} bytes")
    return metadata
