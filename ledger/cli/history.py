"""`coi history COI`: one patient's signed history (ledger/cli/timeline.py shows it)."""

from __future__ import annotations

import argparse

from ledger.cli.common import TYPE_CHECKING
from ledger.cli.reading import add_output

if TYPE_CHECKING:
    from ledger.cli.common import Subparsers


def add_parser(subparsers: Subparsers) -> None:
    s = subparsers.add_parser("history", help="one patient's signed history")
    s.add_argument("coi")
    add_output(s, paged=False, json_alias=True)


def run(args: argparse.Namespace) -> int:
    from ledger.cli import timeline

    return timeline.history(args)
