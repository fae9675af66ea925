"""`coi audit timeline|trail|register|signatures|stages` and `coi find`: the auditors' questions
over the read models (projections/queries.py)."""

from __future__ import annotations

import argparse

from ledger.cli.common import TYPE_CHECKING
from ledger.cli.reading import add_output, add_time

if TYPE_CHECKING:
    from ledger.cli.common import Subparsers

REGISTER_KINDS = ("deviation", "hold", "excursion", "correction", "disposition")
# What the identifier index holds (projections/audit.py), for `coi find`'s help and its "not found".
IDENTIFIERS = (
    "COI, DIN, batch, unit (bag, product), cartridge, sample, shipment, label, deviation, hold, "
    "logger, shuttle, order or event id"
)


def add_parser(subparsers: Subparsers) -> None:
    find = subparsers.add_parser(
        "find", help="the patients and records any identifier names (COI, DIN, batch, unit, ...)"
    )
    find.add_argument("identifier", help=f"a {IDENTIFIERS}")
    add_output(find)  # pages by patient: a logger names thousands

    audit = subparsers.add_parser(
        "audit", help="timeline as of a time, audit trail, registers, signatures, stages"
    )
    cmds = audit.add_subparsers(dest="audit_command", required=True)

    timeline = cmds.add_parser("timeline", help="one patient's records and units, as they stood at a time")
    timeline.add_argument("coi")
    add_time(timeline, "--as-of", "what had happened by then (occurred_at; late entries included)")
    add_time(timeline, "--known-at", "what the ledger held then (recorded_at; later corrections left out)")
    add_output(timeline, paged=False)

    trail = cmds.add_parser("trail", help="the audit trail for periodic review, by recorded time")
    trail.add_argument("--coi")
    trail.add_argument("--site")
    trail.add_argument("--actor", help="a principal who signed the record")
    trail.add_argument("--type", dest="event_type", help="an event type, e.g. custody_transferred")
    add_time(trail, "--from", "recorded at or after")
    add_time(trail, "--to", "recorded at or before")
    add_output(trail)

    register = cmds.add_parser("register", help="deviations, holds, excursions, corrections, dispositions")
    register.add_argument("--open", action="store_true", help="only what is still open")
    register.add_argument("--kind", choices=REGISTER_KINDS)
    register.add_argument("--coi")
    add_output(register)

    signatures = cmds.add_parser("signatures", help="every signature with its manifestation")
    signatures.add_argument("--coi")
    signatures.add_argument("--batch")
    add_output(signatures)

    stages = cmds.add_parser("stages", help="how long each stage of the journey takes, p50/p90 per site")
    stages.add_argument("--site")
    add_output(stages, paged=False)


def run(args: argparse.Namespace) -> int:
    if args.command == "find":
        from ledger.cli import registers

        return registers.find(args)
    if args.audit_command == "timeline":
        from ledger.cli import timeline

        return timeline.timeline(args)
    from ledger.cli import registers

    command: int = getattr(registers, args.audit_command)(args)
    return command
