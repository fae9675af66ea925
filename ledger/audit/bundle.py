"""`coi verify-bundle`: check an offline bundle (ledger/audit/bundle_format.py) with no
database and no network: msgspec, cryptography and the standard library only.

The checks run in order, each on what the ones before established, and stop at the first
failure, which names the bundle's file and the reason:
1. every file against the manifest (a changed, missing or added byte fails);
2. the checkpoint note's signature by a trusted ledger key, and its origin and size against
   the manifest;
3. each record's inclusion proof against the checkpoint's root;
4. the records walked in log order by the ledger's own verifier (verification.py): every
   signature against the key state replayed from the registry records before it, each
   policy boundary, and each aggregate's chain from its first record;
5. what the manifest says was selected is in the bundle.
More checks are further `BundleCheck`s given to `verify_bundle`, each adding what it proved
or failing with a file: `held_to_saved` (checkpoints kept outside the ledger), `cosigned_by`
(a quorum of witnesses); the rules replayed plug in the same way.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import IO, Any

import msgspec

from aggregates.therapy import therapy_uuid
from ledger.audit.bundle_format import (
    CHECKPOINT,
    FORMAT,
    MANIFEST,
    PROOFS,
    RECORDS,
    Inclusion,
    Manifest,
    Proofs,
    record_name,
)
from ledger.audit.saved import SavedNote, fork, of_log, signed_by
from ledger.audit.source import Chunk, StoredCheckpoint
from ledger.audit.verification import LedgerVerifier
from ledger.audit.witnessing import Witnessing, quorum_problem
from ledger.transparency import checkpoint as notes
from ledger.transparency import merkle
from ledger.transparency.cosignature import cosignatures
from ledger.transparency.records import Record, canonical, header_of


@dataclass(frozen=True)
class BundleFailure:
    file: str  # the bundle's file that shows it (or the bundle itself)
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


@dataclass
class BundleReport:
    proved: list[str] = field(default_factory=list)
    cannot: list[str] = field(default_factory=list)
    failure: BundleFailure | None = None
    replayed: bool = False  # the domain rules were replayed over the records
    headline: list[str] = field(default_factory=list)  # what the first line must say beside OK


@dataclass
class Bundle:
    """A bundle as the checks learn it: its files, then what each check established."""

    name: str
    files: dict[str, bytes]
    manifest: Manifest
    checkpoint: notes.Checkpoint | None = None  # once its signature is checked
    records: list[tuple[Inclusion, Record]] = field(default_factory=list)  # in log order, once proved
    witnessed: bool = False  # once the checkpoint's cosignatures are checked


BundleCheck = Callable[[Bundle, BundleReport], BundleFailure | None]


class BundleError(Exception):
    """The file is not a bundle at all (not a zip, no readable manifest)."""


def verify_bundle(
    path: Path | Bundle, trusted: list[notes.NoteVerifier], more: Sequence[BundleCheck] = ()
) -> BundleReport:
    """Every check, then `more`; the report says what was proved, what cannot be, or the failure.
    `path`: the bundle's file, or a bundle already read (one just made, in memory)."""
    report = BundleReport()
    if isinstance(path, Bundle):
        bundle = path
    else:
        try:
            bundle = read_bundle(path)
        except BundleError as exc:
            report.failure = BundleFailure(path.name, str(exc))
            return report
    checks: list[BundleCheck] = [
        check_files,
        lambda b, r: check_checkpoint(b, r, trusted),
        check_inclusion,
        check_records,
        check_selection,
        *more,
    ]
    for check in checks:
        report.failure = check(bundle, report)
        if report.failure is not None:
            return report
    _cannot_prove(bundle, report)
    return report


def read_bundle(path: Path) -> Bundle:
    return bundle_of(path.name, path)


def bundle_of(name: str, data: Path | IO[bytes]) -> Bundle:
    """The bundle in `data` (a file, or bytes in memory) called `name` in what is said of it."""
    try:
        with zipfile.ZipFile(data) as z:
            names = [i.filename for i in z.infolist() if not i.is_dir()]  # a re-zip may add folders
            duplicated = sorted({n for n in names if names.count(n) > 1})
            if duplicated:
                raise BundleError(f"the zip holds {duplicated[0]} more than once")
            files = {n: z.read(n) for n in names}
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"not a readable zip ({exc})") from None
    if MANIFEST not in files:
        raise BundleError(f"no {MANIFEST}: not a coi bundle")
    try:
        manifest = msgspec.json.decode(files[MANIFEST], type=Manifest)
    except msgspec.DecodeError as exc:
        raise BundleError(f"{MANIFEST} cannot be read ({exc})") from None
    if manifest.format != FORMAT:
        raise BundleError(f"{MANIFEST}: format {manifest.format!r} is not {FORMAT!r}")
    return Bundle(name, files, manifest)


