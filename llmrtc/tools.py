"""Tool calling: define tools, keep them in a registry, run the calls an LLM asks for.

``define_tool`` turns a function into a :class:`Tool`; its JSON Schema is given or inferred from the type
hints (or from a single pydantic-model parameter). :class:`ToolExecutor` validates arguments against the
schema, runs calls with a per-tool timeout and bounded concurrency, and always returns a
:class:`~llmrtc.types.ToolResult`: invalid arguments, timeouts and raising handlers become error results
that go back to the LLM, never exceptions.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_type_hints, overload

import jsonschema
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from llmrtc.errors import (
    ToolError,
    ToolExecutionError,
    ToolNotFoundError,
    ToolTimeoutError,
    ToolValidationError,
)
from llmrtc.hooks import HookContext, HookRunner, Stopwatch
from llmrtc.metrics import MetricNames, MetricsAdapter, safe_metrics
from llmrtc.types import ExecutionPolicy, ToolCallRequest, ToolDefinition, ToolResult

log = logging.getLogger("llmrtc.tools")

Handler = Callable[..., Any]


@dataclass(slots=True)
class ToolContext:
    """What a handler may learn about the call: pass a parameter named ``ctx`` to receive it."""

    session_id: str | None = None
    turn_id: str | None = None
    call_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Tool:
    """A tool: its definition (what the LLM sees) and its handler (sync or async)."""

    definition: ToolDefinition
    handler: Handler
    args_model: type[BaseModel] | None = None
    """When set, arguments are parsed into this model (one model parameter) before the call."""
    model_param: str | None = None
    accepts_ctx: bool = False
    kwargs_model: type[BaseModel] | None = None
    """When set, arguments are coerced through this model (inferred from type hints) before the call."""

    @property
    def name(self) -> str:
        return self.definition.name

    async def invoke(self, arguments: Mapping[str, Any], ctx: ToolContext | None = None) -> Any:
        """Call the handler with ``arguments`` (already schema-validated). Sync handlers run in a thread."""
        kwargs: dict[str, Any]
        try:
            if self.args_model is not None and self.model_param is not None:
                kwargs = {self.model_param: self.args_model.model_validate(dict(arguments))}
            elif self.kwargs_model is not None:
                parsed = self.kwargs_model.model_validate(dict(arguments))
                kwargs = {name: getattr(parsed, name) for name in parsed.model_fields_set | _required(parsed)}
            else:
                kwargs = dict(arguments)
        except ValidationError as exc:
            raise ToolValidationError(_pydantic_message(exc), tool_name=self.name) from exc
        if self.accepts_ctx:
            kwargs["ctx"] = ctx or ToolContext()
        if inspect.iscoroutinefunction(self.handler):
            return await self.handler(**kwargs)
        out = await asyncio.to_thread(self.handler, **kwargs)
        if inspect.isawaitable(out):
            out = await out
        return out


def _accepts_ctx(fn: Handler) -> bool:
    try:
        return "ctx" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False


def _required(model: BaseModel) -> set[str]:
    return {name for name, f in type(model).model_fields.items() if f.is_required()}


def _pydantic_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "arguments"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "invalid arguments: " + "; ".join(parts)


# ----------------------------------------------------------------------------------------- define_tool

_ARGS_HEADER = re.compile(r"^\s*(Args|Arguments|Parameters)\s*:\s*$")
_ARG_LINE = re.compile(r"^\s+(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.+)$")


def _parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Description (first paragraph) and Google-style ``Args:`` descriptions."""
    if not doc:
        return "", {}
    text = inspect.cleandoc(doc)
    paragraphs = text.split("\n\n")
    description = (
        " ".join(paragraphs[0].split()) if not _ARGS_HEADER.match(paragraphs[0].splitlines()[0]) else ""
    )
    params: dict[str, str] = {}
    in_args = False
    current: str | None = None
    for line in text.splitlines():
        if _ARGS_HEADER.match(line):
            in_args = True
            continue
        if in_args:
            if line and not line[0].isspace():
                in_args = False
                continue
            m = _ARG_LINE.match(line)
            if m and len(line) - len(line.lstrip()) <= 4:
                current = m.group(1).lstrip("*")
                params[current] = m.group(3).strip()
            elif current and line.strip():
                params[current] += " " + line.strip()
    return description, params


