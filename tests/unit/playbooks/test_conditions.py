"""Every condition type, priorities, declaration order and the ``*`` source."""

from __future__ import annotations

from typing import Any

import pytest

from llmrtc.playbooks.conditions import (
    LLMDecision,
    TransitionContext,
    candidate_transitions,
    keywords_match,
    select_transition,
)
from llmrtc.playbooks.types import (
    CustomCondition,
    IntentCondition,
    KeywordCondition,
    LLMDecisionCondition,
    MaxTurnsCondition,
    Stage,
    TimeoutCondition,
    ToolCallCondition,
    Transition,
)
from llmrtc.types import ToolCallRequest, ToolResult

STAGE = Stage(id="a", max_turns=2)


def tr(cond: Any, *, tid: str = "t", src: str = "a", target: str = "b", priority: int = 0) -> Transition:
    return Transition(id=tid, from_stage=src, condition=cond, target=target, priority=priority)


async def fires(cond: Any, **ctx: Any) -> bool:
    ctx.setdefault("stage", STAGE)
    return await select_transition([tr(cond)], TransitionContext(**ctx)) is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I need HELP please", True),
        ("helpful tips", False),  # whole words only
        ("self-help", True),  # '-' is a word boundary
        ("nothing here", False),
        ("", False),
    ],
)
def test_keyword_whole_words_case_insensitive(text: str, expected: bool) -> None:
    assert keywords_match(["help"], text) is expected


def test_keyword_multiword_and_all() -> None:
    assert keywords_match(["log in"], "please LOG\n  IN now")
    assert not keywords_match(["log in"], "login")
    assert keywords_match(["a", "b"], "a only")
    assert not keywords_match(["a", "b"], "a only", require_all=True)
    assert keywords_match(["a", "b"], "b and a", require_all=True)


async def test_keyword_condition() -> None:
    cond = KeywordCondition(keywords=["goodbye", "bye"])
    assert await fires(cond, assistant_text="OK, Goodbye!")
    assert not await fires(cond, assistant_text="byes are fine")


async def test_tool_call_any_success_failure() -> None:
    call = ToolCallRequest(call_id="1", name="verify_user", arguments={})
    ok = ToolResult(call_id="1", tool_name="verify_user", success=True, result={"ok": True})
    bad = ToolResult(call_id="1", tool_name="verify_user", success=False, error="no such user")
    other = ToolCallRequest(call_id="2", name="other", arguments={})

    assert await fires(ToolCallCondition(tool_name="verify_user"), tool_calls=[call])
    assert not await fires(ToolCallCondition(tool_name="verify_user"), tool_calls=[other])
    assert await fires(
        ToolCallCondition(tool_name="verify_user", on="success"), tool_calls=[call], tool_results=[ok]
    )
    assert not await fires(
        ToolCallCondition(tool_name="verify_user", on="success"), tool_calls=[call], tool_results=[bad]
    )
    assert await fires(
        ToolCallCondition(tool_name="verify_user", on="failure"), tool_calls=[call], tool_results=[bad]
    )
    assert not await fires(
        ToolCallCondition(tool_name="verify_user", on="failure"), tool_calls=[call], tool_results=[ok]
    )
    # success/failure need a result: a bare call is not enough
    assert not await fires(ToolCallCondition(tool_name="verify_user", on="success"), tool_calls=[call])


async def test_llm_decision_matches_only_its_target() -> None:
    cond = LLMDecisionCondition()
    assert await fires(cond, llm_decision=LLMDecision("b", "done"))
    assert not await fires(cond, llm_decision=LLMDecision("c", "elsewhere"))
    assert not await fires(cond)


async def test_max_turns_explicit_and_from_stage() -> None:
    assert not await fires(MaxTurnsCondition(count=3), stage_turns=2)
    assert await fires(MaxTurnsCondition(count=3), stage_turns=3)
    # no count: the stage's max_turns (2)
    assert not await fires(MaxTurnsCondition(), stage_turns=1)
    assert await fires(MaxTurnsCondition(), stage_turns=2)
    assert not await fires(MaxTurnsCondition(), stage=Stage(id="a"), stage_turns=100)


