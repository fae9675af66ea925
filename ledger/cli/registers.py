"""`coi find` and `coi audit trail|register|signatures|stages`: the read models' answers
(projections/queries.py) as tables an auditor reads, or JSON and CSV for their tools.

Every filter is checked against the read models first: a typo in a site, principal, event type
or COI exits 2 naming it, where an empty answer would read as "nothing happened there"."""

from __future__ import annotations

import argparse

from ledger.cli.common import EXIT_OK, TYPE_CHECKING, UsageError
from ledger.cli.reading import check_time, emit, marked, open_audit, through

if TYPE_CHECKING:
    from datetime import datetime
    from typing import Any

    from ledger.cli.reading import Column
    from projections.queries import Audit, Match, Page, RecordView
    from projections.rows import RegisterRow


def find(args: argparse.Namespace) -> int:
    from ledger.cli.audit import IDENTIFIERS

    if not args.identifier.strip():
        raise UsageError("find: give an identifier (a COI, DIN, batch, unit, ...)")
    audit = open_audit()
    page = audit.find(args.identifier, limit=args.limit, after=args.after)
    if not page.rows and args.after is None:
        # Identifiers are written in upper case (COIs, DINs, batch ids) or lower case (event ids).
        cases = (args.identifier.upper(), args.identifier.lower())
        other = next((c for c in cases if audit.cois(c, most=1)), None)
        hint = f"; did you mean {other}?" if other and other != args.identifier else ""
        raise UsageError(f"no record names {args.identifier} (searched every {IDENTIFIERS}){hint}")

    def sequences(m: Match) -> str:
        long = args.format == "table" and len(m.records) > 6  # a file gets them all
        shown = [*m.records[:5], "...", m.records[-1]] if long else m.records
        return ", ".join(map(str, shown))

    return _emit_page(
        page,
        [("identifier", lambda m: m.identifier), ("kind", lambda m: m.kind), ("coi", lambda m: m.coi),
         ("records", lambda m: len(m.records)), ("sequences", sequences)],
        args.format,
    )  # fmt: skip


def trail(args: argparse.Namespace) -> int:
    audit = open_audit()
    _check_coi(audit, args.coi)
    if args.site is not None:
        _check_site(audit, "--site", args.site)
    if args.actor is not None and not audit.principal_known(args.actor):
        raise UsageError(f"--actor {args.actor}: no such principal was ever registered")
    if args.event_type is not None:
        from ledger.wire.events import EVENT_TYPES

        if args.event_type not in EVENT_TYPES:
            raise UsageError(f"--type {args.event_type}: not an event type (coi schema lists them)")
    start, end = getattr(args, "from"), args.to  # `from` is a keyword, hence getattr
    _check_span(audit, start, end)
    end = through(end)
    page = audit.trail(
        coi=args.coi, site=args.site, actor=args.actor, event_type=args.event_type,
        start=start, end=end, limit=args.limit, after=args.after,
    )  # fmt: skip
    table = args.format == "table"

    def notes(r: RecordView) -> str:
        said = ["entered late"] if r.entered_late else []
        said += [f"corrects {r.corrects}"] if r.corrects is not None else []
        said += [f"corrected by {c.sequence}" for c in r.corrections]
        said += [f"reason: {r.reason}"] if r.reason else []
        return "; ".join(said + [f"FLAG: {f}" for f in r.flags])

    return _emit_page(
        page,
        [("sequence", lambda r: r.sequence), ("recorded_at", lambda r: r.recorded_at),
         ("coi", lambda r: r.coi), ("type", lambda r: r.type), ("site", lambda r: r.site),
         ("signers", lambda r: [s.principal for s in r.signatures]),
         ("outcome", lambda r: _outcome(r.outcome, table)), ("notes", notes)],
        args.format,
    )  # fmt: skip


