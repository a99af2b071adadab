"""docs/RELIABILITY.md names a test for each promise: every test it names exists (a renamed or
deleted test fails here), and every case in its tables names a test or says it has none."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "RELIABILITY.md").read_text(encoding="utf-8")
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")
NAMED = sorted(set(REFERENCE.findall(DOC)))


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef)
    return {node.name for node in tree.body if isinstance(node, kinds)}


def test_the_page_names_its_tests() -> None:
    assert len(NAMED) >= 40


@pytest.mark.parametrize(("file", "name"), NAMED, ids=[f"{f}::{n}" for f, n in NAMED])
def test_every_test_the_page_names_exists(file: str, name: str) -> None:
    path = ROOT / file
    assert path.is_file(), f"docs/RELIABILITY.md names {file}, which does not exist"
    assert name.startswith("test_") and name in _tests_in(path), (
        f"docs/RELIABILITY.md names {file}::{name}, which is not a test there"
    )


def test_every_case_names_a_test_or_says_it_has_none() -> None:
    rows = [line for line in DOC.splitlines() if line.startswith("| ") and "---" not in line]
    cases = [row for row in rows if not row.startswith("| Case ")]
    assert len(cases) >= 30
    for row in cases:
        last = row.rstrip(" |").rsplit(" | ", 1)[-1]
        assert REFERENCE.search(last) or last == "no test yet", row