async def test_timeout() -> None:
    assert not await fires(TimeoutCondition(duration_ms=500), time_in_stage_s=0.499)
    assert await fires(TimeoutCondition(duration_ms=500), time_in_stage_s=0.5)


async def test_intent_with_confidence() -> None:
    cond = IntentCondition(intent="book_appointment", confidence=0.8)
    assert await fires(cond, context={"intent": {"name": "Book_Appointment", "confidence": 0.9}})
    assert not await fires(cond, context={"intent": {"name": "book_appointment", "confidence": 0.5}})
    assert await fires(cond, context={"intent": "book_appointment", "intent_confidence": 0.8})
    assert await fires(cond, context={"intent": "book_appointment"})  # bare name: confidence 1
    assert not await fires(cond, context={"intent": "cancel"})
    assert not await fires(cond, context={"intent": "book_appointment", "intent_confidence": "high"})
    assert not await fires(cond, context={})


async def test_custom_callable_sync_async_and_path() -> None:
    assert await fires(CustomCondition(evaluate=lambda ctx: ctx.stage_turns > 2), stage_turns=3)
    assert not await fires(CustomCondition(evaluate=lambda ctx: ctx.stage_turns > 2), stage_turns=2)

    async def later(ctx: TransitionContext) -> bool:
        return ctx.assistant_text == "yes"

    assert await fires(CustomCondition(evaluate=later), assistant_text="yes")
    path = "tests.unit.playbooks.helpers:vip_customer"
    assert await fires(CustomCondition(evaluate=path), context={"vip": True})
    assert not await fires(CustomCondition(evaluate=path), context={})
    assert await fires(CustomCondition(evaluate="tests.unit.playbooks.helpers.async_vip"), context={"vip": 1})


async def test_custom_that_raises_is_logged_and_not_met(caplog: pytest.LogCaptureFixture) -> None:
    def broken(ctx: TransitionContext) -> bool:
        raise RuntimeError("boom")

    assert not await fires(CustomCondition(evaluate=broken))
    assert not await fires(CustomCondition(evaluate="tests.unit.playbooks.helpers:missing"))
    assert "custom condition failed" in caplog.text


async def test_priority_wins_then_declaration_order() -> None:
    always = KeywordCondition(keywords=["go"])
    ts = [
        tr(always, tid="first", target="b"),
        tr(always, tid="second", target="c"),
        tr(always, tid="high", target="d", priority=5),
        tr(always, tid="low", target="e", priority=-1),
    ]
    ctx = TransitionContext(stage=STAGE, assistant_text="go")
    chosen = await select_transition(ts, ctx)
    assert chosen is not None and chosen.id == "high"
    assert [t.id for t in candidate_transitions(ts, "a")] == ["high", "first", "second", "low"]
    chosen = await select_transition(ts[:2], ctx)
    assert chosen is not None and chosen.id == "first"


async def test_unmet_high_priority_falls_through() -> None:
    ts = [
        tr(KeywordCondition(keywords=["never"]), tid="high", priority=10),
        tr(KeywordCondition(keywords=["go"]), tid="low", target="c", priority=-1),
    ]
    chosen = await select_transition(ts, TransitionContext(stage=STAGE, assistant_text="go"))
    assert chosen is not None and chosen.id == "low"


async def test_star_applies_from_every_stage_but_not_to_itself() -> None:
    star = tr(KeywordCondition(keywords=["bye"]), tid="any-bye", src="*", target="farewell")
    other = tr(KeywordCondition(keywords=["bye"]), tid="only-x", src="x", target="y")
    for stage_id in ("a", "x", "zzz"):
        ctx = TransitionContext(stage=Stage(id=stage_id), assistant_text="bye")
        chosen = await select_transition([other, star], ctx)
        assert chosen is not None
        assert chosen.id == ("only-x" if stage_id == "x" else "any-bye")
    ctx = TransitionContext(stage=Stage(id="farewell"), assistant_text="bye")
    assert await select_transition([star], ctx) is None
