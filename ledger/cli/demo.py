"""`coi demo`: realistic journeys across the four sites, straight into the ledger or through Kafka."""

from __future__ import annotations

import argparse
import os
import sys

from ledger.cli.common import TYPE_CHECKING, UsageError, open_app, settle_stored

if TYPE_CHECKING:
    from ledger.cli.common import Subparsers


def add_parser(subparsers: Subparsers) -> None:
    s = subparsers.add_parser("demo", help="run realistic journeys across the four sites")
    s.add_argument("--patients", type=int, default=8)


def run(args: argparse.Namespace) -> int:
    import shutil

    from consumers.pipeline import configured_bootstrap
    from ledger.app.config import data_dir
    from ledger.cli.publish import site_publisher, through
    from ledger.demo.run import run_demo

    if args.patients < 1:
        raise UsageError("--patients must be at least 1")
    # Say the commands the way this user can type them: `coi` only when it is on PATH.
    prog = "coi" if shutil.which("coi") else os.path.relpath(sys.argv[0])
    app = open_app()
    if not app.recorder.max_notification_id():  # a new ledger: a new log, with its own key
        from ledger.app import ledgerkey
        from ledger.store.logstore import LogStore

        made = ledgerkey.create(LogStore(app.recorder))
        print(
            f"coi demo: a new log {made.name}, key {made.verifier.key_id.hex()} (in your trust store)",
            file=sys.stderr,
        )
    bootstrap = configured_bootstrap()
    if bootstrap is None:
        code = run_demo(app, args.patients, data_dir() / "demo-keys", sys.stdout, prog)
        settle_stored(app)
        return code
    print(f"coi demo: sending the journeys through Kafka at {bootstrap}", file=sys.stderr)
    publisher = site_publisher(bootstrap)
    try:
        return run_demo(
            app,
            args.patients,
            data_dir() / "demo-keys",
            sys.stdout,
            prog,
            lambda raws: through(publisher, raws, 120),
        )
    finally:
        publisher.close()
