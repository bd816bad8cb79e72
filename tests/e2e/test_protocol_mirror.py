"""web/src/protocol.ts mirrors worker/protocol.py: the browser parses every worker event to the same object
the worker's model dumps, refuses what the worker would refuse, and its client messages pass the worker's
parser. Runs web/test/protocol_harness.ts under Node (bundled with the project's esbuild)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from llmrtc.errors import ProtocolError
from tests.conftest import require
from tests.integration.worker.harness import ROOT
from worker import protocol as p

WEB = ROOT / "web"
ESBUILD = WEB / "node_modules" / ".bin" / "esbuild"

SAMPLES: list[BaseModel] = [
    p.TranscriptMsg(
        turn_id="turn_1", participant_identity="ada", participant_name="Ada", text="Hello there."
    ),
    p.TranscriptMsg(participant_identity="bo", participant_name="Bo", text="hi", final=False, source="text"),
    p.TranscriptMsg(
        participant_identity="ada", participant_name="Ada", text="Hel", final=False, segment_id="seg_1"
    ),
    p.TurnStartMsg(turn_id="turn_1", participant_identities=["ada", "bo"], source="text"),
    p.TurnStartMsg(turn_id="turn_0", source="greeting"),
    p.TurnEndMsg(turn_id="turn_1", outcome="completed", usage={"llm_prompt_tokens": 12, "tts_chars": 40.5}),
    p.TurnEndMsg(turn_id="turn_2", outcome="cancelled", reason="barge_in", heard_text="Hello! It is"),
    p.LLMChunkMsg(turn_id="turn_1", content="Hel"),
    p.LLMMsg(turn_id="turn_1", text="Hello! Nice to meet you."),
    p.TTSStartMsg(turn_id="turn_1"),
    p.TTSCompleteMsg(turn_id="turn_1"),
    p.TTSCancelledMsg(turn_id="turn_1", by="ada"),
    p.TTSCancelledMsg(turn_id="turn_2", reason="stop_request", heard_text="Here is sentence 1."),
    p.BargeInMsg(turn_id="turn_1", participant_identity="ada"),
    p.SpeechStartMsg(participant_identity="ada"),
    p.SpeechEndMsg(participant_identity="ada", duration_ms=1234),
    p.StageChangeMsg(turn_id="t", from_stage="greet", to_stage="triage", transition_id="x", reason="asked"),
    p.ToolCallMsg(turn_id="t", call_id="c1", name="get_weather", arguments={"city": "Paris", "days": [1, 2]}),
    p.ToolResultMsg(turn_id="t", call_id="c1", name="get_weather", success=False, error="timeout"),
    p.ErrorMsg(code="llm_failed", message="The language model did not answer.", turn_id="t"),
    p.ErrorMsg(
        code="stt_failed", message="Speech recognition is unavailable.", component="stt", retryable=True
    ),
    p.VisionMsg(participant_identity="ada", source="screen_share", via="tool", turn_id="t"),
    p.VisionMsg(participant_identity="bo", source="camera"),
]

INVALID: dict[str, str] = {
    "not json": "invalid_json",
    "[1, 2]": "invalid_message",
    '{"v": 2, "type": "llm", "turn_id": "t", "text": "x"}': "unsupported_version",
    '{"v": 1, "type": "no_such_event"}': "invalid_message",
    '{"v": 1, "type": "llm", "turn_id": "t"}': "invalid_message",
    '{"v": 1, "type": "llm_chunk", "turn_id": 5, "content": "x"}': "invalid_message",
    '{"v": 1, "type": "tts_cancelled", "turn_id": "t", "reason": "bored"}': "invalid_message",
    '{"v": 1, "type": "tool_call", "turn_id": "t", "call_id": "c", "name": "n", "arguments": [1]}': (
        "invalid_message"
    ),
    '{"v": 1, "type": "turn_end", "turn_id": "t", "outcome": "exploded"}': "invalid_message",
    '{"v": 1, "type": "turn_end", "turn_id": "t"}': "invalid_message",
    '{"v": 1, "type": "turn_start", "turn_id": "t", "participant_identities": [1]}': "invalid_message",
    '{"v": 1, "type": "turn_end", "turn_id": "t", "outcome": "completed", "usage": {"x": "abc"}}': (
        "invalid_message"
    ),
    '{"v": 1, "type": "vision", "participant_identity": "a", "source": "microwave"}': "invalid_message",
    '{"v": 1, "type": "error", "code": "c", "message": "m", "retryable": "maybe"}': "invalid_message",
}


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require(shutil.which("node") is not None, "Node.js is not installed")
    if not ESBUILD.exists():
        done = subprocess.run(
            ["make", "-C", str(WEB), "node_modules/.installed"], capture_output=True, text=True
        )
        require(
            done.returncode == 0 and ESBUILD.exists(),
            f"the web packages could not be installed: {done.stderr[-500:]}",
        )
    out = tmp_path_factory.mktemp("protocol") / "harness.mjs"
    subprocess.run(
        [str(ESBUILD), str(WEB / "test" / "protocol_harness.ts"), "--bundle", "--platform=node",
         "--format=esm", f"--outfile={out}", "--log-level=warning"],
        check=True,
        timeout=60,
    )  # fmt: skip
    return out


def run(harness: Path, parse: list[str], texts: list[str]) -> dict[str, Any]:
    done = subprocess.run(
        ["node", str(harness)],
        input=json.dumps({"parse": parse, "texts": texts}),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_every_worker_event_parses_to_the_same_object(harness: Path) -> None:
    kinds = {type(m).model_fields["type"].default for m in SAMPLES}
    union = {arg.model_fields["type"].default for arg in p.ServerEvent.__origin__.__args__}  # type: ignore[attr-defined]
    assert kinds == union, f"add samples for {union - kinds}"
    payloads = [m.to_bytes().decode() for m in SAMPLES]  # type: ignore[attr-defined]
    out = run(harness, payloads, [])
    for model, result in zip(SAMPLES, out["parsed"], strict=True):
        assert result["ok"], (model, result)
        assert result["value"] == json.loads(model.model_dump_json(exclude_none=True)), model


def test_invalid_payloads_are_refused_with_the_same_codes(harness: Path) -> None:
    out = run(harness, list(INVALID), [])
    codes = [r.get("code") for r in out["parsed"]]
    assert codes == list(INVALID.values())
    assert not any(r["ok"] for r in out["parsed"])
    for payload in INVALID:  # the worker's own parser refuses each of them too
        with pytest.raises(ValueError):
            p.parse_server_event(payload)


def test_client_messages_pass_the_worker_parser(harness: Path) -> None:
    texts = ["  What is the capital of France?  ", "", "x" * (p.MAX_TEXT_CHARS + 1), "é" * p.MAX_TEXT_CHARS]
    out = run(harness, [], texts)
    ok, empty, too_long, longest = out["encoded"]
    assert not empty["ok"] and not too_long["ok"]
    parsed = p.parse_client_message(ok["payload"])
    assert isinstance(parsed, p.TextInput) and parsed.text == "What is the capital of France?"
    assert isinstance(p.parse_client_message(longest["payload"]), p.TextInput)
    assert isinstance(p.parse_client_message(out["stop"]), p.StopSpeaking)
    with pytest.raises(ProtocolError):
        p.parse_client_message(json.dumps({"v": 1, "type": "text", "text": "x" * (p.MAX_TEXT_CHARS + 1)}))
