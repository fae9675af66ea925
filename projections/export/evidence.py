"""The records an export is made from, and what was proved of them before it is written.

An export is made from exactly the records of the patient's offline bundle (`coi export
bundle`): the patient's history up to the latest signed checkpoint, and the registry records.
The bundle is verified as `coi verify-bundle` would (checkpoint signature by a trusted key,
inclusion of every record, signatures by the key state of their time, the domain rules), so
every format can say what it rests on; `--with-bundle` writes that same bundle beside it.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from ledger.app.bundle import BundleExportError, Exported, export_bundle
from ledger.audit.bundle import Bundle, bundle_of, verify_bundle
from ledger.audit.bundle_format import CHECKPOINT, PROOFS, RECORDS, Proofs, Request
from ledger.audit.saved import ledger_key_ids
from ledger.store.sources import SqlSource
from ledger.transparency import checkpoint as notes
from ledger.transparency.records import Record
from projections.export.build import ExportError, Source
from projections.export.document import Verification


@dataclass(frozen=True)
class Evidence:
    bundle: Exported  # the zip `coi verify-bundle` reads, to be bound to the export (ledger.app.bundle.bound)
    sources: list[Source]  # in sequence order
    verification: Verification


# The log's origin -> the verifier keys trusted for it.
Trust = Callable[[str], list[notes.NoteVerifier]]


def gather(source: SqlSource, coi: str, trust: Trust) -> Evidence:
    """The bundle of `coi`'s records from the ledger `source` reads, checked against the keys
    `trust` gives for the ledger's origin."""
    try:
        exported = export_bundle(source, Request(coi=coi))
    except BundleExportError as exc:
        raise ExportError(str(exc)) from None
    bundle = bundle_of(f"{coi}.bundle.zip", io.BytesIO(exported.data))
    trusted = trust(exported.manifest.origin)
    verification = checked(bundle, trusted, exported.manifest.after_checkpoint)
    return Evidence(exported, _sources(bundle.files), verification)


def checked(bundle: Bundle, trusted: list[notes.NoteVerifier], left_out: int) -> Verification:
    """What verifying `bundle` against `trusted` proves, as an export says it: only what the
    bundle itself shows (no local path, no option of the verifier's), so that `coi
    verify-bundle` can establish the same again. `left_out`: the patient's records after the
    checkpoint, which no bundle can show (an exporter's word)."""
    fresh = Bundle(bundle.name, bundle.files, bundle.manifest)  # the checks fill in what they prove
    report = verify_bundle(fresh, trusted)
    note = bundle.files[CHECKPOINT].decode()
    checkpoint = notes.parse(note)[0]
    failure = str(report.failure) if report.failure is not None else None
    if failure is None:
        status = "verified"
    elif not trusted:
        status = "not verified"
    else:
        status = "failed"
    return Verification(
        status=status,  # type: ignore[arg-type]
        origin=checkpoint.origin,
        tree_size=checkpoint.size,
        root_hash=base64.b64encode(checkpoint.root).decode(),
        checkpoint=note,
        signed_by=", ".join(f"key id {kid.hex()}" for kid in ledger_key_ids(note)),
        proved=report.proved,
        not_proved=report.cannot,
        failure=failure,
        left_out=left_out,
    )


def _sources(files: dict[str, bytes]) -> list[Source]:
    leaves = {p.sequence: p.leaf_index for p in msgspec.json.decode(files[PROOFS], type=Proofs).proofs}
    sources = []
    for name, data in files.items():
        if name.startswith(RECORDS):
            sequence = int(name[len(RECORDS) :].removesuffix(".json"))
            record = msgspec.json.decode(data, type=Record)
            sources.append(Source(sequence, record.recorded_at, record.envelope, leaves.get(sequence)))
    return sorted(sources, key=lambda s: s.sequence)
