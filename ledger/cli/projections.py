"""`coi projections rebuild`: the auditors' read models, rebuilt from the ledger."""

from __future__ import annotations

import argparse
import sys

from ledger.cli.common import EXIT_OK, TYPE_CHECKING, UsageError, open_app, say

if TYPE_CHECKING:
    from ledger.cli.common import Subparsers


def add_parser(subparsers: Subparsers) -> None:
    prj = subparsers.add_parser("projections", help="auditors' read models").add_subparsers(
        dest="projections_command", required=True
    )
    prj.add_parser("rebuild", help="rebuild the projection tables from the ledger")


def run(args: argparse.Namespace) -> int:
    from ledger.app.config import projections_url, redact
    from projections.rebuild import rebuild
    from projections.store import ProjectionStore

    # `projections rebuild` is the group's one command.
    store = ProjectionStore(projections_url())
    app = open_app(writer=False)
    total = app.recorder.max_notification_id() or 0

    def progress(count: int) -> None:
        if total >= 20_000:
            print(f"\rcoi: rebuilding: {count:,} of {total:,} records", end="", file=sys.stderr, flush=True)

    done = rebuild(app, store, progress)
    if total >= 20_000:
        print(file=sys.stderr)
    print(f"rebuilt the projections from {done.records:,} records into {redact(projections_url())}")
    for sequence, why in done.set_aside:
        say(f"coi: sequence {sequence} could not be projected and was set aside: {why}", sys.stderr)
    if done.set_aside:
        raise UsageError(
            f"{len(done.set_aside)} records are missing from the projections; the ledger holds them "
            "as stored: see coi history for their patients"
        )
    return EXIT_OK
