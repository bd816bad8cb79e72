"""The data-message schema: client validation, server events, redaction."""

from __future__ import annotations

import json

import pytest

from llmrtc.errors import ProtocolError
from worker.protocol import (
    MAX_CLIENT_MESSAGE_BYTES,
    ErrorMsg,
    StopSpeaking,
    TextInput,
    ToolCallMsg,
    TranscriptMsg,
    parse_client_message,
    parse_server_event,
    redact_arguments,
)


def test_valid_client_messages() -> None:
    msg = parse_client_message(b'{"v": 1, "type": "text", "text": "hello"}')
    assert isinstance(msg, TextInput) and msg.text == "hello"
    assert isinstance(parse_client_message('{"type": "stop_speaking"}'), StopSpeaking)


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\xff\xfe", "invalid_json"),
        (b"not json", "invalid_json"),
        (b'"a string"', "invalid_message"),
        (b'{"type": "text"}', "invalid_message"),
        (b'{"type": "text", "text": ""}', "invalid_message"),
        (b'{"type": "text", "text": ["x"]}', "invalid_message"),
        (b'{"type": "text", "text": "hi", "extra": 1}', "invalid_message"),
        (b'{"type": "shutdown"}', "invalid_message"),
        (b'{"v": 2, "type": "text", "text": "hi"}', "unsupported_version"),
        (json.dumps({"type": "text", "text": "x" * 5000}).encode(), "invalid_message"),
        (b" " * (MAX_CLIENT_MESSAGE_BYTES + 1), "message_too_large"),
    ],
)
def test_bad_client_messages_raise_protocol_errors(payload: bytes, code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_client_message(payload)
    assert info.value.code == code
    assert "x" * 100 not in info.value.message, "errors never echo the payload"


def test_server_events_are_versioned_json() -> None:
    event = TranscriptMsg(participant_identity="alice", participant_name="Alice", text="hi")
    data = json.loads(event.to_bytes())
    assert data["v"] == 1 and data["type"] == "transcript" and data["final"] is True
    back = parse_server_event(event.to_bytes())
    assert back == event
    err = json.loads(ErrorMsg(code="invalid_json", message="bad").to_bytes())
    assert "turn_id" not in err


def test_tool_arguments_are_redacted() -> None:
    args = {"city": "Paris", "api_key": "sk-1", "nested": {"Password": "p", "items": [{"token": "t"}]}}
    clean = redact_arguments(args)
    assert clean == {
        "city": "Paris",
        "api_key": "[redacted]",
        "nested": {"Password": "[redacted]", "items": [{"token": "[redacted]"}]},
    }
    assert args["api_key"] == "sk-1", "the original is not modified"
    msg = ToolCallMsg(turn_id="t", call_id="c", name="weather", arguments=clean)
    assert b"sk-1" not in msg.to_bytes()
