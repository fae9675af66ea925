"""`coi up`, `coi run NAME`, `coi broker`: the Kafka services, together or one at a time."""

from __future__ import annotations

import argparse

from consumers import SERVICES
from ledger.cli.common import TYPE_CHECKING, UsageError, opened
from ledger.cli.witness import add_run_arguments

if TYPE_CHECKING:
    from ledger.cli.common import Subparsers


def add_parser(subparsers: Subparsers) -> None:
    s = subparsers.add_parser("up", help="broker (if none configured), ingest, relay, projector")
    s.add_argument(
        "--ingests", type=int, default=2, help="ingest processes in the consumer group (default 2)"
    )
    s = subparsers.add_parser("run", help="run one service in the foreground (production)")
    s.add_argument("service", choices=(*SERVICES, "monitor", "witness"))
    m = s.add_argument_group(
        "monitor", "keep every checkpoint outside the ledger; exit 1 on a fork or rollback"
    )
    s.add_argument(
        "--state",
        metavar="DIR",
        help="monitor: the append-only directory of kept notes; witness: where it keeps what it cosigned",
    )
    m.add_argument(
        "--trusted-key",
        action="append",
        default=[],
        metavar="FILE",
        help="ledger verifier key file (repeatable)",
    )
    m.add_argument("--poll", action="store_true", help="read the ledger (read-only), not coi.checkpoints")
    m.add_argument(
        "--interval", type=float, default=5.0, metavar="S", help="seconds between polls (default 5)"
    )
    m.add_argument("--once", action="store_true", help="process what is there now, then stop")
    add_run_arguments(s)
    s = subparsers.add_parser("broker", help="run the local Tansu broker in the foreground")
    s.add_argument("--port", type=int, default=9092)


def run(args: argparse.Namespace) -> int:
    if args.command == "run" and args.service == "witness":
        if args.trusted_key or args.poll or args.once:
            raise UsageError("--trusted-key, --poll and --once are options of coi run monitor")
        from ledger.cli.witness import run_witness  # no Kafka: a witness is HTTP alone

        return run_witness(args)
    if args.command == "run" and (args.key or args.listen or args.log):
        raise UsageError("--key, --listen and --log are options of coi run witness")
    from consumers.pipeline import broker_foreground, run_one, up

    if args.command == "up":
        if args.ingests < 1:
            raise UsageError("--ingests must be at least 1")
        return up(args.ingests)
    if args.command == "run":
        if args.service == "monitor":
            return _monitor(args)
        if args.state or args.trusted_key or args.poll or args.once:
            raise UsageError("--state, --trusted-key, --poll and --once are options of coi run monitor")
        return run_one(args.service)
    return broker_foreground(args.port)


def _monitor(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from consumers import monitor
    from consumers.archive import ArchiveError
    from consumers.pipeline import configured_bootstrap
    from ledger.app.config import database_url
    from ledger.audit.roots import choose
    from ledger.audit.trust import TrustStore, read_keys
    from ledger.store.sources import SqlSource, open_source

    if not args.state:
        raise UsageError("coi run monitor needs --state DIR, the directory where it keeps every checkpoint")
    if args.interval <= 0:
        raise UsageError("--interval must be a positive number of seconds")
    bootstrap = None if args.poll else configured_bootstrap()
    if not args.poll and bootstrap is None:
        raise UsageError("set COI_KAFKA_BOOTSTRAP to the Kafka cluster (or start `coi up`), or use --poll")

    def connect() -> SqlSource:  # read-only, as coi verify reads
        return opened(lambda: open_source(database_url()))

    def origin() -> str:
        """The log watched: the ledger's, polling; following the topic, the one the keys name."""
        if args.poll:
            source = connect()
            try:
                return source.origin()
            finally:
                source.close()
        files = args.trusted_key or [p for p in os.environ.get("COI_TRUSTED_KEYS", "").split(":") if p]
        names = sorted({key.name for path in files for key in read_keys(Path(path))})
        if not names:
            raise UsageError(
                "following coi.checkpoints, coi run monitor needs the ledger's verifier key: --trusted-key "
                "FILE or COI_TRUSTED_KEYS (with --poll it also finds the log's keys in your trust store)"
            )
        return names[0]

    roots = choose([Path(p) for p in args.trusted_key], TrustStore(), origin)
    if not roots.keys:
        raise UsageError(
            f"coi run monitor needs the ledger's verifier key: none for the log {roots.origin} "
            f"({roots.described}); get its .vkey from the ledger's operator, then pass --trusted-key FILE, "
            "set COI_TRUSTED_KEYS or coi trust add FILE"
        )
    options = monitor.Options(Path(args.state), roots, args.once, args.interval)
    try:
        return monitor.run(options, bootstrap, connect if args.poll else None)
    except ArchiveError as exc:
        raise UsageError(str(exc)) from None