def _strip_titles(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _strip_titles(v) for k, v in schema.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(schema, list):
        return [_strip_titles(v) for v in schema]
    return schema


def _infer(
    fn: Handler,
) -> tuple[dict[str, Any], type[BaseModel] | None, str | None, type[BaseModel] | None, bool]:
    """(schema, args_model, model_param, kwargs_model, accepts_ctx) for ``fn``."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise ToolValidationError(
            f"cannot read the signature of {fn!r}; give parameters= explicitly"
        ) from exc
    try:
        hints = get_type_hints(fn, include_extras=True)
    except (NameError, TypeError) as exc:
        raise ToolValidationError(
            f"cannot read the type hints of {getattr(fn, '__name__', fn)!r}: {exc}; give parameters= explicitly"
        ) from exc
    _, arg_docs = _parse_docstring(fn.__doc__)
    accepts_ctx = "ctx" in sig.parameters
    params = [
        p
        for p in sig.parameters.values()
        if p.name != "ctx" and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    if len(params) == 1:
        ann = hints.get(params[0].name)
        if inspect.isclass(ann) and issubclass(ann, BaseModel):
            schema = _strip_titles(ann.model_json_schema())
            schema.setdefault("type", "object")
            return schema, ann, params[0].name, None, accepts_ctx
    fields: dict[str, Any] = {}
    for p in params:
        if p.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise ToolValidationError(f"tool parameter {p.name!r} must not be positional-only")
        ann = hints.get(p.name, Any)
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[p.name] = (ann, default)
    name = getattr(fn, "__name__", "tool")
    try:
        model = create_model(f"{name}_args", __config__=ConfigDict(arbitrary_types_allowed=False), **fields)
        schema = _strip_titles(model.model_json_schema())
    except Exception as exc:
        raise ToolValidationError(f"cannot build a JSON Schema for {name!r}: {exc}") from exc
    for pname, text in arg_docs.items():
        prop = schema.get("properties", {}).get(pname)
        if isinstance(prop, dict) and "description" not in prop:
            prop["description"] = text
    schema.setdefault("type", "object")
    schema.setdefault("properties", {})
    return schema, None, None, model, accepts_ctx


def _tool_from_function(
    fn: Handler,
    *,
    name: str | None,
    description: str | None,
    parameters: Mapping[str, Any] | None,
    execution_policy: ExecutionPolicy,
    timeout_s: float | None,
    interruption: Literal["finish", "cancel"],
    side_effect_free: bool = False,
) -> Tool:
    if not callable(fn):
        raise ToolValidationError(f"a tool handler must be callable, got {type(fn).__name__}")
    doc_description, _ = _parse_docstring(fn.__doc__)
    accepts_ctx = _accepts_ctx(fn)
    args_model = model_param = kwargs_model = None
    if parameters is None:
        schema, args_model, model_param, kwargs_model, accepts_ctx = _infer(fn)
    else:
        schema = dict(parameters)
    try:
        definition = ToolDefinition(
            name=name or getattr(fn, "__name__", ""),
            description=description if description is not None else doc_description,
            parameters=schema,
            execution_policy=execution_policy,
            timeout_s=timeout_s,
            interruption=interruption,
            side_effect_free=side_effect_free,
        )
    except ValidationError as exc:
        raise ToolValidationError(f"invalid tool definition: {_pydantic_message(exc)}") from exc
    _check_schema(definition)
    return Tool(definition, fn, args_model, model_param, accepts_ctx, kwargs_model)


def _check_schema(definition: ToolDefinition) -> None:
    try:
        jsonschema.Draft202012Validator.check_schema(definition.parameters)
    except jsonschema.SchemaError as exc:
        raise ToolValidationError(
            f"tool {definition.name!r} has an invalid JSON Schema: {exc.message}", tool_name=definition.name
        ) from exc


@overload
def define_tool(fn: Handler, /) -> Tool: ...


@overload
def define_tool(definition: ToolDefinition | Mapping[str, Any], handler: Handler, /) -> Tool: ...


@overload
def define_tool(
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    execution_policy: ExecutionPolicy = "parallel",
    timeout_s: float | None = None,
    interruption: Literal["finish", "cancel"] = "cancel",
    side_effect_free: bool = False,
) -> Callable[[Handler], Tool]: ...


def define_tool(
    first: Any = None,
    handler: Handler | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    execution_policy: ExecutionPolicy = "parallel",
    timeout_s: float | None = None,
    interruption: Literal["finish", "cancel"] = "cancel",
    side_effect_free: bool = False,
) -> Tool | Callable[[Handler], Tool]:
    """Make a :class:`Tool`.

    - ``@define_tool`` on a function: name from the function, description from its docstring, schema from its
      type hints (a single pydantic-model parameter gives the model's schema).
    - ``@define_tool(name=..., description=..., parameters=..., execution_policy=..., timeout_s=...)``.
    - ``define_tool(ToolDefinition(...) or dict, handler)`` as in the reference.

    A handler may take a ``ctx: ToolContext`` parameter; it is not part of the schema. ``side_effect_free``:
    the call changes nothing, so it may run inside a preemptive reply (see :class:`ToolDefinition`).
    """
    options = {
        "name": name,
        "description": description,
        "parameters": parameters,
        "execution_policy": execution_policy,
        "timeout_s": timeout_s,
        "interruption": interruption,
        "side_effect_free": side_effect_free,
    }
    if first is None:
        return lambda fn: _tool_from_function(fn, **options)  # type: ignore[arg-type]
    if isinstance(first, ToolDefinition | Mapping):
        if handler is None:
            raise ToolValidationError("define_tool(definition, handler) needs a handler")
        try:
            definition = (
                first if isinstance(first, ToolDefinition) else ToolDefinition.model_validate(dict(first))
            )
        except ValidationError as exc:
            raise ToolValidationError(f"invalid tool definition: {_pydantic_message(exc)}") from exc
        _check_schema(definition)
        if not callable(handler):
            raise ToolValidationError(f"a tool handler must be callable, got {type(handler).__name__}")
        return Tool(definition, handler, accepts_ctx=_accepts_ctx(handler))
    if callable(first):
        return _tool_from_function(first, **options)  # type: ignore[arg-type]
    raise ToolValidationError(f"define_tool expects a function or a definition, got {type(first).__name__}")


# ----------------------------------------------------------------------------------------- registry


class ToolRegistry:
    """Tools by name."""

    def __init__(self, tools: Iterable[Tool | Handler] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool | Handler, *, replace: bool = False) -> Tool:
        """Add a tool (a plain function is passed through :func:`define_tool`). Duplicate names raise."""
        if not isinstance(tool, Tool):
            tool = define_tool(tool)
        if tool.name in self._tools and not replace:
            raise ToolError(f"a tool named {tool.name!r} is already registered", tool_name=tool.name)
        self._tools[tool.name] = tool
        return tool

    def unregister(self, name: str) -> bool:
        """Remove a tool; returns whether it was there."""
        return self._tools.pop(name, None) is not None

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def __iter__(self) -> Iterator[Tool]:
        return iter(list(self._tools.values()))

    def names(self) -> list[str]:
        return list(self._tools)

    def definitions(self, names: Iterable[str] | None = None) -> list[ToolDefinition]:
        """Definitions of all tools, or of ``names`` (unknown names raise :class:`ToolNotFoundError`)."""
        if names is None:
            return [t.definition for t in self._tools.values()]
        out = []
        for n in names:
            tool = self._tools.get(n)
            if tool is None:
                raise ToolNotFoundError(f"no tool named {n!r} is registered", tool_name=n)
            out.append(tool.definition)
        return out


# ----------------------------------------------------------------------------------------- executor


class ToolExecutor:
    """Runs tool calls: schema validation, per-tool timeouts, bounded concurrency, execution policy.

    With ``default_policy="parallel"``, consecutive calls of tools marked ``parallel`` run together (at most
    ``max_concurrency`` at once) and a ``sequential`` tool runs alone, in call order; with
    ``default_policy="sequential"`` every call runs alone. A tool's ``timeout_s`` wins over ``timeout_s``.
    """

    def __init__(
        self,
        registry: ToolRegistry,
        *,
        timeout_s: float = 30.0,
        max_concurrency: int = 5,
        default_policy: ExecutionPolicy = "parallel",
        validate_arguments: bool = True,
        hooks: Any = None,
        metrics: MetricsAdapter | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.registry = registry
        self.timeout_s = timeout_s
        self.max_concurrency = max_concurrency
        self.default_policy = default_policy
        self.validate_arguments = validate_arguments
        self.hooks = hooks if isinstance(hooks, HookRunner) else HookRunner(hooks)
        self.metrics = safe_metrics(metrics)
        self._semaphore = asyncio.Semaphore(max_concurrency)

    async def execute(
        self,
        calls: list[ToolCallRequest],
        context: ToolContext | None = None,
        *,
        on_result: Callable[[ToolResult], None] | None = None,
    ) -> list[ToolResult]:
        """Run ``calls``; results come back in call order. ``on_result`` sees each result as it completes.

        Cancelling this coroutine cancels running calls of tools with ``interruption="cancel"`` and waits for
        ``"finish"`` ones (their results still reach ``on_result``) before re-raising the cancellation.
        """
        results: list[ToolResult | None] = [None] * len(calls)
        batches = self._batches(calls)
        running: dict[asyncio.Task[ToolResult], int] = {}

        def done(index: int, task: asyncio.Task[ToolResult]) -> None:
            if task.cancelled() or task.exception() is not None:
                return
            results[index] = task.result()
            if on_result is not None:
                try:
                    on_result(task.result())
                except Exception:
                    log.exception("tool on_result callback failed")

        try:
            for batch in batches:
                tasks = []
                for index in batch:
                    task = asyncio.create_task(self.execute_one(calls[index], context))
                    task.add_done_callback(functools.partial(done, index))
                    running[task] = index
                    tasks.append(task)
                await asyncio.wait(tasks)  # unlike gather, a cancelled wait leaves the calls running
                for t in tasks:
                    running.pop(t, None)
        except asyncio.CancelledError:
            finishing = []
            for task, index in running.items():
                if task.done():
                    continue
                tool = self.registry.get(calls[index].name)
                if tool is not None and tool.definition.interruption == "finish":
                    finishing.append(task)
                else:
                    task.cancel()
            pending = [t for t in running if not t.done()]
            if pending:
                # Let "finish" tools complete; cancelled ones unwind. A second cancel stops the wait.
                await asyncio.wait(pending)
            raise
        return [r for r in results if r is not None]

    def _batches(self, calls: list[ToolCallRequest]) -> list[list[int]]:
        batches: list[list[int]] = []
        current: list[int] = []
        for i, call in enumerate(calls):
            tool = self.registry.get(call.name)
            policy = (
                "sequential"
                if self.default_policy == "sequential"
                else (tool.definition.execution_policy if tool is not None else "parallel")
            )
            if policy == "sequential":
                if current:
                    batches.append(current)
                    current = []
                batches.append([i])
            else:
                current.append(i)
        if current:
            batches.append(current)
        return batches

    async def execute_one(self, call: ToolCallRequest, context: ToolContext | None = None) -> ToolResult:
        """Run one call. Never raises for tool failures (only for cancellation)."""
        base = context or ToolContext()
        ctx = ToolContext(base.session_id, base.turn_id, call.call_id, base.metadata)
        hctx = HookContext(session_id=base.session_id or "", turn_id=base.turn_id, component="tool")
        watch = Stopwatch()
        tags = {"tool": call.name}
        self.metrics.increment(MetricNames.TOOL_CALLS, 1, tags)
        await self.hooks.call("on_tool_start", hctx, call)
        tool = self.registry.get(call.name)
        try:
            if tool is None:
                raise ToolNotFoundError(f"unknown tool {call.name!r}", tool_name=call.name)
            if self.validate_arguments:
                self._validate(tool, call)
            timeout = tool.definition.timeout_s or self.timeout_s
            async with self._semaphore:
                try:
                    value = await asyncio.wait_for(tool.invoke(call.arguments, ctx), timeout)
                except TimeoutError as exc:
                    raise ToolTimeoutError(
                        f"tool {call.name!r} did not finish within {timeout:g} s", tool_name=call.name
                    ) from exc
            result = ToolResult(
                call_id=call.call_id,
                tool_name=call.name,
                success=True,
                result=value,
                duration_ms=watch.elapsed_ms(),
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = (
                exc
                if isinstance(exc, ToolError)
                else ToolExecutionError(
                    f"tool {call.name!r} failed: {type(exc).__name__}: {exc}", tool_name=call.name
                )
            )
            log.warning(
                "tool %s call %s failed (session=%s turn=%s): [%s] %s",
                call.name,
                call.call_id,
                base.session_id,
                base.turn_id,
                error.code,
                error.message,
            )
            self.metrics.increment(MetricNames.TOOL_ERRORS, 1, {**tags, "code": error.code})
            await self.hooks.call("on_tool_error", hctx, call, error)
            result = ToolResult(
                call_id=call.call_id,
                tool_name=call.name,
                success=False,
                error=error.message,
                error_code=error.code,
                duration_ms=watch.elapsed_ms(),
            )
        timing = watch.timing()
        self.metrics.timing(MetricNames.TOOL_DURATION, timing.duration_ms, tags)
        await self.hooks.call("on_tool_end", hctx, result, timing)
        return result

    @staticmethod
    def _validate(tool: Tool, call: ToolCallRequest) -> None:
        validator = jsonschema.Draft202012Validator(tool.definition.parameters)
        errors = sorted(validator.iter_errors(call.arguments), key=lambda e: list(e.path))
        if errors:
            details = "; ".join(
                f"{'.'.join(str(p) for p in e.path) or 'arguments'}: {e.message}" for e in errors[:5]
            )
            raise ToolValidationError(f"invalid arguments for {call.name!r}: {details}", tool_name=call.name)


__all__ = [
    "Tool",
    "ToolContext",
    "ToolExecutor",
    "ToolRegistry",
    "define_tool",
]