# ------------------------------------------------------------------ the checks


def check_files(bundle: Bundle, report: BundleReport) -> BundleFailure | None:
    """Each listed file is there with its size and SHA-256; nothing else is there."""
    listed = {entry.path for entry in bundle.manifest.files}
    for entry in bundle.manifest.files:
        data = bundle.files.get(entry.path)
        if data is None:
            return BundleFailure(entry.path, "missing: the manifest lists it but the bundle does not hold it")
        if len(data) != entry.size:
            return BundleFailure(entry.path, f"changed: {len(data)} bytes, the manifest says {entry.size}")
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            return BundleFailure(entry.path, "changed: its SHA-256 differs from the manifest's")
    added = sorted(bundle.files.keys() - listed - {MANIFEST})
    if added:
        return BundleFailure(added[0], "added: the manifest does not list it")
    for needed in (CHECKPOINT, PROOFS):
        if needed not in listed:
            return BundleFailure(MANIFEST, f"does not list {needed}")
    report.proved.append(f"every file of the bundle is the one its manifest lists ({len(listed)} files)")
    return None


def check_checkpoint(
    bundle: Bundle, report: BundleReport, trusted: list[notes.NoteVerifier]
) -> BundleFailure | None:
    """The manifest agrees with the note (else the manifest was changed, whoever signed the
    note), then the note is signed by a trusted key."""
    try:
        note = bundle.files[CHECKPOINT].decode()
        checkpoint = notes.parse(note)[0]
    except (notes.NoteError, UnicodeDecodeError) as exc:
        return BundleFailure(CHECKPOINT, f"not a checkpoint note ({exc})")
    manifest = bundle.manifest
    if (checkpoint.origin, checkpoint.size) != (manifest.origin, manifest.tree_size):
        return BundleFailure(
            MANIFEST,
            f"says origin {manifest.origin!r} at tree size {manifest.tree_size}; {CHECKPOINT} says "
            f"{checkpoint.origin!r} at {checkpoint.size}: the manifest was changed",
        )
    rotated = (
        f"{signed_by(note)}. If the ledger's key was rotated, get its new verifier key (.vkey) from its "
        "operator, then coi trust add FILE or pass --trusted-key FILE"
    )
    if not trusted:
        return BundleFailure(CHECKPOINT, f"no trusted key for the log {checkpoint.origin}{rotated}")
    try:
        _, signers = notes.verify(note, trusted)
    except notes.NoteError as exc:
        return BundleFailure(CHECKPOINT, f"{exc}{rotated}")
    bundle.checkpoint = checkpoint
    report.proved.append(
        f"the checkpoint at tree size {checkpoint.size} of log {checkpoint.origin} is signed by "
        f"{', '.join(signers)} (a trusted key)"
    )
    return None


