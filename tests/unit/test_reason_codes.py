"""The README's reason-code table and the codes the code can give agree both ways."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from ledger.wire.decoding import _CODES
from ledger.wire.rejection import IN_FLIGHT_CODES

ROOT = Path(__file__).parents[2]
SOURCES = [p for d in ("ledger", "aggregates", "consumers") for p in (ROOT / d).rglob("*.py")]
# Codes made from a claim kind: f"{kind}_in_use" in ledger/app/application.py.
CLAIMED = {"din_in_use", "cartridge_in_use"}


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


def _raised() -> set[str]:
    codes = {code for _, code in _CODES} | CLAIMED
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Rejected" and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    codes.add(first.value)
    return codes


def test_every_code_the_ledger_gives_is_in_the_readme_and_no_other() -> None:
    table = _table()
    assert _raised() - table.keys() == set(), "codes missing from the README table"
    assert table.keys() - _raised() == set(), "codes in the README that nothing gives"


def test_the_held_codes_are_the_ones_the_site_outbox_holds() -> None:
    assert {code for code, resend in _table().items() if resend == "held"} == IN_FLIGHT_CODES
