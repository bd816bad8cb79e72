"""An encoder for the AWS event-stream binary framing (``application/vnd.amazon.eventstream``).

botocore only decodes this format, so test servers that speak ConverseStream need to write it. One message:

    prelude:  total length (uint32 BE) | headers length (uint32 BE) | CRC32 of those 8 bytes (uint32 BE)
    headers:  repeated  name length (uint8) | name | value type (uint8) | value
    payload:  bytes
    trailer:  CRC32 of everything before it (uint32 BE)

Only the header value types the Bedrock runtime uses are written: string (7), plus bool/int/bytes for
completeness.
"""

from __future__ import annotations

import binascii
import json
import struct
from typing import Any

_TRUE, _FALSE, _INT32, _BYTES, _STRING = 0, 1, 4, 6, 7


def _header(name: str, value: str | bytes | bool | int) -> bytes:
    raw_name = name.encode("utf-8")
    out = struct.pack(">B", len(raw_name)) + raw_name
    if isinstance(value, bool):
        return out + struct.pack(">B", _TRUE if value else _FALSE)
    if isinstance(value, int):
        return out + struct.pack(">Bi", _INT32, value)
    if isinstance(value, str):
        data = value.encode("utf-8")
        return out + struct.pack(">BH", _STRING, len(data)) + data
    return out + struct.pack(">BH", _BYTES, len(value)) + value


def encode_message(headers: dict[str, str | bytes | bool | int], payload: bytes) -> bytes:
    """One framed event-stream message."""
    raw_headers = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw_headers))
    prelude += struct.pack(">I", binascii.crc32(prelude) & 0xFFFFFFFF)
    body = prelude + raw_headers + payload
    return body + struct.pack(">I", binascii.crc32(body) & 0xFFFFFFFF)


def event(event_type: str, data: dict[str, Any]) -> bytes:
    """A JSON ``event`` message such as ConverseStream's ``contentBlockDelta``."""
    headers: dict[str, str | bytes | bool | int] = {
        ":event-type": event_type,
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return encode_message(headers, json.dumps(data).encode())


def exception(exception_type: str, message: str) -> bytes:
    """A modelled ``exception`` message (e.g. ``throttlingException``) sent inside the stream."""
    headers: dict[str, str | bytes | bool | int] = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_message(headers, json.dumps({"message": message}).encode())