def check_inclusion(bundle: Bundle, report: BundleReport) -> BundleFailure | None:
    """Each record file is a leaf of the checkpoint's tree, at the index its proof gives;
    the records then follow in log order (leaf order), which the proofs fix."""
    assert bundle.checkpoint is not None
    try:
        proofs = msgspec.json.decode(bundle.files[PROOFS], type=Proofs)
    except msgspec.DecodeError as exc:
        return BundleFailure(PROOFS, f"cannot be read ({exc})")
    size, root = bundle.checkpoint.size, bundle.checkpoint.root
    if proofs.tree_size != size:
        return BundleFailure(
            PROOFS, f"proves against tree size {proofs.tree_size}, the checkpoint's is {size}"
        )
    by_name = {record_name(p.sequence): p for p in proofs.proofs}
    if len(by_name) != len(proofs.proofs):
        return BundleFailure(PROOFS, "proves one sequence more than once")
    record_files = {n for n in bundle.files if n.startswith(RECORDS)}
    unproved, absent = sorted(record_files - by_name.keys()), sorted(by_name.keys() - record_files)
    if unproved:
        return BundleFailure(unproved[0], f"has no inclusion proof in {PROOFS}")
    if absent:
        return BundleFailure(PROOFS, f"proves {absent[0]}, which the bundle does not hold")
    records = []
    for name, proof in by_name.items():
        data = bundle.files[name]
        try:
            record = msgspec.json.decode(data, type=Record)
            path = [base64.b64decode(h, validate=True) for h in proof.path]
        except (msgspec.DecodeError, binascii.Error) as exc:
            return BundleFailure(name, f"cannot be read as a record with its proof ({exc})")
        if canonical(record) != data:
            return BundleFailure(name, "is not a record's canonical bytes")
        if not merkle.verify_inclusion(proof.leaf_index, size, merkle.leaf_hash(data), path, root):
            return BundleFailure(
                name, f"not in the log: its inclusion proof (leaf {proof.leaf_index}) does not reach the root"
            )
        records.append((proof, record))
    records.sort(key=lambda pr: pr[0].leaf_index)
    for (before, _), (after, _) in pairwise(records):
        if after.sequence <= before.sequence or after.leaf_index == before.leaf_index:
            return BundleFailure(
                record_name(after.sequence),
                f"leaf {after.leaf_index} follows leaf {before.leaf_index} (sequence {before.sequence}): "
                "the log's leaves are in sequence order",
            )
    bundle.records = records
    report.proved.append(
        f"these {len(records)} records are in the log the ledger signed at tree size {size} "
        f"(origin {bundle.checkpoint.origin})"
    )
    return None


def check_records(bundle: Bundle, report: BundleReport) -> BundleFailure | None:
    """The ledger's verifier over the bundle's records: signatures by the key state of their
    time, policy boundaries, and every aggregate's chain from its first record."""
    result = LedgerVerifier(_BundleSource(bundle.records), trusted=[], records=len(bundle.records)).run()
    if result.failure is not None:
        sequence = result.failure.sequence
        return BundleFailure(
            record_name(sequence) if sequence is not None else bundle.name, result.failure.reason
        )
    report.proved.append(
        "each signature was valid at its time, by a key the registry held (key state replayed from "
        "the registry records in the bundle)"
    )
    report.replayed = result.replayed
    if result.replayed:
        report.proved.append(
            "the domain rules hold over these records: each patient's journey replayed under the "
            "policy in force at each record's place, as the ledger judged it"
        )
    for coi, (version, sequence) in sorted(_patients(bundle).items()):
        report.proved.append(
            f"the chain of COI {coi} is unbroken from its first record to version {version} "
            f"(sequence {sequence})"
        )
    return None


def check_selection(bundle: Bundle, report: BundleReport) -> BundleFailure | None:
    """What the manifest says the bundle holds, it holds."""
    manifest = bundle.manifest
    held = {proof.sequence for proof, _ in bundle.records}
    missing = sorted(set(manifest.selected) - held)
    if missing:
        return BundleFailure(
            MANIFEST, f"lists sequence {missing[0]} as selected; the bundle has no such record"
        )
    patients = _patients(bundle)
    for coi in manifest.cois:
        if coi not in patients:
            return BundleFailure(MANIFEST, f"names COI {coi}; the bundle holds no record of it")
    if manifest.request.coi is not None and manifest.request.coi not in manifest.cois:
        return BundleFailure(MANIFEST, f"was asked for COI {manifest.request.coi} but does not name it")
    report.proved.append(
        f"it holds the {len(manifest.selected)} records selected by {manifest.request.describe()}"
    )
    return None


def held_to_saved(saved: list[SavedNote]) -> BundleCheck:
    """The bundle's checkpoint against notes saved outside the ledger (`coi run monitor`'s
    archive): one of its log at the same tree size must have the same root, or the ledger
    signed two trees of that size (a fork). A bundle carries no consistency proof to other
    sizes, so those are said to be unchecked."""

    def check(bundle: Bundle, report: BundleReport) -> BundleFailure | None:
        assert bundle.checkpoint is not None
        size, origin = bundle.checkpoint.size, bundle.checkpoint.origin
        mine = of_log(saved, origin)
        if not mine:
            return BundleFailure(
                CHECKPOINT, f"none of the checkpoints saved outside the ledger is of its log {origin}"
            )
        forked = fork(mine)  # the saved notes alone may show it
        if forked is not None:
            return BundleFailure(CHECKPOINT, f"the notes saved outside the ledger: {forked.reason}")
        same = [note for note in mine if note.checkpoint.size == size]
        for note in same:
            if note.checkpoint.root != bundle.checkpoint.root:
                return BundleFailure(
                    CHECKPOINT,
                    f"its root at tree size {size} differs from the checkpoint saved outside the ledger "
                    f"({note.where}): the log was forked",
                )
        if same:
            report.proved.append(f"the checkpoint is the one saved outside the ledger ({same[0].where})")
        else:
            report.cannot.append(
                f"that the checkpoint agrees with the {len(mine)} saved outside the ledger: none is of tree "
                f"size {size}, and a bundle carries no consistency proof to other sizes"
            )
        return None

    return check


