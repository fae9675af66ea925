"""`coi export bundle`: the records of a patient, a batch or a sequence range, with all a
verifier needs to check them offline (ledger/audit/bundle_format.py, ledger/audit/bundle.py).

Everything is read in one read-only transaction (nothing written, no event store), against
the latest signed checkpoint:
- the selected records, and for each patient history (aggregate) they touch every record
  from its first, so its chain can be shown unbroken;
- every registry and policy record under the checkpoint (key state and policy are replayed
  from them in log order);
- an inclusion proof for each record against that checkpoint.
Selected records after the checkpoint cannot be proved yet: they are left out and counted
in the manifest (the caller says so).
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import msgspec

from aggregates.therapy import therapy_uuid
from ledger.audit.bundle_format import (
    CHECKPOINT,
    FORMAT,
    MANIFEST,
    PROOFS,
    ExportEntry,
    FileEntry,
    Inclusion,
    Manifest,
    Proofs,
    Request,
    record_name,
)
from ledger.store.snapshot import REGISTRY_RECORDS, THERAPY_TOPICS, Snapshot, snapshot
from ledger.store.sources import Row, SqlSource
from ledger.transparency import merkle
from ledger.transparency.records import canonical, payload_of, row_record
from ledger.wire.files import fixed_zip


class BundleExportError(Exception):
    """Nothing to export as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Exported:
    data: bytes
    manifest: Manifest
    records: int
    files: dict[str, bytes]  # every file but the manifest: to make it again, bound to an export


def bound(exported: Exported, export: ExportEntry) -> Exported:
    """The same bundle with its manifest naming `export`, the file written with it (from the
    records already read: the export was rendered from them, the ledger may have moved on)."""
    manifest = msgspec.structs.replace(exported.manifest, export=export)
    return Exported(_packed(exported.files, manifest), manifest, exported.records, exported.files)


class _BatchMention(msgspec.Struct):
    """What the batch search reads of a journey body."""

    coi: str | None = None
    batch_id: str | None = None


_mention = msgspec.json.Decoder(_BatchMention)


def export_bundle(source: SqlSource, request: Request) -> Exported:
    """The bundle of `request` from the ledger `source` reads."""
    with snapshot(source) as log:
        checkpoint = log.latest_checkpoint()
        if checkpoint is None:
            raise BundleExportError("the ledger has no signed checkpoint yet: run coi checkpoint --sign")
        cosigned = log.cosigned(checkpoint.size)
        last = log.leaf_sequence(checkpoint.size - 1)
        assert last is not None  # a checkpoint's leaves are in the log
        selected, cois = _select(log, request)
        proved = [row for row in selected if row[0] <= last]
        if not proved:
            raise BundleExportError(
                f"every record of {request.describe()} came after the latest checkpoint (tree size "
                f"{checkpoint.size}): run coi checkpoint --sign, then export again"
            )
        rows = {row[0]: row for row in _context(log, proved)}
        rows.update((row[0], row) for row in log.records(REGISTRY_RECORDS, ()))
        rows = {s: row for s, row in rows.items() if s <= last}
        leaves = log.leaf_indexes(sorted(rows))
        files: dict[str, bytes] = {}
        proofs = []
        for sequence in sorted(rows):
            files[record_name(sequence)] = canonical(row_record(rows[sequence]))
            index = leaves[sequence]
            path = merkle.inclusion_proof(index, checkpoint.size, log.nodes)
            proofs.append(Inclusion(sequence, index, [base64.b64encode(h).decode() for h in path]))
    files[PROOFS] = msgspec.json.encode(Proofs(checkpoint.size, proofs))
    # The same checkpoint with the witnesses' cosignatures, when they gave them.
    files[CHECKPOINT] = (cosigned or checkpoint.note).encode()
    origin = checkpoint.note.split("\n", 1)[0]
    manifest = Manifest(
        format=FORMAT,
        origin=origin,
        tree_size=checkpoint.size,
        request=request,
        cois=cois or _cois_of(proved),
        selected=[row[0] for row in proved],
        after_checkpoint=len(selected) - len(proved),
        files=[FileEntry(n, hashlib.sha256(d).hexdigest(), len(d)) for n, d in sorted(files.items())],
    )
    return Exported(_packed(files, manifest), manifest, len(rows), files)


