"""docs/devserver.md's auth and grant table must cite tests that exist: each ``path.py::test_name`` is checked."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "devserver.md"
CITATION = re.compile(r"`(tests/[A-Za-z0-9_/]+\.py)::(test_[A-Za-z0-9_]+)`")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_")
    }


def _table_rows() -> list[str]:
    text = DOC.read_text()
    section = text.split("## Auth and grants against livekit-server", 1)[1].split("\n## ", 1)[0]
    return [
        line
        for line in section.splitlines()
        if line.startswith("| ") and not line.startswith(("| rule", "| ---"))
    ]


def test_every_row_of_the_auth_table_cites_a_test() -> None:
    rows = _table_rows()
    assert len(rows) >= 20
    for row in rows:
        assert CITATION.search(row.rsplit("|", 2)[-2]), f"row without a test: {row[:80]}"


def test_every_cited_test_exists() -> None:
    cited = CITATION.findall(DOC.read_text())
    missing = [
        f"{path}::{name}"
        for path, name in cited
        if not (ROOT / path).is_file() or name not in _tests_in(ROOT / path)
    ]
    assert not missing, f"docs/devserver.md cites tests that do not exist: {missing}"
