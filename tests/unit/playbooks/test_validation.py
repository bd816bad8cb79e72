"""validate_playbook and the loader on purpose-made bad files: every error, with its location."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmrtc.errors import PlaybookError, PlaybookValidationError
from llmrtc.playbooks import (
    KeywordCondition,
    Playbook,
    Stage,
    Transition,
    load_playbook,
    loads_playbook,
    validate_playbook,
)
from llmrtc.playbooks.loader import parse_playbook_text

FILES = Path(__file__).parent / "files"
REGISTRY = {"lookup", "not_offered"}


def issues_of(name: str, registry: object = REGISTRY) -> set[tuple[str, str, str]]:
    with pytest.raises(PlaybookValidationError) as info:
        load_playbook(FILES / name, registry=registry)
    return {(i.severity, i.code, i.location) for i in info.value.issues}


def test_duplicate_ids() -> None:
    assert issues_of("duplicate_ids.yaml") == {
        ("error", "duplicate_stage_id", "stages[2].id"),
        ("error", "duplicate_transition_id", "transitions[1].id"),
    }


def test_unknown_stages() -> None:
    assert issues_of("unknown_stages.yaml") == {
        ("error", "unknown_stage", "transitions[1].from"),
        ("error", "unknown_stage", "transitions[2].target"),
    }


def test_missing_initial_stage_json_with_camel_case() -> None:
    assert issues_of("missing_initial.json") == {("error", "missing_initial_stage", "initial_stage")}


def test_unknown_tools_need_a_registry() -> None:
    assert issues_of("unknown_tools.yaml") == {
        ("error", "unknown_tool", "stages[0].tools[1]"),
        ("error", "unknown_tool", "global_tools[1]"),
        ("error", "unknown_tool", "transitions[0].condition.tool_name"),
    }
    # without a registry names are not checked; only the "not offered" warning remains
    playbook = load_playbook(FILES / "unknown_tools.yaml")
    assert playbook.id == "unknown-tools"


def test_schema_errors_each_located() -> None:
    found = issues_of("schema_errors.yaml")
    assert {code for _, code, _ in found} == {"schema"}
    locations = {loc for _, _, loc in found}
    assert "stages[0].max_turns" in locations
    assert "stages[0].surprise" in locations
    assert "transitions[0].condition" in locations
    assert "transitions[1].condition.keyword.keywords" in locations


@pytest.mark.parametrize(
    ("name", "where"), [("syntax_error.yaml", "line 3"), ("syntax_error.json", "line 1")]
)
def test_syntax_errors(name: str, where: str) -> None:
    with pytest.raises(PlaybookValidationError) as info:
        load_playbook(FILES / name)
    (issue,) = info.value.issues
    assert issue.code == "syntax" and issue.location.startswith(where)


def test_not_a_mapping() -> None:
    assert issues_of("not_a_mapping.yaml") == {("error", "schema", "(root)")}


def test_bad_conditions_hooks_and_reserved_names() -> None:
    data = parse_playbook_text((FILES / "bad_conditions.yaml").read_text())
    result = validate_playbook(data)
    assert {(i.severity, i.code, i.location) for i in result.issues} == {
        ("error", "unresolvable_callable", "stages[0].on_enter"),
        ("error", "unresolvable_callable", "stages[0].on_exit"),
        ("error", "reserved_tool_name", "stages[1].tools[0]"),
        ("error", "reserved_stage_id", "stages[2].id"),
        ("error", "max_turns_without_count", "transitions[0].condition.count"),
        ("error", "unresolvable_callable", "transitions[1].condition.evaluate"),
        ("error", "reserved_tool_name", "transitions[2].condition.tool_name"),
        ("warning", "unreachable_stage", "stages[2]"),
    }
    # the loader raises with the errors only
    assert {c for _, c, _ in issues_of("bad_conditions.yaml", registry=None)} == {
        "unresolvable_callable",
        "reserved_tool_name",
        "reserved_stage_id",
        "max_turns_without_count",
    }


def test_warnings_do_not_fail_loading(caplog: pytest.LogCaptureFixture) -> None:
    playbook = load_playbook(FILES / "unreachable.yaml", registry=REGISTRY)
    result = validate_playbook(playbook, REGISTRY)
    assert result.valid
    assert {(i.code, i.location) for i in result.warnings} == {
        ("tool_not_offered", "transitions[0].condition.tool_name"),
        ("unreachable_stage", "stages[2]"),
    }
    assert "unreachable_stage" in caplog.text


def test_error_message_lists_every_problem() -> None:
    with pytest.raises(PlaybookValidationError) as info:
        load_playbook(FILES / "unknown_stages.yaml")
    text = str(info.value)
    assert "transitions[1].from" in text and "transitions[2].target" in text and "2 error(s)" in text


def test_file_errors() -> None:
    with pytest.raises(PlaybookError, match="cannot read"):
        load_playbook(FILES / "does_not_exist.yaml")
    with pytest.raises(PlaybookError, match=r"\.yaml, \.yml or \.json"):
        load_playbook(FILES / "../helpers.py")


def test_validate_model_and_raw_data() -> None:
    playbook = Playbook(
        id="ok",
        stages=[Stage(id="a"), Stage(id="b")],
        transitions=[
            Transition(id="t", from_stage="a", condition=KeywordCondition(keywords=["x"]), target="b")
        ],
        initial_stage="a",
    )
    assert validate_playbook(playbook).issues == []
    raw = {"id": "raw", "stages": [], "initial_stage": "a"}
    result = validate_playbook(raw)
    assert not result.valid and result.codes() == ["schema"] and result.errors[0].location == "stages"


def test_loads_text_accepts_reference_forms() -> None:
    text = """
id: ref
initialStage: greeting
globalSystemPrompt: Be kind.
defaultLLMConfig: {temperature: 0.5}
stages:
  - {id: greeting, systemPrompt: Hi, twoPhaseExecution: false, maxTurns: 2}
  - {id: end}
transitions:
  - {id: t, from: greeting, condition: {type: timeout, durationMs: 1000}, action: {targetStage: end}}
"""
    playbook = loads_playbook(text)
    assert playbook.stages[0].two_phase is False and playbook.stages[0].max_turns == 2
    assert playbook.transitions[0].target == "end"
    assert playbook.default_llm_config is not None and playbook.default_llm_config.temperature == 0.5
    assert parse_playbook_text('{"id": "j"}', "json") == {"id": "j"}
