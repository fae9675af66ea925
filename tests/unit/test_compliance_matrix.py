"""docs/compliance.md maps each Part 11 and Annex 11 clause to the tests that prove it: every
test it names must exist, or the matrix would point a customer's validation at nothing."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
MATRIX = ROOT / "docs" / "compliance.md"
NAMED = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")
CLAUSES = (
    *(f"11.10({c})" for c in "abcdefghijk"),
    "11.50", "11.70", "11.100", "11.200", "11.300",
    "§4", "§7", "§9", "§12", "§14", "§16",
)  # fmt: skip


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_test_the_matrix_names_exists() -> None:
    named = NAMED.findall(MATRIX.read_text())
    assert len(named) > 30
    missing = [
        f"{file}::{test}"
        for file, test in named
        if not (ROOT / file).is_file() or test not in _tests_in(ROOT / file)
    ]
    assert not missing, f"docs/compliance.md names tests that do not exist: {missing}"


def test_every_clause_has_a_row_that_says_its_status() -> None:
    rows = [line for line in MATRIX.read_text().splitlines() if line.startswith("| ")]
    for clause in CLAUSES:
        (row,) = [r for r in rows if r.startswith(f"| {clause} ")]
        status = row.split(" | ")[2]
        assert status.split()[0] in ("Met", "Partly", "Customer"), row
        if status.startswith(("Met", "Partly")):
            assert NAMED.search(row), f"{clause} says {status.split()[0]} and names no test"