def register(args: argparse.Namespace) -> int:
    audit = open_audit()
    _check_coi(audit, args.coi)
    page = audit.register(
        kind=args.kind, open_only=args.open, coi=args.coi, limit=args.limit, after=args.after
    )
    table = args.format == "table"

    def state(r: RegisterRow) -> str:
        return "closed" if r.closed_sequence is not None else "OPEN" if table else "open"

    return _emit_page(
        page,
        [("opened", lambda r: r.opened_sequence), ("opened_at", lambda r: r.opened_at),
         ("kind", lambda r: r.kind), ("id", lambda r: r.item_id), ("coi", lambda r: r.coi),
         ("severity", lambda r: r.severity),
         ("site", lambda r: r.site), ("opened_by", lambda r: r.opened_by), ("state", state),
         ("closed", lambda r: r.closed_sequence), ("closed_at", lambda r: r.closed_at),
         ("closed_by", lambda r: r.closed_by),
         ("outcome", lambda r: _outcome(r.outcome, table)), ("reason", lambda r: r.reason),
         ("summary", lambda r: r.summary)],
        args.format,
    )  # fmt: skip


def signatures(args: argparse.Namespace) -> int:
    audit = open_audit()
    _check_coi(audit, args.coi)
    page = audit.signatures(coi=args.coi, batch=args.batch, limit=args.limit, after=args.after)
    return _emit_page(
        page,
        [("sequence", lambda s: s.sequence), ("type", lambda s: s.type),
         ("principal", lambda s: s.principal), ("kind", lambda s: s.kind),
         ("printed_name", lambda s: s.printed_name), ("signed_at", lambda s: s.signed_at),
         ("meaning", lambda s: s.meaning), ("keyid", lambda s: s.keyid)],
        args.format,
    )  # fmt: skip


def stages(args: argparse.Namespace) -> int:
    audit = open_audit()
    if args.site is not None:
        _check_site(audit, "--site", args.site)
    figures = audit.stages(args.site)
    # A table shows durations as a person reads them; CSV keeps the hours for a spreadsheet.
    shown = _duration if args.format == "table" else (lambda hours: round(hours, 6))
    unit = "" if args.format == "table" else "_hours"

    def hours(name: str) -> Column:
        return f"{name}{unit}", lambda s: shown(getattr(s, f"{name}_hours"))

    columns: list[Column] = [
        ("stage", lambda s: s.stage), ("site", lambda s: s.site), ("count", lambda s: s.count),
        hours("p50"), hours("p90"), hours("max"),
    ]  # fmt: skip
    emit(figures, columns, args.format)
    return EXIT_OK


def _emit_page(page: Page[Any], columns: list[Column], fmt: str) -> int:
    emit(page.rows, columns, fmt, page.next, paged=True)
    return EXIT_OK


def _outcome(outcome: str | None, table: bool) -> str | None:
    return marked(outcome) if table else outcome


def _duration(hours: float) -> str:
    """Hours with one decimal; under an hour, minutes; under a minute, seconds."""
    if hours >= 1:
        return f"{hours:.1f} h"
    if hours * 60 >= 1:
        return f"{hours * 60:.1f} min"
    return f"{hours * 3600:.1f} s"


def _check_coi(audit: Audit, coi: str | None) -> None:
    if coi is not None and not audit.cois(coi, "coi"):
        raise UsageError(f"--coi {coi}: no record names this patient")


def _check_site(audit: Audit, flag: str, site: str) -> None:
    if not audit.site_seen(site):
        raise UsageError(f"{flag} {site}: no record was made at this site")


def _check_span(audit: Audit, start: datetime | None, end: datetime | None) -> None:
    # A --from before the ledger began asks for everything from its start: only --to can ask
    # about a time when nothing was there.
    check_time(audit, "--to", end)
    if start is not None and end is not None and start > end:
        raise UsageError(f"--from {_when(start)} is after --to {_when(end)}")


def _when(at: datetime) -> str:
    from projections.display import utc

    return utc(at)
