"""docs/protocol.schema.json is generated from worker/protocol.py and must stay in step with it (CI runs this):
every worker event validates against it, and what the worker refuses from clients the schema refuses too."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from scripts.protocol_schema import SCHEMA_PATH, main, render
from tests.e2e.test_protocol_mirror import SAMPLES


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return loaded


def test_checked_in_schema_is_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    assert SCHEMA_PATH.read_text() == render(), (
        "run `python -m scripts.protocol_schema` and commit the result"
    )
    assert main(["--check"]) == 0
    assert capsys.readouterr().err == ""


def test_worker_events_and_client_messages_validate(schema: dict[str, Any]) -> None:
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    for model in SAMPLES:
        payload = json.loads(model.model_dump_json(exclude_none=True))
        assert not list(validator.iter_errors(payload)), payload
        # a newer worker may add fields: clients generated from the schema must still read the message
        assert not list(validator.iter_errors({**payload, "added_later": 1})), payload
    assert validator.is_valid({"v": 1, "type": "text", "text": "Hello"})
    assert validator.is_valid({"type": "stop_speaking"})
    assert not validator.is_valid({"v": 1, "type": "text", "text": ""})
    assert not validator.is_valid({"v": 1, "type": "text", "text": "x" * 4001})
    assert not validator.is_valid({"v": 1, "type": "text", "text": "hi", "priority": "high"})
    assert not validator.is_valid({"v": 1, "type": "transcript", "text": "no speaker"})
    assert not validator.is_valid({"v": 1, "type": "tts_cancelled", "turn_id": "t", "reason": "bored"})
    assert schema["x-topic"] == "llmrtc" and schema["x-version"] == 1


def test_an_out_of_date_schema_is_reported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "protocol.schema.json"
    stale.write_text(SCHEMA_PATH.read_text().replace('"heard_text"', '"heard"', 1))
    monkeypatch.setattr("scripts.protocol_schema.SCHEMA_PATH", stale)
    assert main(["--check"]) == 1
    assert "out of date" in capsys.readouterr().err
