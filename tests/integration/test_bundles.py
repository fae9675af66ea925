"""Offline bundles on both stores: what `coi export bundle` selects, and that `coi verify-bundle`
proves it from the zip alone."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aggregates.therapy import therapy_uuid
from ledger.app.application import LedgerApplication
from ledger.app.bundle import BundleExportError, Exported, export_bundle
from ledger.app.log import MerkleLog
from ledger.audit.bundle import BundleReport, verify_bundle
from ledger.audit.bundle_format import Manifest, Request
from ledger.demo.journeys import Cast, Journey
from ledger.store.sources import open_source
from ledger.store.streams import Therapy
from ledger.store.topics import NAMES
from ledger.transparency.checkpoint import NoteSigner
from ledger.transparency.records import Record
from tests.stores import RawStore, ledger_url
from tests.support import advance, body_dict, new_journey, signed, tag_of

SIGNER = NoteSigner("coi-ledger.test/log", Ed25519PrivateKey.generate())


def _sealed(app: LedgerApplication, cast: Cast, patients: int = 2) -> list[Journey]:
    journeys = [new_journey(cast, index=i) for i in range(patients)]
    for journey in journeys:
        advance(app, journey)
    MerkleLog(app).checkpoint(SIGNER, SIGNER.name, memory=None)
    return journeys


def _export(app: LedgerApplication, request: Request) -> Exported:
    """`coi export bundle`'s export, through the read-only source."""
    source = open_source(ledger_url(app))
    try:
        return export_bundle(source, request)
    finally:
        source.close()


def _verified(app: LedgerApplication, request: Request, tmp_path: Path) -> tuple[Manifest, BundleReport]:
    exported = _export(app, request)
    path = tmp_path / "bundle.zip"
    path.write_bytes(exported.data)
    report = verify_bundle(path, [SIGNER.verifier])
    assert report.failure is None, report.failure
    return exported.manifest, report


def _streams(data: bytes) -> dict[str, list[int]]:
    """stream -> the versions the bundle holds of it."""
    found: dict[str, list[int]] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for name in z.namelist():
            if name.startswith("records/"):
                record = msgspec.json.decode(z.read(name), type=Record)
                found.setdefault(record.stream, []).append(record.version)
    return {s: sorted(v) for s, v in found.items()}


def test_a_patients_bundle_holds_its_history_from_the_first_record(
    registered: LedgerApplication, cast: Cast, tmp_path: Path
) -> None:
    first, other = _sealed(registered, cast)
    manifest, report = _verified(registered, Request(coi=first.coi), tmp_path)
    streams = _streams(_export(registered, Request(coi=first.coi)).data)
    versions = streams[str(therapy_uuid(first.coi))]
    assert versions == list(range(1, len(versions) + 1)) and len(manifest.selected) == len(versions)
    assert str(therapy_uuid(other.coi)) not in streams  # nothing of another patient
    assert manifest.cois == [first.coi] and manifest.after_checkpoint == 0
    assert any(f"the chain of COI {first.coi} is unbroken from its first record" in p for p in report.proved)
    assert any("each signature was valid at its time" in p for p in report.proved)
    assert any("records of other patients" in c for c in report.cannot)


def test_a_batch_resolves_to_the_patient_it_was_made_for(
    registered: LedgerApplication, cast: Cast, tmp_path: Path
) -> None:
    first, _ = _sealed(registered, cast)
    manifest, _ = _verified(registered, Request(batch=f"B-{first.coi}"), tmp_path)
    assert manifest.cois == [first.coi]
    with pytest.raises(BundleExportError, match="no record names batch B-NONE"):
        _export(registered, Request(batch="B-NONE"))


def test_a_batch_id_in_two_histories_is_ambiguous(registered: LedgerApplication, cast: Cast) -> None:
    first, other = _sealed(registered, cast)
    # A record of the other patient naming the first one's batch, put there with SQL: the
    # export lists both histories and lets the user choose.
    step = next(s for s in other.steps() if tag_of(s) == "qc_sample_taken")
    body = body_dict(step) | {"batch_id": f"B-{first.coi}"}
    RawStore(ledger_url(registered)).append(
        therapy_uuid(other.coi), signed(body, cast[body["actor"]]).decode(), NAMES[Therapy.Recorded]
    )
    with pytest.raises(BundleExportError) as caught:
        _export(registered, Request(batch=f"B-{first.coi}"))
    assert first.coi in str(caught.value) and other.coi in str(caught.value) and "--coi" in str(caught.value)


def test_a_sequence_range_brings_each_history_from_its_first_record(
    registered: LedgerApplication, cast: Cast, tmp_path: Path
) -> None:
    _sealed(registered, cast)
    last = RawStore(ledger_url(registered)).last()
    manifest, _ = _verified(registered, Request(from_seq=last - 5, to_seq=last - 2), tmp_path)
    assert manifest.selected == list(range(last - 5, last - 1))
    for versions in _streams(_export(registered, Request(from_seq=last - 5, to_seq=last - 2)).data).values():
        assert versions[0] == 1 and versions == list(range(1, len(versions) + 1))


def test_records_after_the_checkpoint_are_left_out_and_counted(
    registered: LedgerApplication, cast: Cast, tmp_path: Path
) -> None:
    _sealed(registered, cast)
    sealed = RawStore(ledger_url(registered)).last()
    late = new_journey(cast, index=2)
    advance(registered, late)
    last = RawStore(ledger_url(registered)).last()
    manifest, report = _verified(registered, Request(from_seq=sealed - 1, to_seq=last), tmp_path)
    assert manifest.selected == [sealed - 1, sealed] and manifest.after_checkpoint == last - sealed
    assert any(f"the {last - sealed} records of this selection" in c for c in report.cannot)
    with pytest.raises(BundleExportError, match="came after the latest checkpoint"):
        _export(registered, Request(coi=late.coi))


def test_no_bundle_without_a_signed_checkpoint(registered: LedgerApplication) -> None:
    with pytest.raises(BundleExportError, match="no signed checkpoint yet"):
        _export(registered, Request(from_seq=1, to_seq=5))
    with pytest.raises(BundleExportError, match="has no records"):
        MerkleLog(registered).checkpoint(SIGNER, SIGNER.name, memory=None)
        _export(registered, Request(coi="CHNOSUCHPATIENT"))
