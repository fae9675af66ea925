"""`coi up`, `coi run NAME`, `coi broker`: the Kafka services, together or one at a time."""

from __future__ import annotations

import argparse

from consumers import SERVICES
from ledger.cli.common import TYPE_CHECKING, UsageError
from ledger.cli.witness import add_run_arguments

if TYPE_CHECKING:
    from ledger.cli.common import Subparsers


def add_parser(subparsers: Subparsers) -> None:
    s = subparsers.add_parser("up", help="broker (if none configured), ingest, relay, projector")
    s.add_argument(
        "--ingests", type=int, default=2, help="ingest processes in the consumer group (default 2)"
    )
    s = subparsers.add_parser("run", help="run one service in the foreground (production)")
    s.add_argument("service", choices=(*SERVICES, "witness"))
    add_run_arguments(s)
    s = subparsers.add_parser("broker", help="run the local Tansu broker in the foreground")
    s.add_argument("--port", type=int, default=9092)


def run(args: argparse.Namespace) -> int:
    if args.command == "run" and args.service == "witness":
        from ledger.cli.witness import run_witness  # no Kafka: a witness is HTTP alone

        return run_witness(args)
    if args.command == "run" and (args.key or args.listen or args.state or args.log):
        raise UsageError("--key, --listen, --state and --log are coi run witness's alone")
    from consumers.pipeline import broker_foreground, run_one, up

    if args.command == "up":
        if args.ingests < 1:
            raise UsageError("--ingests must be at least 1")
        return up(args.ingests)
    if args.command == "run":
        return run_one(args.service)
    return broker_foreground(args.port)
