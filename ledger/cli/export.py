"""`coi export bundle`, `coi verify-bundle`: offline evidence, written by the ledger and
checked with no database and no network."""

from __future__ import annotations

import argparse
import sys

from ledger.cli.common import EXIT_FAILED, EXIT_OK, TYPE_CHECKING, UsageError, opened, say
from ledger.cli.witness import add_witness_arguments, witnessing_of

if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

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

    s = kinds.add_parser(
        "genealogy",
        help="a patient's or batch's genealogy for regulators: JSON, CSV, GS1 EPCIS 2.0, FHIR R5, HTML",
    )
    pick = s.add_mutually_exclusive_group(required=True)
    pick.add_argument("--coi", help="the patient (chain of identity)")
    pick.add_argument("--batch", help="a batch id (exit 2 with the patients if it names several)")
    s.add_argument("--format", required=True, choices=GENEALOGY_FORMATS, help="what to write")
    s.add_argument("--out", required=True, help="the file to write (atomically)")
    s.add_argument(
        "--with-bundle",
        action="store_true",
        help="also write FILE.bundle.zip: the records the export was made from, for coi verify-bundle",
    )
    s.add_argument("--trusted-key", action="append", default=[], help="ledger verifier key file (repeatable)")

    s = subparsers.add_parser("verify-bundle", help="check an offline bundle: no database, no network")
    s.add_argument("bundle", help="the bundle's zip")
    s.add_argument(
        "--export",
        metavar="FILE",
        help="the genealogy export the bundle was written with (default: the file its manifest names)",
    )
    s.add_argument("--trusted-key", action="append", default=[], help="ledger verifier key file (repeatable)")
    s.add_argument(
        "--checkpoints",
        action="append",
        default=[],
        metavar="DIR|FILE",
        help="checkpoint notes kept outside the ledger (e.g. coi run monitor's directory; repeatable)",
    )
    add_witness_arguments(s)


# projections/export/formats.py FORMATS, written out: `coi --help` imports no projection.
GENEALOGY_FORMATS = ("json", "csv", "epcis", "fhir", "html")


def run(args: argparse.Namespace) -> int:
    if args.command == "verify-bundle":
        return _verify_bundle(args)
    return _genealogy(args) if args.export_kind == "genealogy" else _export(args)


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


def _genealogy(args: argparse.Namespace) -> int:
    import hashlib
    import os
    from pathlib import Path

    from ledger.app.bundle import bound
    from ledger.app.config import database_url
    from ledger.audit.bundle_format import ExportEntry
    from ledger.audit.roots import choose
    from ledger.audit.trust import TrustStore
    from ledger.cli.common import now
    from ledger.store.sources import open_source
    from ledger.wire.files import write_atomic
    from projections.export.build import build
    from projections.export.evidence import gather
    from projections.export.formats import renderer
    from projections.export.reproduce import made_with
    from projections.export.uris import DEFAULT_BASE, BaseError, Ids, checked_base

    out = Path(args.out)
    if args.out == "-":
        raise UsageError("--out -: an export is written to a file (atomically, with its bundle beside it)")
    if args.format == "csv" and out.suffix.lower() != ".zip":
        raise UsageError(
            f"--out {args.out}: --format csv writes a zip of CSV tables (one per table): name it .zip"
        )
    if not out.parent.is_dir():
        raise UsageError(f"--out {args.out}: there is no folder {out.parent} to write it in")
    if out.is_dir():
        raise UsageError(f"--out {args.out}: is a folder; name the file to write")
    configured = os.environ.get("COI_ID_BASE")
    try:
        base = checked_base(configured or DEFAULT_BASE)
    except BaseError as exc:
        raise UsageError(f"COI_ID_BASE: {exc}") from None
    if args.coi:
        coi, asked = args.coi, f"COI {args.coi}"
    else:
        coi, asked = _batch_patient(args.batch), f"batch {args.batch}"

    def trust(origin: str) -> list[Any]:
        roots = choose([Path(p) for p in args.trusted_key], TrustStore(), lambda: origin)
        print(f"coi export genealogy: trusted roots: {roots.described}", file=sys.stderr)
        return roots.keys

    source = opened(lambda: open_source(database_url()))  # read-only, as coi verify reads
    try:
        evidence = gather(source, coi, trust)
    finally:
        source.close()
    checked = evidence.verification
    if checked.status == "failed":
        say(f"FAILED: {checked.failure}")
        say(f"nothing written: the records of {asked} do not verify (run coi verify for the whole ledger)")
        return EXIT_FAILED
    genealogy = build(evidence.sources, coi, Ids(base, coi), checked, asked, now())
    data = renderer(args.format)(genealogy)
    written = [out]
    try:
        write_atomic(out, data)
        if args.with_bundle:  # bound to the export just written, by its name beside it and digest
            digest = hashlib.sha256(data).hexdigest()
            export = ExportEntry(out.name, args.format, digest, len(data), made_with(genealogy))
            written.append(Path(f"{args.out}.bundle.zip"))
            write_atomic(written[-1], bound(evidence.bundle, export).data)
    except OSError as exc:
        for path in written[:-1]:
            path.unlink(missing_ok=True)  # the pair or nothing
        raise UsageError(
            f"--out {args.out}: cannot write {written[-1]} ({exc.strerror}); choose another file"
        ) from None
    if checked.status == "verified":
        rests = f"proved in the checkpoint at tree size {checked.tree_size} of {checked.origin}"
    else:
        rests = (
            f"NOT VERIFIED: no key is trusted for the log {checked.origin}; get its verifier key (.vkey) "
            "from the ledger's operator, then coi trust add FILE (or pass --trusted-key FILE)"
        )
    say(f"wrote {out} ({args.format}): {asked}, {len(genealogy.records)} records, {rests}")
    if args.with_bundle:
        say(f"wrote {written[-1]}: check it with coi verify-bundle {written[-1]}")
    say(f"  {genealogy.outcome.summary}")
    for alarm in genealogy.outcome.alarms:
        say(f"  !! {alarm}")
    for note in genealogy.outcome.notes:
        say(f"  -  {note}")
    if not configured:
        say(
            f"coi: COI_ID_BASE is not set: identifiers are URIs under {DEFAULT_BASE}, which resolves nowhere;"
            " set it to a base your organisation controls (README: Exporting)",
            sys.stderr,
        )
    return EXIT_OK


