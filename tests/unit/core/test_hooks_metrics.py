"""Hooks (runner, combination, logging hooks, guardrail) and metrics adapters."""

from __future__ import annotations

import io
import logging
from typing import Any

import pytest

from llmrtc.errors import GuardrailError
from llmrtc.hooks import (
    HOOK_NAMES,
    HookContext,
    HookRunner,
    Hooks,
    LoggingHooks,
    Stopwatch,
    Timing,
    combine_hooks,
    create_logging_hooks,
)
from llmrtc.metrics import (
    ConsoleMetrics,
    InMemoryMetrics,
    MetricNames,
    MetricsAdapter,
    NullMetrics,
    PrometheusMetrics,
    safe_metrics,
)
from llmrtc.types import LLMResult

CTX = HookContext(session_id="s1", turn_id="t1", room="r", participant="alice")
TIMING = Timing(start=0.0, end=0.5, duration_ms=500.0)


def test_base_hooks_cover_every_reference_hook_point() -> None:
    for name in HOOK_NAMES:
        assert callable(getattr(Hooks, name))
    assert len(HOOK_NAMES) == 21


async def test_runner_calls_sync_and_async_and_isolates_failures(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    class A(Hooks):
        def on_turn_start(self, ctx: HookContext) -> None:
            calls.append("a")
            raise RuntimeError("broken hook")

    class B(Hooks):
        async def on_turn_start(self, ctx: HookContext) -> None:
            calls.append("b")

    runner = HookRunner([A(), B()])
    with caplog.at_level(logging.WARNING, "llmrtc.hooks"):
        await runner.call("on_turn_start", CTX)
    assert calls == ["a", "b"]
    assert "on_turn_start failed" in caplog.text and "turn=t1" in caplog.text and "broken hook" in caplog.text
    assert runner.has("on_turn_start") and not runner.has("on_llm_end")


async def test_duck_typed_hook_objects_work() -> None:
    got: list[str] = []

    class Plain:
        def on_error(self, ctx: HookContext, error: Exception) -> None:
            got.append(str(error))

    await HookRunner(Plain()).call("on_error", CTX, ValueError("v"))
    assert got == ["v"]


async def test_on_llm_end_raising_is_a_guardrail() -> None:
    class Guard(Hooks):
        def on_llm_end(self, ctx: HookContext, result: LLMResult, timing: Timing) -> None:
            raise ValueError("content policy")

    runner = HookRunner(Guard())
    assert runner.has_guardrail()
    with pytest.raises(GuardrailError, match="content policy"):
        await runner.llm_end(CTX, LLMResult(full_text="x"), TIMING)
    # other hook points never raise
    await runner.call("on_llm_end", CTX, LLMResult(full_text="x"), TIMING)


async def test_logging_hooks_are_not_a_guardrail_and_log_with_ids(caplog: pytest.LogCaptureFixture) -> None:
    hooks = create_logging_hooks("info")
    assert isinstance(hooks, LoggingHooks)
    runner = HookRunner(hooks)
    assert not runner.has_guardrail()
    with caplog.at_level(logging.DEBUG, "llmrtc.hooks.logging"):
        await runner.llm_end(CTX, LLMResult(full_text="hello"), TIMING)
        await runner.call("on_error", CTX.child(component="llm"), GuardrailError("no"))
    assert "session=s1" in caplog.text and "turn=t1" in caplog.text and "500 ms" in caplog.text
    assert any(r.levelno == logging.ERROR and "guardrail_blocked" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError):
        create_logging_hooks("loud")


async def test_combine_hooks_calls_parts_in_order_and_isolates() -> None:
    order: list[str] = []

    class One(Hooks):
        def on_speech_start(self, ctx: HookContext) -> None:
            order.append("one")
            raise RuntimeError("x")

    class Two(Hooks):
        async def on_speech_start(self, ctx: HookContext) -> None:
            order.append("two")

    combined = combine_hooks(One(), None, combine_hooks(Two()))
    await HookRunner(combined).call("on_speech_start", CTX)
    assert order == ["one", "two"]


def test_stopwatch_timing() -> None:
    watch = Stopwatch()
    t = watch.timing()
    assert t.duration_ms >= 0 and t.end >= t.start


def test_in_memory_metrics() -> None:
    m = InMemoryMetrics()
    m.increment(MetricNames.ERRORS, tags={"component": "llm"})
    m.increment(MetricNames.ERRORS, 2, {"component": "tts"})
    m.timing(MetricNames.LLM_TTFT, 120.0, {"provider": "x"})
    m.gauge(MetricNames.CONNECTIONS_ACTIVE, 3)
    m.gauge(MetricNames.CONNECTIONS_ACTIVE, 2)
    assert m.counter(MetricNames.ERRORS) == 3
    assert m.counter(MetricNames.ERRORS, {"component": "tts"}) == 2
    assert m.timings(MetricNames.LLM_TTFT) == [120.0]
    assert m.gauge_value(MetricNames.CONNECTIONS_ACTIVE) == 2
    assert isinstance(m, MetricsAdapter) and isinstance(NullMetrics(), MetricsAdapter)
    m.reset()
    assert m.names() == set()


def test_metric_names_match_the_reference() -> None:
    assert MetricNames.STT_DURATION == "llmrtc.stt.duration_ms"
    assert MetricNames.LLM_TTFT == "llmrtc.llm.ttft_ms"
    assert MetricNames.SESSION_DURATION == "llmrtc.session.duration_ms"
    assert MetricNames.CONNECTIONS_ACTIVE == "llmrtc.connections.active"
    assert MetricNames.TOOL_DURATION == "llmrtc.tool.duration_ms"
    assert MetricNames.TOOL_CALLS == "llmrtc.tool.calls"
    assert MetricNames.TOOL_ERRORS == "llmrtc.tool.errors"
    assert MetricNames.STAGE_DURATION == "llmrtc.playbook.stage.duration_ms"
    assert MetricNames.STAGE_TRANSITIONS == "llmrtc.playbook.transitions"
    assert MetricNames.STAGE_TURNS == "llmrtc.playbook.stage.turns"
    assert MetricNames.CURRENT_STAGE == "llmrtc.playbook.stage.current"
    assert MetricNames.PLAYBOOK_COMPLETIONS == "llmrtc.playbook.completions"


def test_console_metrics_writes_lines() -> None:
    out = io.StringIO()
    m = ConsoleMetrics(stream=out)
    m.increment("llmrtc.errors", tags={"component": "stt"})
    m.timing("llmrtc.llm.ttft_ms", 12.5)
    m.gauge("llmrtc.connections.active", 4)
    assert out.getvalue().splitlines() == [
        "[metrics] count llmrtc.errors=1 component=stt",
        "[metrics] timing llmrtc.llm.ttft_ms=12.5",
        "[metrics] gauge llmrtc.connections.active=4",
    ]


def test_prometheus_metrics_exposition() -> None:
    m = PrometheusMetrics()
    m.increment(MetricNames.TOOL_CALLS, tags={"tool": "get_weather"})
    m.increment(MetricNames.TOOL_CALLS, tags={"tool": "get_weather"})
    m.timing(MetricNames.LLM_TTFT, 320.0, {"provider": "openai"})
    m.gauge(MetricNames.CONNECTIONS_ACTIVE, 5)
    m.increment(MetricNames.TOOL_CALLS, tags={"other": "x"})  # label set fixed by first use: no crash
    text = m.render().decode()
    assert 'llmrtc_tool_calls_total{tool="get_weather"} 2.0' in text
    assert 'llmrtc_llm_ttft_ms_bucket{le="500.0",provider="openai"} 1.0' in text
    assert "llmrtc_connections_active 5.0" in text
    m.gauge(MetricNames.TOOL_CALLS, 1)  # name reused with another kind: logged, not raised
    assert PrometheusMetrics().render() != text.encode()  # separate registries


def test_safe_metrics_swallows_adapter_failures(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def increment(self, name: str, value: float = 1, tags: Any = None) -> None:
            raise RuntimeError("down")

        def timing(self, name: str, ms: float, tags: Any = None) -> None:
            raise RuntimeError("down")

        def gauge(self, name: str, value: float, tags: Any = None) -> None:
            raise RuntimeError("down")

    safe = safe_metrics(Broken())
    with caplog.at_level(logging.ERROR, "llmrtc.metrics"):
        safe.increment("a")
        safe.timing("b", 1)
        safe.gauge("c", 1)
    assert caplog.text.count("metrics adapter failed") == 3
    assert safe_metrics(safe) is safe