def cosigned_by(witnessing: Witnessing) -> BundleCheck:
    """The bundle's checkpoint cosigned by `quorum` distinct witnesses of `keys`."""

    def check(bundle: Bundle, report: BundleReport) -> BundleFailure | None:
        assert bundle.checkpoint is not None
        try:
            found = cosignatures(bundle.files[CHECKPOINT].decode(), witnessing.keys)
        except notes.NoteError as exc:
            return BundleFailure(CHECKPOINT, str(exc))
        problem = quorum_problem(
            bundle.checkpoint.size, [bundle.files[CHECKPOINT].decode()], witnessing, "the bundle's checkpoint"
        )
        if problem is not None:
            return BundleFailure(CHECKPOINT, problem)
        bundle.witnessed = bool(found)
        if found:
            report.proved.append(
                "the checkpoint was seen by witnesses other than the ledger: cosigned by "
                + ", ".join(
                    f"{c.name} at {datetime.fromtimestamp(c.timestamp, UTC):%Y-%m-%d %H:%M:%S} UTC"
                    for c in found
                )
            )
        return None

    return check


def _cannot_prove(bundle: Bundle, report: BundleReport) -> None:
    size = bundle.manifest.tree_size
    report.cannot.append("anything about records of other patients, or any claim across patients")
    report.cannot.append(
        "that a patient's history has no records beyond the last one here: a bundle shows what is in "
        "the log, not what is absent from it"
    )
    report.cannot.append(
        "that the bundle holds every registry record under the checkpoint: a key rotation or revocation "
        "left out at the end of a principal's history would not show here (coi verify on the ledger sees it)"
    )
    if not report.replayed:
        report.cannot.append("that the domain rules accepted each record: they were not replayed")
    if not bundle.witnessed:
        report.cannot.append(
            "that anyone but the ledger saw the checkpoint: no witness cosignature is checked"
        )
    report.cannot.append(f"anything after the checkpoint at tree size {size}")
    if bundle.manifest.after_checkpoint:
        report.cannot.append(
            f"the {bundle.manifest.after_checkpoint} records of this selection the ledger held after the "
            "checkpoint: they were left out (export again after the next checkpoint)"
        )


def _patients(bundle: Bundle) -> dict[str, tuple[int, int]]:
    """COI -> (last version, its sequence) of each patient's history the bundle holds."""
    found: dict[str, tuple[int, int]] = {}
    for proof, record in bundle.records:  # in log order: a history's later versions come later
        coi = header_of(record.envelope).coi
        if coi is not None and str(therapy_uuid(coi)) == record.stream:
            found[coi] = (record.version, proof.sequence)
    return found


class _BundleSource:
    """The bundle's records as a record source (ledger/audit/source.py): no leaves and no
    checkpoints of their own, so the verifier checks signatures, policy and chains only (the
    inclusion proofs put them in the log)."""

    def __init__(self, records: list[tuple[Inclusion, Record]]) -> None:
        self.rows = [(proof.sequence, record) for proof, record in records]

    def checkpoints(self) -> list[StoredCheckpoint]:
        return []

    def chunk(self, after: int, start: int, limit: int) -> Chunk:
        rows = [row for row in self.rows if row[0] > after][:limit]
        return Chunk(rows, {}, [])

    @staticmethod
    def sequence(row: Any) -> int:
        return int(row[0])

    @staticmethod
    def record(row: Any) -> Record:
        record: Record = row[1]
        return record

    def size(self) -> int:
        return 0

    def leaf_sequence(self, leaf_index: int) -> int | None:
        return None
