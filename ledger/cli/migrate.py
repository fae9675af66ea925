"""`coi migrate`: apply the pending migrations of the ledger's tables and of the projection
tables, and say what was applied (or "up to date"). Every writer does the same on start;
readers never do, and point here when a store is older than they read."""

from __future__ import annotations

import argparse
import sys

from ledger.cli.common import TYPE_CHECKING

if TYPE_CHECKING:
    from ledger.cli.common import Subparsers


def add_parser(subparsers: Subparsers) -> None:
    subparsers.add_parser("migrate", help="bring the ledger's and the projections' tables up to date")


def run(args: argparse.Namespace) -> int:
    # Imported here: `coi --help` need not load the event store.
    from ledger.app.application import LedgerApplication
    from ledger.app.config import database_url, projections_url, redact
    from projections.store import ProjectionStore

    ledger = LedgerApplication()
    applied = {redact(database_url()): ledger.migrations}
    ledger.close()
    projections = ProjectionStore(projections_url())
    applied[f"projections at {redact(projections_url())}"] = projections.migrations
    projections.close()
    for where, names in applied.items():
        said = ", ".join(f"applied {name}" for name in names) if names else "up to date"
        print(f"{where}: {said}", file=sys.stdout)
    return 0
