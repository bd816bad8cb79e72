"""Load playbooks from YAML or JSON files (or text), validated by pydantic and :func:`validate_playbook`,
and the tool registries they name (:func:`load_tools`)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
from pathlib import Path
from typing import Any, Literal

import yaml

from llmrtc.errors import ConfigError, PlaybookError, PlaybookValidationError
from llmrtc.playbooks.types import Playbook
from llmrtc.playbooks.validation import ValidationIssue, validate_playbook
from llmrtc.tools import ToolRegistry

log = logging.getLogger("llmrtc.playbooks")

FileFormat = Literal["yaml", "json"]


def parse_playbook_text(text: str, fmt: FileFormat = "yaml", *, source: str = "<text>") -> Any:
    """Parse YAML or JSON text into plain data; syntax errors become :class:`PlaybookValidationError`."""
    try:
        data = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        issue = ValidationIssue("error", "syntax", exc.msg, f"line {exc.lineno}, column {exc.colno}")
        raise PlaybookValidationError(f"{source} is not valid JSON: {issue}", [issue]) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "(unknown)"
        problem = getattr(exc, "problem", None) or str(exc)
        issue = ValidationIssue("error", "syntax", str(problem), where)
        raise PlaybookValidationError(f"{source} is not valid YAML: {issue}", [issue]) from exc
    if not isinstance(data, dict):
        issue = ValidationIssue("error", "schema", "a playbook file must hold one mapping", "(root)")
        raise PlaybookValidationError(f"{source}: {issue}", [issue])
    return data


def loads_playbook(
    text: str, fmt: FileFormat = "yaml", *, registry: Any = None, source: str = "<text>"
) -> Playbook:
    """A validated playbook from YAML or JSON text. Raises :class:`PlaybookValidationError` with every error."""
    data = parse_playbook_text(text, fmt, source=source)
    result = validate_playbook(data, registry)
    playbook = result.raise_for_errors(source)
    for issue in result.warnings:
        log.warning("playbook warning: %s", issue, extra={"playbook_id": playbook.id, "source": source})
    return playbook


def load_playbook(path: str | Path, *, registry: Any = None) -> Playbook:
    """A validated playbook from a ``.yaml``/``.yml``/``.json`` file.

    With ``registry`` (a :class:`llmrtc.tools.ToolRegistry`), every tool name must be registered.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise PlaybookError(f"{p}: playbook files end in .yaml, .yml or .json")
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlaybookError(f"cannot read playbook file {p}: {exc.strerror or exc}") from exc
    return loads_playbook(text, "json" if suffix == ".json" else "yaml", registry=registry, source=str(p))


def load_tools(spec: str | None) -> ToolRegistry:
    """The tool registry named by ``spec``; an empty one for ``None``.

    ``spec`` is ``path/to/tools.py`` or ``package.module``, whose ``build_registry()`` or ``registry`` is
    used, optionally with ``:name`` naming a function that returns a ToolRegistry, or a registry. Raises
    :class:`~llmrtc.errors.ConfigError` when it cannot be loaded.
    """
    if not spec:
        return ToolRegistry()
    target, _, attr = spec.partition(":")
    if target.endswith(".py") or "/" in target:
        path = Path(target)
        if not path.is_file():
            raise ConfigError(f"tools file {path} does not exist")
        module_spec = importlib.util.spec_from_file_location(f"_llmrtc_tools_{path.stem}", path)
        if module_spec is None or module_spec.loader is None:
            raise ConfigError(f"cannot load tools file {path}")
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ConfigError(f"cannot import tools module {target!r}: {exc}") from exc
    names = [attr] if attr else ["build_registry", "registry"]
    for name in names:
        obj = getattr(module, name, None)
        if obj is None:
            continue
        if callable(obj) and not isinstance(obj, ToolRegistry):
            obj = obj()
        if isinstance(obj, ToolRegistry):
            return obj
        raise ConfigError(f"{spec}: {name} is not a ToolRegistry (nor a function returning one)")
    raise ConfigError(f"{spec}: define build_registry() or registry, or name one with ':name'")


__all__ = ["FileFormat", "load_playbook", "load_tools", "loads_playbook", "parse_playbook_text"]