def _batch_patient(batch: str) -> str:
    """The patient whose batch `batch` is, from the identifier index."""
    from ledger.cli.reading import open_audit

    cois = open_audit().cois(batch, "batch")
    if not cois:
        raise UsageError(
            f"--batch {batch}: no batch of that id in this ledger (coi find {batch} says what names it)"
        )
    if len(cois) > 1:
        raise UsageError(
            f"--batch {batch}: a batch id is unique only within one patient, and this one is known under "
            f"{len(cois)}: {', '.join(cois)}; choose one with --coi"
        )
    return cois[0]


def _a_csv_export(path: Path) -> bool:
    """A zip holding the CSV export's index and no bundle manifest: given instead of its bundle."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False
    return "cells.csv" in names and "manifest.json" not in names


def _verify_bundle(args: argparse.Namespace) -> int:
    import zipfile
    from pathlib import Path

    from ledger.audit.bundle import (
        BundleCheck,
        BundleError,
        cosigned_by,
        held_to_saved,
        read_bundle,
        verify_bundle,
    )
    from ledger.audit.exported import bound_export
    from ledger.audit.roots import choose
    from ledger.audit.saved import read_saved
    from ledger.audit.trust import TrustStore
    from projections.export.reproduce import remaker

    path = Path(args.bundle)
    if not path.is_file():
        raise UsageError(f"no bundle at {path}")
    if _a_csv_export(path):
        raise UsageError(
            f"{path} is a CSV export, not its bundle: pass the FILE.bundle.zip written beside it "
            "(coi export genealogy --with-bundle)"
        )
    if not zipfile.is_zipfile(path) and path.suffix.lower() != ".zip":
        raise UsageError(
            f"{path} is not a bundle (a zip): pass the FILE.bundle.zip written beside an export, and the "
            "export itself with --export FILE if it is not beside it"
        )
    export = Path(args.export) if args.export else None
    if export is not None and not export.is_file():
        raise UsageError(f"--export {args.export}: there is no such file")
    witnessing = witnessing_of(args)  # a usage error in it before anything is printed
    unreadable: list[BundleError] = []

    def origin() -> str:  # asked after the key files are read: a bad key file is said first
        try:
            manifest = read_bundle(path).manifest
        except BundleError as exc:
            unreadable.append(exc)
            return ""
        if export is not None and manifest.export is None:
            raise UsageError(
                f"--export {args.export}: {path.name} names no export (it was not written by coi export "
                "genealogy --with-bundle): nothing binds the two"
            )
        return manifest.origin

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
    more.append(bound_export(path.parent, export, remaker(trusted)))
    report = verify_bundle(path, trusted, more)
    if report.failure is not None:
        say(f"FAILED: {report.failure}")
        return EXIT_FAILED
    say(f"OK: {path.name}" + "".join(f"; but {line}" for line in report.headline))
    say("Proved:")
    for line in report.proved:
        say(f"  - {line}")
    say("Cannot prove from this bundle:")
    for line in report.cannot:
        say(f"  - {line}")
    return EXIT_OK
