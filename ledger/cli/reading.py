"""What the auditors' commands share: the read models brought up to date, times and paging
as arguments, and rows written as a table, JSON or CSV.

Imports at module level only what ledger/cli/common.py allows (the parser is built for
`coi --help`); the rest inside the functions.
"""

from __future__ import annotations

import argparse
import sys

from ledger.cli.common import TYPE_CHECKING, UsageError, say, utc_time

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from datetime import datetime
    from typing import Any

    from projections.queries import Audit

    Column = tuple[str, Callable[[Any], object]]  # header, value of a row

FORMATS = ("table", "json", "csv")
# Outcomes a reader must not miss: they block or fail something.
ALARMING = frozenset({"MISMATCH", "FAIL", "REJECTED", "EXCURSION"})
MOST = 10_000  # rows per page at most: more is a file, and `--after` pages on


def add_output(parser: argparse.ArgumentParser, *, paged: bool = True, json_alias: bool = False) -> None:
    """`--format table|json|csv` (default table), and for a list that grows with the ledger
    `--limit N` and `--after CURSOR`."""
    parser.add_argument("--format", choices=FORMATS, default="table", help="default: table")
    if json_alias:
        parser.add_argument(
            "--json", dest="format", action="store_const", const="json", help="the same as --format json"
        )
    if paged:
        parser.add_argument(
            "--limit", type=_limit, default=100, metavar="N", help="rows per page (default 100)"
        )
        parser.add_argument(
            "--after", metavar="CURSOR", help="the page after the one that printed this cursor"
        )


def add_time(parser: argparse.ArgumentParser, flag: str, help: str) -> None:
    parser.add_argument(flag, type=utc_time, metavar="TIME", help=f"{help} (RFC 3339 with a zone)")


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MOST:
        raise argparse.ArgumentTypeError(f"{value} is not between 1 and {MOST:,}")
    return value


def open_audit() -> Audit:
    """The read models, first brought up to date from the ledger where no projector keeps them
    (saying so when that takes a while); where one does and is behind, a warning says how far."""
    from ledger.app.config import projections_url
    from ledger.cli.common import open_app
    from projections.policy import late_entry_after
    from projections.queries import Audit
    from projections.rebuild import catch_up
    from projections.store import ProjectionStore

    app = open_app(writer=False)
    store = ProjectionStore(projections_url())
    shown = [False]

    def progress(done: int, todo: int) -> None:
        if todo >= 20_000:
            shown[0] = True
            print(
                f"\rcoi: projecting the ledger for auditors: {done:,} of {todo:,} records",
                end="",
                file=sys.stderr,
                flush=True,
            )

    fresh = catch_up(app, store, progress)
    if shown[0]:
        print(file=sys.stderr)
    for sequence, why in fresh.set_aside:
        say(f"coi: sequence {sequence} could not be projected and was set aside: {why}", sys.stderr)
    if fresh.projector and fresh.projected < fresh.ledger:
        say(
            f"coi: warning: the projector has applied records up to sequence {fresh.projected:,} of the "
            f"ledger's {fresh.ledger:,}; what follows leaves out the rest until it catches up",
            sys.stderr,
        )
    return Audit(store.connection, store.postgres, late_entry_after(app))


def through(at: datetime | None) -> datetime | None:
    """The last instant a time as written covers: one to the second (as the tables show times)
    covers that whole second, so a record shown at 20:20:53Z is in `--as-of 20:20:53Z`."""
    from datetime import timedelta

    return at + timedelta(microseconds=999_999) if at is not None and not at.microsecond else at


def check_time(audit: Audit, flag: str, at: datetime | None, clock: str = "recorded_at") -> None:
    """A time before the ledger began cannot be asked about: nothing was there. `clock` says
    which time of its first record it is compared with (occurred_at for --as-of)."""
    began, asked = audit.began(clock), through(at)  # the question covers its whole second
    if at is not None and asked is not None and began is not None and asked < began:
        raise UsageError(
            f"{flag} {_text(at)} is before the ledger began (its first record: {clock} {_text(began)})"
        )


def emit(
    rows: Sequence[Any],
    columns: Sequence[Column],
    fmt: str,
    cursor: str | None = None,
    *,
    paged: bool = False,
) -> None:
    """Rows as a table (text from the ledger made printable), JSON (an object with `rows` and
    `next` for a paged list, its last page too, else the list) or CSV (a header, then rows;
    the cursor on standard error)."""
    import msgspec

    if fmt == "json":
        # Every page of a paged list has one shape, so a script pages on until `next` is null.
        payload: object = {"rows": rows, "next": cursor} if paged or cursor is not None else rows
        sys.stdout.write(msgspec.json.encode(payload).decode() + "\n")
        return
    cells = [[_text(get(row)) for _, get in columns] for row in rows]
    headers = [name for name, _ in columns]
    if fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows(cells)
        if cursor is not None:
            print(f"more: add --after {cursor}", file=sys.stderr)
        return
    if not rows:
        say("(no rows match)")
        return
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(headers)]
    say("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for c in cells:
        say("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())
    if cursor is not None:
        say(f"more: add --after {cursor}")


def marked(outcome: str | None) -> str | None:
    """An outcome as a table shows it: one that blocks or fails something stands out."""
    if outcome is not None and outcome.upper() in ALARMING:  # a register's outcome is the decision
        return f"{outcome.upper()} !!"
    return outcome


def _text(value: object) -> str:
    from datetime import datetime

    from projections.display import utc

    if value is None:
        return ""
    if isinstance(value, datetime):
        return utc(value)
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    return str(value)
