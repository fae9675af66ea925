"""The README's reason-code table and the ReasonCode enum agree both ways, and every code is
one the code can give."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from ledger.wire.rejection import IN_FLIGHT_CODES, ReasonCode

ROOT = Path(__file__).parents[2]
SOURCES = [p for d in ("ledger", "aggregates", "consumers", "projections") for p in (ROOT / d).rglob("*.py")]


def _table() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Reason codes") : text.index("## Rules the ledger enforces")]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            for code in re.findall(r"`([a-z0-9_]+)`", cells[0]):
                rows[code] = cells[2]
    return rows


def _used() -> set[str]:
    """The members the code names (`ReasonCode.X`) outside the enum itself."""
    used = set()
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "ReasonCode":
                used.add(ReasonCode[node.attr].value)
    return used


def test_the_readme_lists_every_code_of_the_enum_and_no_other() -> None:
    assert _table().keys() == {code.value for code in ReasonCode}


def test_every_code_is_one_the_code_can_give() -> None:
    assert {code.value for code in ReasonCode} - _used() == set(), "codes nothing gives"


def test_the_held_codes_are_the_ones_the_site_outbox_holds() -> None:
    assert {code for code, resend in _table().items() if resend == "held"} == IN_FLIGHT_CODES
