"""The layering contract: ``llmrtc`` (the framework) < ``signalling`` (token service, dev server) and
``worker`` (the LiveKit worker). No module imports a layer above it.

- ``llmrtc`` imports nothing from ``livekit``, ``worker`` or ``signalling``: checked on the source (every
  ``import``, also inside functions and ``TYPE_CHECKING`` blocks) and at run time (importing ``llmrtc`` and
  all its modules in a fresh interpreter loads none of them);
- ``signalling`` never imports ``worker``; ``worker`` never imports ``signalling``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN: dict[str, tuple[str, ...]] = {
    "llmrtc": ("livekit", "worker", "signalling"),
    "signalling": ("worker",),
    "worker": ("signalling",),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every absolute module name ``path`` imports (``import a.b`` and ``from a.b import c``), with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def _violations(package: str) -> list[str]:
    bad: list[str] = []
    for path in _modules(package):
        for line, name in _imports(path):
            top = name.split(".", 1)[0]
            if top in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_module_imports_a_layer_above_it(package: str) -> None:
    assert len(_modules(package)) > 5, f"{package} has its modules where expected"
    assert _violations(package) == []


def test_the_checker_finds_an_import_inside_a_function(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    from livekit import rtc\n    import worker.session\n")
    assert [name for _, name in _imports(sample)] == ["livekit", "worker.session"]


def test_importing_llmrtc_loads_no_livekit_worker_or_signalling() -> None:
    modules = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in _modules("llmrtc")
        if p.name != "__main__.py"
    ]
    script = (
        "import importlib, json, sys\n"
        "import llmrtc\n"
        "failed = {}\n"
        f"modules = {modules!r}\n"
        "for name in modules:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError as exc:\n"  # an optional vendor SDK that is not installed
        "        failed[name] = str(exc)\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & {'livekit', 'worker', 'signalling'})\n"
        "print(json.dumps({'loaded': loaded, 'failed': failed, 'count': len(modules)}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["loaded"] == [], f"importing llmrtc loaded {report['loaded']}"
    assert report["count"] > 30
    assert not any("livekit" in why or "worker" in why for why in report["failed"].values())
