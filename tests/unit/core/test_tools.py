"""define_tool, ToolRegistry and ToolExecutor."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field

from llmrtc.errors import ToolError, ToolNotFoundError, ToolValidationError
from llmrtc.hooks import Hooks
from llmrtc.metrics import InMemoryMetrics, MetricNames
from llmrtc.tools import Tool, ToolContext, ToolExecutor, ToolRegistry, define_tool
from llmrtc.types import ToolCallRequest, ToolDefinition


def call(name: str, call_id: str = "c1", **arguments: Any) -> ToolCallRequest:
    return ToolCallRequest(call_id=call_id, name=name, arguments=arguments)


@define_tool
async def get_weather(city: str, unit: str = "celsius", ctx: ToolContext | None = None) -> dict[str, Any]:
    """Get the current weather for a city.

    Args:
        city: The city name.
        unit: celsius or fahrenheit.
    """
    assert ctx is not None
    return {"city": city, "unit": unit, "call_id": ctx.call_id, "turn": ctx.turn_id}


class SearchArgs(BaseModel):
    query: str = Field(description="What to look for")
    limit: int = 3


def test_decorator_infers_schema_and_description() -> None:
    d = get_weather.definition
    assert d.name == "get_weather"
    assert d.description == "Get the current weather for a city."
    assert d.parameters["required"] == ["city"]
    assert d.parameters["properties"]["city"] == {"type": "string", "description": "The city name."}
    assert d.parameters["properties"]["unit"]["default"] == "celsius"
    assert "ctx" not in d.parameters["properties"]
    assert get_weather.accepts_ctx


def test_decorator_with_options_and_pydantic_model() -> None:
    @define_tool(name="web_search", description="Search the web", execution_policy="sequential", timeout_s=2)
    def search(args: SearchArgs) -> list[str]:
        return [args.query] * args.limit

    d = search.definition
    assert (d.name, d.description, d.execution_policy, d.timeout_s) == (
        "web_search",
        "Search the web",
        "sequential",
        2,
    )
    assert d.parameters["properties"]["query"]["description"] == "What to look for"
    assert d.parameters["required"] == ["query"]


def test_annotated_field_descriptions_and_nested_types() -> None:
    @define_tool
    def book(
        names: Annotated[list[str], Field(description="guests")], nights: Annotated[int, Field(ge=1)] = 1
    ) -> str:
        """Book rooms."""
        return f"{len(names)}x{nights}"

    props = book.definition.parameters["properties"]
    assert props["names"] == {"type": "array", "items": {"type": "string"}, "description": "guests"}
    assert props["nights"]["minimum"] == 1


def test_function_form_with_definition_or_dict() -> None:
    t1 = define_tool(ToolDefinition(name="ping", description="p"), lambda: "pong")
    t2 = define_tool(
        {"name": "echo", "parameters": {"type": "object", "properties": {"x": {"type": "string"}}}}, str
    )
    assert isinstance(t1, Tool) and t1.name == "ping"
    assert t2.definition.parameters["properties"]["x"]["type"] == "string"


def test_invalid_definitions_raise_typed_errors() -> None:
    with pytest.raises(ToolValidationError):
        define_tool({"name": "bad name!"}, lambda: None)
    with pytest.raises(ToolValidationError):
        define_tool(
            {"name": "x", "parameters": {"type": "object", "properties": {"a": {"type": 5}}}}, lambda: None
        )
    with pytest.raises(ToolValidationError):
        define_tool({"name": "x"})  # type: ignore[call-overload]


def test_registry() -> None:
    reg = ToolRegistry([get_weather])

    def add(a: int, b: int) -> int:
        return a + b

    reg.register(add)
    assert "add" in reg and "nope" not in reg
    assert reg.names() == ["get_weather", "add"]
    assert [d.name for d in reg.definitions(["add"])] == ["add"]
    with pytest.raises(ToolError):
        reg.register(add)
    reg.register(add, replace=True)
    with pytest.raises(ToolNotFoundError):
        reg.definitions(["missing"])
    assert reg.unregister("add") and not reg.unregister("add")
    assert reg.get("add") is None and len(reg) == 1


async def test_execute_success_with_context_and_coercion() -> None:
    @define_tool
    def search(args: SearchArgs) -> dict[str, Any]:
        return {"q": args.query, "n": args.limit}

    ex = ToolExecutor(ToolRegistry([get_weather, search]))
    ctx = ToolContext(session_id="s1", turn_id="t1")
    results = await ex.execute([call("get_weather", "a", city="Paris"), call("search", "b", query="x")], ctx)
    assert [r.call_id for r in results] == ["a", "b"]
    assert results[0].success and results[0].result == {
        "city": "Paris",
        "unit": "celsius",
        "call_id": "a",
        "turn": "t1",
    }
    assert results[1].result == {"q": "x", "n": 3}
    assert all(r.duration_ms >= 0 for r in results)


async def test_invalid_arguments_become_error_result() -> None:
    ex = ToolExecutor(ToolRegistry([get_weather]))
    res = await ex.execute_one(call("get_weather", city=12))
    assert not res.success and res.error_code == "tool_invalid_arguments"
    assert "city" in (res.error or "")
    missing = await ex.execute_one(call("get_weather"))
    assert missing.error_code == "tool_invalid_arguments" and "required" in (missing.error or "")
    assert '"code": "tool_invalid_arguments"' in missing.content_for_llm()


async def test_unknown_and_raising_tools_become_error_results() -> None:
    @define_tool
    def explode() -> None:
        raise RuntimeError("kaboom")

    ex = ToolExecutor(ToolRegistry([explode]))
    unknown, raised = await ex.execute([call("nope", "1"), call("explode", "2")])
    assert unknown.error_code == "tool_not_found"
    assert raised.error_code == "tool_execution_failed" and "kaboom" in (raised.error or "")


async def test_timeout_per_tool_and_default() -> None:
    @define_tool(timeout_s=0.05)
    async def slow() -> str:
        await asyncio.sleep(5)
        return "never"

    @define_tool
    async def slow_default() -> str:
        await asyncio.sleep(5)
        return "never"

    ex = ToolExecutor(ToolRegistry([slow, slow_default]), timeout_s=0.1)
    t0 = time.perf_counter()
    a, b = await ex.execute([call("slow", "1"), call("slow_default", "2")])
    assert a.error_code == b.error_code == "tool_timeout"
    assert "0.05" in (a.error or "") and "0.1" in (b.error or "")
    assert time.perf_counter() - t0 < 2.0


async def test_parallel_runs_concurrently_bounded_by_max_concurrency() -> None:
    active = 0
    peak = 0

    @define_tool
    async def work(n: int) -> int:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)
        active -= 1
        return n

    ex = ToolExecutor(ToolRegistry([work]), max_concurrency=2)
    results = await ex.execute([call("work", str(i), n=i) for i in range(5)])
    assert [r.result for r in results] == [0, 1, 2, 3, 4]
    assert peak == 2


async def test_sequential_policy_runs_alone_in_order() -> None:
    log: list[str] = []

    @define_tool(execution_policy="sequential")
    async def seq(tag: str) -> str:
        log.append(f"start {tag}")
        await asyncio.sleep(0.02)
        log.append(f"end {tag}")
        return tag

    ex = ToolExecutor(ToolRegistry([seq]))
    await ex.execute([call("seq", "1", tag="a"), call("seq", "2", tag="b")])
    assert log == ["start a", "end a", "start b", "end b"]

    @define_tool
    async def par(tag: str) -> str:
        log.append(f"start {tag}")
        await asyncio.sleep(0.02)
        log.append(f"end {tag}")
        return tag

    log.clear()
    ex2 = ToolExecutor(ToolRegistry([par]), default_policy="sequential")
    await ex2.execute([call("par", "1", tag="a"), call("par", "2", tag="b")])
    assert log == ["start a", "end a", "start b", "end b"]


async def test_cancellation_cancels_cancel_tools_and_lets_finish_tools_complete() -> None:
    state: dict[str, str] = {}

    @define_tool
    async def cancellable() -> str:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            state["cancellable"] = "cancelled"
            raise
        return "done"

    @define_tool(interruption="finish")
    async def booking() -> str:
        await asyncio.sleep(0.1)
        state["booking"] = "booked"
        return "booked"

    seen: list[str] = []
    ex = ToolExecutor(ToolRegistry([cancellable, booking]))
    task = asyncio.create_task(
        ex.execute(
            [call("cancellable", "1"), call("booking", "2")], on_result=lambda r: seen.append(r.call_id)
        )
    )
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert state == {"cancellable": "cancelled", "booking": "booked"}
    assert seen == ["2"]


async def test_tool_hooks_and_metrics() -> None:
    events: list[str] = []

    class H(Hooks):
        def on_tool_start(self, ctx: Any, call: ToolCallRequest) -> None:
            events.append(f"start {call.name} {ctx.turn_id}")

        async def on_tool_end(self, ctx: Any, result: Any, timing: Any) -> None:
            events.append(f"end {result.tool_name} {result.success} {timing.duration_ms >= 0}")

        def on_tool_error(self, ctx: Any, call: ToolCallRequest, error: Exception) -> None:
            events.append(f"error {call.name} {type(error).__name__}")

    metrics = InMemoryMetrics()
    ex = ToolExecutor(ToolRegistry([get_weather]), hooks=H(), metrics=metrics)
    await ex.execute(
        [call("get_weather", "1", city="Rome"), call("get_weather", "2")], ToolContext(turn_id="T")
    )
    assert events[:2] == ["start get_weather T", "start get_weather T"]
    assert "error get_weather ToolValidationError" in events
    assert events.count("end get_weather True True") == 1 and events.count("end get_weather False True") == 1
    assert metrics.counter(MetricNames.TOOL_CALLS, {"tool": "get_weather"}) == 2
    assert metrics.counter(MetricNames.TOOL_ERRORS) == 1
    assert len(metrics.timings(MetricNames.TOOL_DURATION)) == 2
