"""docs/providers.md must only cite tests that exist: every ``file.py::test_name`` it names is checked."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "providers.md"
CITATION = re.compile(r"`(test_[a-z0-9_]+\.py)::(test_[A-Za-z0-9_]+)`")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_")
    }


def test_every_cited_test_exists() -> None:
    text = DOC.read_text()
    cited = CITATION.findall(text)
    assert len(cited) > 60, "the capability tables cite one test per filled cell"
    missing = []
    for filename, name in cited:
        path = ROOT / "tests" / "providers" / filename
        if not path.is_file() or name not in _tests_in(path):
            missing.append(f"{filename}::{name}")
    assert not missing, f"docs/providers.md cites tests that do not exist: {missing}"


def test_every_capability_row_is_filled_or_marked() -> None:
    rows = [line for line in DOC.read_text().splitlines() if line.startswith("| ") and "::" in line]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")][1:]
        assert all(cells), f"empty cell in: {row[:80]}"
