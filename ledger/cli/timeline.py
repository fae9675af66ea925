"""`coi history COI` and `coi audit timeline COI [--as-of T] [--known-at T]`: one patient's
records as an auditor reads them, each with its sequence (for `coi prove`), when it happened
and when the ledger recorded it, every signature (devices and site systems too), the outcome
of a check (a bedside MISMATCH stands out), corrections beside the original and what the
rules flagged; the timeline adds each unit's status and custody as they stood."""

from __future__ import annotations

import argparse
import sys

from ledger.cli.common import EXIT_OK, TYPE_CHECKING, UsageError, say
from ledger.cli.reading import check_time, emit, marked, open_audit, through

if TYPE_CHECKING:
    from projections.queries import Audit, CorrectionView, RecordView, SignatureView

_RECORD_COLUMNS = (
    ("sequence", lambda r: r.sequence),
    ("occurred_at", lambda r: r.occurred_at),
    ("recorded_at", lambda r: r.recorded_at),
    ("site", lambda r: r.site),
    ("type", lambda r: r.type),
    ("actor", lambda r: r.actor),
    ("details", lambda r: _json(r.details)),
    ("outcome", lambda r: r.outcome),
    ("entered_late", lambda r: "late" if r.entered_late else ""),
    ("signatures", lambda r: [_signer(s) for s in r.signatures]),
    ("corrections", lambda r: [_correction(c) for c in r.corrections]),
    ("flags", lambda r: r.flags),
    ("reason", lambda r: r.reason),
)
# Each unit with where its last custody step left it.
_UNIT_COLUMNS = (
    ("unit", lambda ul: ul[0].unit_id),
    ("kind", lambda ul: ul[0].kind),
    ("status", lambda ul: ul[0].status),
    ("holds", lambda ul: ", ".join(ul[0].holds) or "-"),
    ("custodian", lambda ul: ul[0].custodian),
    ("site", lambda ul: ul[0].site),
    ("location", lambda ul: ul[1] or "-"),
    ("bedside", lambda ul: ul[0].bedside or "-"),
    ("since", lambda ul: f"#{ul[0].sequence}"),
)


def history(args: argparse.Namespace) -> int:
    audit = open_audit()
    records = _known(audit, args.coi).history(args.coi)
    if args.format != "table":
        emit(records, _RECORD_COLUMNS, args.format)
        return EXIT_OK
    for record in records:
        _show(record)
    return EXIT_OK


def timeline(args: argparse.Namespace) -> int:
    audit = _known(open_audit(), args.coi)
    check_time(audit, "--as-of", args.as_of, "occurred_at")
    check_time(audit, "--known-at", args.known_at)
    view = audit.timeline(args.coi, through(args.as_of), through(args.known_at))
    if args.format == "json":
        import msgspec

        sys.stdout.write(msgspec.json.encode(view).decode() + "\n")
        return EXIT_OK
    if args.format == "csv":
        emit(view.records, _RECORD_COLUMNS, "csv")
        return EXIT_OK
    when = [f"as of {_utc(args.as_of)} (what had happened by then)"] if args.as_of else []
    when += [f"as known at {_utc(args.known_at)} (what the ledger held then)"] if args.known_at else []
    say(f"{args.coi}: {len(view.records)} records" + (f", {'; '.join(when)}" if when else ""))
    if not view.records:
        say(
            "the ledger held nothing of this patient then"
            if args.known_at
            else "nothing had happened to this patient by then"
        )
        return EXIT_OK
    say("")
    for record in view.records:
        _show(record)
    say("")
    say("units after these records:")
    located = {step.unit_id: step.location for step in view.custody}  # the last step says where
    emit([(unit, located.get(unit.unit_id)) for unit in view.units], _UNIT_COLUMNS, "table")
    return EXIT_OK


def _known(audit: Audit, coi: str) -> Audit:
    if not audit.cois(coi, "coi"):
        hint = "" if not audit.cois(coi, most=1) else f"; it is an identifier of another kind: coi find {coi}"
        raise UsageError(f"COI {coi} has no records in this ledger{hint}")
    return audit


def _show(r: RecordView) -> None:
    outcome = f"  {marked(r.outcome)}" if r.outcome else ""
    late = f"  (entered late: recorded {_delay(r)} after it occurred)" if r.entered_late else ""
    say(f"#{r.sequence:<6} {_utc(r.occurred_at)}  {r.site:<7} {r.type}{outcome}  by {r.actor}{late}")
    say(f"        recorded {_utc(r.recorded_at)}  event {r.event_id}")
    if r.details:
        say("        " + ", ".join(f"{k}={_value(v)}" for k, v in r.details.items()))
    for s in r.signatures:
        say(f"        signed: {_signer(s)}")
    if r.reason:
        say(f"        reason: {r.reason}")
    if r.corrects is not None:
        say(f"        corrects #{r.corrects}")
    for c in r.corrections:
        say(f"        CORRECTED {_correction(c)}")
    for note in r.flags:
        say(f"        {'!! ' if note.startswith('MISMATCH') else ''}FLAG: {note}")


def _correction(c: CorrectionView) -> str:
    why = f" ({c.reason})" if c.reason else ""
    return f"by #{c.sequence}: {c.field}: {c.old_value} -> {c.new_value}{why}, {c.actor}"


def _json(value: object) -> str:
    import msgspec

    return msgspec.json.encode(value).decode()


def _signer(s: SignatureView) -> str:
    name = s.printed_name or "(not in the registry)"
    what = (
        f"{s.meaning} {_utc(s.signed_at)}"
        if s.meaning and s.signed_at
        else f"{s.kind or 'key'} signature, no manifestation"
    )
    return f"{name} ({s.principal}, {s.kind or 'unknown kind'}) {what}  key {s.keyid}"


def _value(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _delay(r: RecordView) -> str:
    seconds = int((r.recorded_at - r.occurred_at).total_seconds())
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds // 60} min"


def _utc(at: object) -> str:
    from datetime import datetime

    from projections.display import utc

    return utc(at) if isinstance(at, datetime) else "-"
