"""`coi schema`: the JSON Schema of the event body, for site systems in any language; with
`--genealogy`, of the genealogy export (`coi export genealogy --format json`)."""

from __future__ import annotations

import argparse
import sys

from ledger.cli.common import EXIT_OK, TYPE_CHECKING

if TYPE_CHECKING:
    from ledger.cli.common import Subparsers


def add_parser(subparsers: Subparsers) -> None:
    s = subparsers.add_parser("schema", help="print the JSON Schema of an event body ($id and wire format)")
    s.add_argument(
        "--genealogy",
        action="store_true",
        help="the schema of coi export genealogy --format json instead",
    )


def run(args: argparse.Namespace) -> int:
    # msgspec and the wire Structs only: `coi schema` is run by site systems' build scripts.
    import msgspec

    if args.genealogy:
        from projections.export.document import json_schema
    else:
        from ledger.wire.events import json_schema

    sys.stdout.write(msgspec.json.format(msgspec.json.encode(json_schema())).decode() + "\n")
    return EXIT_OK
