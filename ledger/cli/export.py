"""`coi export bundle`, `coi verify-bundle`: offline evidence, written by the ledger and
checked with no database and no network."""

from __future__ import annotations

import argparse
import sys

from ledger.cli.common import EXIT_FAILED, EXIT_OK, TYPE_CHECKING, UsageError, opened, say
from ledger.cli.witness import add_witness_arguments, witnessing_of

if TYPE_CHECKING:
    from ledger.audit.bundle_format import Request
    from ledger.cli.common import Subparsers


def add_parser(subparsers: Subparsers) -> None:
    kinds = subparsers.add_parser("export", help="export evidence (an offline bundle)").add_subparsers(
        dest="export_kind", required=True
    )
    s = kinds.add_parser(
        "bundle", help="records, registry, proofs and checkpoint in one zip, for coi verify-bundle"
    )
    s.add_argument("--out", required=True, help="the zip to write (atomically)")
    pick = s.add_mutually_exclusive_group(required=True)
    pick.add_argument("--coi", help="one patient's whole history")
    pick.add_argument("--batch", help="the history of the patient whose batch this is")
    pick.add_argument("--from-seq", type=int, help="a sequence range, with --to-seq")
    s.add_argument("--to-seq", type=int, help="the last sequence of the range")

    s = subparsers.add_parser("verify-bundle", help="check an offline bundle: no database, no network")
    s.add_argument("bundle", help="the bundle's zip")
    s.add_argument("--trusted-key", action="append", default=[], help="ledger verifier key file (repeatable)")
    s.add_argument(
        "--checkpoints",
        action="append",
        default=[],
        metavar="DIR|FILE",
        help="checkpoint notes kept outside the ledger (e.g. coi run monitor's directory; repeatable)",
    )
    add_witness_arguments(s)


def run(args: argparse.Namespace) -> int:
    return _export(args) if args.command == "export" else _verify_bundle(args)


def _request(args: argparse.Namespace) -> Request:
    from ledger.audit.bundle_format import Request

    if args.from_seq is None:
        if args.to_seq is not None:
            raise UsageError("--to-seq goes with --from-seq")
        return Request(coi=args.coi, batch=args.batch)
    if args.to_seq is None:
        raise UsageError("--from-seq goes with --to-seq: give a sequence range as --from-seq N --to-seq M")
    for name, value in (("--from-seq", args.from_seq), ("--to-seq", args.to_seq)):
        if value < 0:
            raise UsageError(f"{name} {value}: a sequence number is 0 or more")
    if args.to_seq < args.from_seq:
        raise UsageError(
            f"--to-seq {args.to_seq} is before --from-seq {args.from_seq}: give the range with N <= M"
        )
    return Request(from_seq=args.from_seq, to_seq=args.to_seq)


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ledger.app.bundle import BundleExportError, export_bundle
    from ledger.app.config import database_url
    from ledger.store.sources import open_source
    from ledger.wire.files import write_atomic

    request = _request(args)
    source = opened(lambda: open_source(database_url()))  # read-only, as coi verify reads
    try:
        exported = export_bundle(source, request)
    except BundleExportError as exc:
        raise UsageError(str(exc)) from None
    finally:
        source.close()
    try:
        write_atomic(Path(args.out), exported.data)
    except OSError as exc:
        raise UsageError(f"--out {args.out}: cannot write it ({exc.strerror}); choose another file") from None
    manifest = exported.manifest
    print(
        f"wrote {args.out}: {exported.records} records ({len(manifest.selected)} selected) proved "
        f"against the checkpoint at tree size {manifest.tree_size} ({manifest.origin})"
    )
    if manifest.after_checkpoint:
        say(
            f"left out {manifest.after_checkpoint} records of {request.describe()} that came after that "
            "checkpoint (they cannot be proved yet): run coi checkpoint --sign and export again to "
            "include them",
            sys.stderr,
        )
    return EXIT_OK


def _verify_bundle(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ledger.audit.bundle import (
        BundleCheck,
        BundleError,
        cosigned_by,
        held_to_saved,
        read_bundle,
        verify_bundle,
    )
    from ledger.audit.roots import choose
    from ledger.audit.saved import read_saved
    from ledger.audit.trust import TrustStore

    path = Path(args.bundle)
    if not path.is_file():
        raise UsageError(f"no bundle at {path}")
    witnessing = witnessing_of(args)  # a usage error in it before anything is printed
    unreadable: list[BundleError] = []

    def origin() -> str:  # asked after the key files are read: a bad key file is said first
        try:
            return read_bundle(path).manifest.origin
        except BundleError as exc:
            unreadable.append(exc)
            return ""

    roots = choose([Path(p) for p in args.trusted_key], TrustStore(), origin)
    if unreadable:
        say(f"FAILED: {path.name}: {unreadable[0]}")
        return EXIT_FAILED
    print(f"coi verify-bundle: trusted roots: {roots.described}", file=sys.stderr)
    trusted = roots.keys  # none: the checkpoint check says so, once the manifest is found sound
    more: list[BundleCheck] = []
    if args.checkpoints:
        saved = read_saved([Path(p) for p in args.checkpoints], trusted, roots.origin)
        if not saved:
            raise UsageError(
                f"--checkpoints {' '.join(args.checkpoints)}: no checkpoint notes (*.note) there"
            )
        more.append(held_to_saved(saved))
    if witnessing is not None:
        more.append(cosigned_by(witnessing))
    report = verify_bundle(path, trusted, more)
    if report.failure is not None:
        say(f"FAILED: {report.failure}")
        return EXIT_FAILED
    say(f"OK: {path.name}")
    say("Proved:")
    for line in report.proved:
        say(f"  - {line}")
    say("Cannot prove from this bundle:")
    for line in report.cannot:
        say(f"  - {line}")
    return EXIT_OK
