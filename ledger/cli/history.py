"""`coi history COI`: one patient's signed history."""

from __future__ import annotations

import argparse
import sys

from ledger.cli.common import EXIT_OK, TYPE_CHECKING, UsageError, add_format, open_app, say

if TYPE_CHECKING:
    from ledger.cli.common import Subparsers


def add_parser(subparsers: Subparsers) -> None:
    s = subparsers.add_parser("history", help="one patient's signed history")
    s.add_argument("coi")
    add_format(s, json_alias=True)


def run(args: argparse.Namespace) -> int:
    import msgspec

    from projections.display import MINUTE, utc
    from projections.history import history
    from projections.policy import late_entry_after

    app = open_app(writer=False)
    rows = history(app, args.coi)
    late_after = late_entry_after(app)
    if not rows:
        raise UsageError(f"{args.coi} has no records in this ledger")
    if args.format == "json":
        sys.stdout.write(msgspec.json.encode(rows).decode() + "\n")
        return EXIT_OK
    for r in rows:
        late = "  (entered late)" if r.recorded_at - r.occurred_at > late_after(r.recorded_at) else ""
        when = utc(r.occurred_at, MINUTE)
        say(f"v{r.version:<3} {when} {r.site:<7} {r.type:<28} {r.actor}{late}")
        say(f"      {r.details}")
        for s in r.signatures:
            say(f"      signed: {s}")
        if r.reason:
            say(f"      reason: {r.reason}")
        for c in r.corrections:
            say(f"      CORRECTED {c}")
        for n in r.notes:
            say(f"      FLAG: {n}")
    return EXIT_OK