def _select(log: Snapshot, request: Request) -> tuple[list[Row], list[str]]:
    """The selected records (to the log's end) and the COIs asked for."""
    if request.coi is not None:
        rows = _stream(log, therapy_uuid(request.coi))
        if not rows:
            raise BundleExportError(f"COI {request.coi} has no records in this ledger")
        return rows, [request.coi]
    if request.batch is not None:
        cois = _batch_cois(log, request.batch)
        if not cois:
            raise BundleExportError(f"no record names batch {request.batch}")
        if len(cois) > 1:
            raise BundleExportError(
                f"batch {request.batch} is in {len(cois)} patients' histories (a batch id is unique only "
                f"within one COI): choose one with --coi: {', '.join(cois)}"
            )
        return _stream(log, therapy_uuid(cois[0])), cois
    assert request.from_seq is not None and request.to_seq is not None
    rows = log.records("sequence >= ? AND sequence <= ?", (request.from_seq, request.to_seq))
    if not rows:
        raise BundleExportError(
            f"the ledger holds no record from sequence {request.from_seq} to {request.to_seq}"
        )
    return rows, []


def _stream(log: Snapshot, stream: UUID) -> list[Row]:
    return log.records("originator_id = ?", (log.stream_id(stream),))


def _context(log: Snapshot, selected: list[Row]) -> list[Row]:
    """The selected records and, for each aggregate among them, its records before them."""
    upto: dict[Any, int] = {}
    for sequence, stream, _, _ in selected:
        upto[stream] = max(upto.get(stream, 0), sequence)
    rows = list(selected)
    for stream, last in upto.items():
        rows.extend(r for r in log.records("originator_id = ?", (stream,)) if r[0] <= last)
    return rows


def _batch_cois(log: Snapshot, batch: str) -> list[str]:
    """The COIs whose journeys name `batch`: a batch id is unique only within one COI.

    Bodies are base64 in the stored rows, so the database cannot search them for the id; it
    searches them for text that any base64 of a body holding `"BATCH"` contains (a few
    candidates instead of every record), which are then decoded and checked."""
    fragments = _base64_fragments(msgspec.json.encode(batch))
    # PostgreSQL's state is bytea; SQLite's a blob, which GLOB (case-sensitive, and faster
    # than instr) reads as text. A fragment is letters and digits: nothing GLOB interprets.
    holds = "position(? in state) > 0" if log.postgres else "CAST(state AS TEXT) GLOB ?"
    condition = f"{_topics(THERAPY_TOPICS)} AND ({' OR '.join([holds] * len(fragments))})"
    patterns = [f.encode() if log.postgres else f"*{f}*" for f in fragments]
    found = set()
    for row in log.records(condition, [*THERAPY_TOPICS, *patterns]):
        mention = _mention.decode(payload_of(row_record(row).envelope))
        if mention.batch_id == batch and mention.coi is not None:
            found.add(mention.coi)
    return sorted(found)


def _base64_fragments(needle: bytes) -> list[str]:
    """For each of the three offsets `needle` can have in a base64-encoded text, the longest
    run of characters that encode its bytes alone and that both base64 alphabets (standard,
    URL-safe) write alike, and no JSON encoder escapes: at least one is in any such text."""
    fragments = []
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + needle).decode()
        first, end = -(-8 * offset // 6), 8 * (offset + len(needle)) // 6  # whole 6-bit groups
        fragments.append(max(re.split("[+/]", encoded[first:end]), key=len))
    return fragments


def _cois_of(rows: list[Row]) -> list[str]:
    found = set()
    for row in rows:
        record = row_record(row)
        coi = _mention.decode(payload_of(record.envelope)).coi
        if coi is not None and str(therapy_uuid(coi)) == record.stream:
            found.add(coi)
    return sorted(found)


def _topics(topics: tuple[str, ...]) -> str:
    return f"topic IN ({', '.join('?' * len(topics))})"


def _packed(files: dict[str, bytes], manifest: Manifest) -> bytes:
    """The zip, the same bytes for the same records: the manifest first, then the files by name."""
    return fixed_zip([(MANIFEST, msgspec.json.format(msgspec.json.encode(manifest))), *sorted(files.items())])
