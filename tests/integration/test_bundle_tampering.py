"""A bundle tampered file by file: every changed, missing or added byte fails, naming the file
and the reason, also when the tamperer rewrites the manifest to match."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aggregates.therapy import therapy_uuid
from ledger.app.application import LedgerApplication
from ledger.app.bundle import export_bundle
from ledger.app.log import MerkleLog
from ledger.audit.bundle import held_to_saved, verify_bundle
from ledger.audit.bundle_format import CHECKPOINT, MANIFEST, PROOFS, FileEntry, Manifest, Request, record_name
from ledger.audit.saved import SavedNote, read_saved
from ledger.demo.journeys import Cast, compressed_run
from ledger.demo.kit import register_cast
from ledger.store.sources import open_source
from ledger.transparency import checkpoint as notes
from ledger.transparency.checkpoint import NoteSigner
from ledger.transparency.cosignature import Cosigner, with_lines
from ledger.transparency.records import Record, canonical
from tests.support import advance, new_journey

SIGNER = NoteSigner("coi-ledger.test/log", Ed25519PrivateKey.generate())
Files = dict[str, bytes]


class Bundles:
    """Two patients' bundles from one SQLite ledger (tampering is the same on any store)."""

    def __init__(self, folder: Path, cast: Cast) -> None:
        app = LedgerApplication(f"sqlite:///{folder / 'ledger.sqlite'}")
        register_cast(app, cast, compressed_run(datetime.now(UTC)).registered_at)
        self.journeys = [new_journey(cast, index=i) for i in range(2)]
        for journey in self.journeys:
            advance(app, journey)
        MerkleLog(app).checkpoint(SIGNER, SIGNER.name, memory=None)
        source = open_source(f"sqlite:///{folder / 'ledger.sqlite'}")
        self.mine, self.other = (
            _files(export_bundle(source, Request(coi=j.coi)).data) for j in self.journeys
        )
        source.close()
        self.stream = str(therapy_uuid(self.journeys[0].coi))
        app.close()

    def record(self, files: Files, version: int) -> str:
        """The file name of my patient's record at `version`."""
        for name, data in files.items():
            if name.startswith("records/"):
                record = msgspec.json.decode(data, type=Record)
                if (record.stream, record.version) == (self.stream, version):
                    return name
        raise AssertionError(version)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory, cast: Cast) -> Bundles:
    return Bundles(tmp_path_factory.mktemp("bundles"), cast)


def _files(data: bytes) -> Files:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist()}


def _zip(files: Files, path: Path, *, duplicate: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        if duplicate is not None:
            z.writestr(duplicate, files[duplicate])
    return path


def _remanifest(files: Files) -> Files:
    """The manifest rewritten to list the files as they now are: what a tamperer does."""
    manifest = msgspec.json.decode(files[MANIFEST], type=Manifest)
    entries = [
        FileEntry(n, hashlib.sha256(d).hexdigest(), len(d)) for n, d in sorted(files.items()) if n != MANIFEST
    ]
    return files | {MANIFEST: msgspec.json.encode(msgspec.structs.replace(manifest, files=entries))}


def _check(bundles: Bundles, files: Files, tmp_path: Path, file: str, reason: str) -> None:
    report = verify_bundle(_zip(files, tmp_path / "tampered.zip"), [SIGNER.verifier])
    assert report.failure is not None, "a tampered bundle verified"
    assert report.failure.file == file and re.search(reason, report.failure.reason), report.failure


def _late(record: bytes) -> bytes:
    """The same record, received a second later: as many bytes, valid JSON, another leaf."""
    parsed = msgspec.json.decode(record, type=Record)
    when = datetime.fromisoformat(parsed.recorded_at) + timedelta(seconds=1)
    late = canonical(msgspec.structs.replace(parsed, recorded_at=when.isoformat()))
    assert len(late) == len(record)
    return late


def test_the_untouched_bundle_verifies(bundles: Bundles, tmp_path: Path) -> None:
    report = verify_bundle(_zip(bundles.mine, tmp_path / "b.zip"), [SIGNER.verifier])
    assert report.failure is None, report.failure


Tamper = Callable[[Bundles, Files], tuple[Files, str, str]]


def changed_record(b: Bundles, f: Files) -> tuple[Files, str, str]:
    name = b.record(f, 3)
    return f | {name: _late(f[name])}, name, "changed: its SHA-256 differs"


def changed_record_remanifested(b: Bundles, f: Files) -> tuple[Files, str, str]:
    name = b.record(f, 3)
    return _remanifest(f | {name: _late(f[name])}), name, "not in the log: its inclusion proof"


def dropped_record(b: Bundles, f: Files) -> tuple[Files, str, str]:
    name = b.record(f, 3)
    return {n: d for n, d in f.items() if n != name}, name, "missing"


def dropped_record_remanifested(b: Bundles, f: Files) -> tuple[Files, str, str]:
    name = b.record(f, 3)
    return _remanifest({n: d for n, d in f.items() if n != name}), PROOFS, f"proves {name}, which the bundle"


def dropped_record_and_proof(b: Bundles, f: Files) -> tuple[Files, str, str]:
    """A record taken out of the middle of a history with its proof: the chain shows it."""
    name = b.record(f, 3)
    proofs = msgspec.json.decode(f[PROOFS])
    proofs["proofs"] = [p for p in proofs["proofs"] if record_name(p["sequence"]) != name]
    kept = {n: d for n, d in f.items() if n != name} | {PROOFS: msgspec.json.encode(proofs)}
    return _remanifest(kept), b.record(f, 4), "goes from version 2 to 4"


def added_file(b: Bundles, f: Files) -> tuple[Files, str, str]:
    return f | {"notes.txt": b"trust me"}, "notes.txt", "added: the manifest does not list it"


def added_record_of_another_patient(b: Bundles, f: Files) -> tuple[Files, str, str]:
    """A genuine record of another patient, with its genuine proof: its history is not whole."""
    other = next(
        n for n in b.other
        if n.startswith("records/") and n not in f
        and msgspec.json.decode(b.other[n], type=Record).version > 1
    )  # fmt: skip
    proofs, theirs = msgspec.json.decode(f[PROOFS]), msgspec.json.decode(b.other[PROOFS])
    proofs["proofs"] += [p for p in theirs["proofs"] if record_name(p["sequence"]) == other]
    added = f | {other: b.other[other], PROOFS: msgspec.json.encode(proofs)}
    version = msgspec.json.decode(b.other[other], type=Record).version
    return _remanifest(added), other, f"goes from version 0 to {version}"


def added_record_without_proof(b: Bundles, f: Files) -> tuple[Files, str, str]:
    other = next(n for n in b.other if n.startswith("records/") and n not in f)
    return _remanifest(f | {other: b.other[other]}), other, "has no inclusion proof"


def swapped_record(b: Bundles, f: Files) -> tuple[Files, str, str]:
    """Another bundle's record under this one's name, manifest rewritten."""
    name = b.record(f, 3)
    theirs = next(n for n in b.other if n.startswith("records/") and n not in f)
    return _remanifest(f | {name: b.other[theirs]}), name, "not in the log"


def changed_proof(b: Bundles, f: Files) -> tuple[Files, str, str]:
    proofs = msgspec.json.decode(f[PROOFS])
    path = proofs["proofs"][-1]["path"]
    path[0] = path[1]
    changed = f | {PROOFS: msgspec.json.encode(proofs)}
    last = record_name(proofs["proofs"][-1]["sequence"])
    return _remanifest(changed), last, "its inclusion proof .* does not reach the root"


def changed_checkpoint(b: Bundles, f: Files) -> tuple[Files, str, str]:
    return f | {CHECKPOINT: f[CHECKPOINT].replace(b"\n", b"\n\n", 1)}, CHECKPOINT, "changed"


def resigned_checkpoint(b: Bundles, f: Files) -> tuple[Files, str, str]:
    """The checkpoint signed again by someone else's key under the ledger's name."""
    forger = NoteSigner(SIGNER.name, Ed25519PrivateKey.generate())
    parsed, _, _ = notes.parse(f[CHECKPOINT].decode())
    forged = _remanifest(f | {CHECKPOINT: parsed.sign(forger).encode()})
    return forged, CHECKPOINT, "no signature by a trusted ledger key"


def manifest_hash(b: Bundles, f: Files) -> tuple[Files, str, str]:
    name = b.record(f, 2)
    manifest = msgspec.json.decode(f[MANIFEST])
    for entry in manifest["files"]:
        if entry["path"] == name:
            entry["sha256"] = hashlib.sha256(b"other").hexdigest()
    return f | {MANIFEST: msgspec.json.encode(manifest)}, name, "changed"


def manifest_size(b: Bundles, f: Files) -> tuple[Files, str, str]:
    manifest = msgspec.json.decode(f[MANIFEST])
    manifest["tree_size"] += 1
    return f | {MANIFEST: msgspec.json.encode(manifest)}, MANIFEST, "checkpoint.note says .* at"


def manifest_origin(b: Bundles, f: Files) -> tuple[Files, str, str]:
    manifest = msgspec.json.decode(f[MANIFEST])
    manifest["origin"] = "x/y"
    return f | {MANIFEST: msgspec.json.encode(manifest)}, MANIFEST, "says origin 'x/y'.*manifest was changed"


def manifest_patient(b: Bundles, f: Files) -> tuple[Files, str, str]:
    manifest = msgspec.json.decode(f[MANIFEST])
    manifest["cois"] = [b.journeys[1].coi]
    return f | {MANIFEST: msgspec.json.encode(manifest)}, MANIFEST, f"names COI {b.journeys[1].coi}"


TAMPERS = [
    changed_record, changed_record_remanifested, dropped_record, dropped_record_remanifested,
    dropped_record_and_proof, added_file, added_record_of_another_patient, added_record_without_proof,
    swapped_record, changed_proof,
    changed_checkpoint, resigned_checkpoint, manifest_hash, manifest_size, manifest_origin,
    manifest_patient,
]  # fmt: skip


@pytest.mark.parametrize("tamper", TAMPERS, ids=[t.__name__ for t in TAMPERS])
def test_a_tampered_bundle_fails_naming_the_file(bundles: Bundles, tmp_path: Path, tamper: Tamper) -> None:
    files, file, reason = tamper(bundles, dict(bundles.mine))
    _check(bundles, files, tmp_path, file, reason)


def test_a_zip_holding_a_name_twice_fails(bundles: Bundles, tmp_path: Path) -> None:
    name = bundles.record(bundles.mine, 2)
    with pytest.warns(UserWarning, match="Duplicate name"):
        path = _zip(bundles.mine, tmp_path / "twice.zip", duplicate=name)
    report = verify_bundle(path, [SIGNER.verifier])
    assert report.failure is not None and f"holds {name} more than once" in report.failure.reason


def test_what_is_not_a_bundle_fails(tmp_path: Path) -> None:
    path = tmp_path / "plain.zip"
    path.write_bytes(b"not a zip")
    report = verify_bundle(path, [SIGNER.verifier])
    assert report.failure is not None and report.failure.file == "plain.zip"
    assert "not a readable zip" in report.failure.reason


def test_no_trusted_key_fails(bundles: Bundles, tmp_path: Path) -> None:
    report = verify_bundle(_zip(bundles.mine, tmp_path / "b.zip"), [])
    assert report.failure is not None and report.failure.file == CHECKPOINT
    assert "--trusted-key" in report.failure.reason


def _saved(folder: Path, *checkpoints: notes.Checkpoint) -> list[SavedNote]:
    """Notes signed by the ledger's key, kept outside it, read back as `coi verify-bundle
    --checkpoints` reads them."""
    folder.mkdir()
    for i, checkpoint in enumerate(checkpoints):
        (folder / f"{i}.note").write_text(checkpoint.sign(SIGNER))
    return read_saved([folder], [SIGNER.verifier])


def _bundle_checkpoint(bundles: Bundles) -> notes.Checkpoint:
    return notes.parse(bundles.mine[CHECKPOINT].decode())[0]


def test_a_checkpoint_saved_outside_the_ledger_vouches_for_the_bundle(
    bundles: Bundles, tmp_path: Path
) -> None:
    saved = _saved(tmp_path / "saved", _bundle_checkpoint(bundles))
    report = verify_bundle(_zip(bundles.mine, tmp_path / "b.zip"), [SIGNER.verifier], [held_to_saved(saved)])
    assert report.failure is None, report.failure
    assert any("the checkpoint is the one saved outside the ledger" in p for p in report.proved)


def test_a_saved_checkpoint_of_the_same_size_with_another_root_is_a_fork(
    bundles: Bundles, tmp_path: Path
) -> None:
    genuine = _bundle_checkpoint(bundles)
    saved = _saved(tmp_path / "saved", dataclasses.replace(genuine, root=bytes(32)))
    report = verify_bundle(_zip(bundles.mine, tmp_path / "b.zip"), [SIGNER.verifier], [held_to_saved(saved)])
    assert report.failure is not None and report.failure.file == CHECKPOINT
    assert "the log was forked" in report.failure.reason and "0.note" in report.failure.reason


def test_saved_checkpoints_of_other_sizes_are_said_unchecked(bundles: Bundles, tmp_path: Path) -> None:
    genuine = _bundle_checkpoint(bundles)
    saved = _saved(tmp_path / "saved", dataclasses.replace(genuine, size=genuine.size + 5))
    report = verify_bundle(_zip(bundles.mine, tmp_path / "b.zip"), [SIGNER.verifier], [held_to_saved(saved)])
    assert report.failure is None, report.failure
    assert any("none is of tree size" in c for c in report.cannot)


def test_saved_checkpoints_of_another_log_only_fail(bundles: Bundles, tmp_path: Path) -> None:
    genuine = _bundle_checkpoint(bundles)
    saved = _saved(tmp_path / "saved", dataclasses.replace(genuine, origin="elsewhere.example/log"))
    report = verify_bundle(_zip(bundles.mine, tmp_path / "b.zip"), [SIGNER.verifier], [held_to_saved(saved)])
    assert report.failure is not None and report.failure.file == CHECKPOINT
    assert "none of the checkpoints saved outside the ledger is of its log" in report.failure.reason


def test_a_changed_manifest_is_named_before_trust(bundles: Bundles, tmp_path: Path) -> None:
    files, _, _ = manifest_origin(bundles, dict(bundles.mine))
    report = verify_bundle(_zip(files, tmp_path / "b.zip"), [])  # no key for x/y: still the manifest
    assert report.failure is not None and report.failure.file == MANIFEST, report.failure


def test_a_checkpoint_signed_by_another_key_names_it_and_hints_at_a_rotation(
    bundles: Bundles, tmp_path: Path
) -> None:
    rotated = NoteSigner(SIGNER.name, Ed25519PrivateKey.generate())
    parsed, text, _ = notes.parse(bundles.mine[CHECKPOINT].decode())
    # Witnesses' cosignatures are no ledger signatures, even one named after the log: not offered as such.
    witnesses = [Cosigner.generate("witness.test/w1"), Cosigner.generate(SIGNER.name)]
    note = with_lines(parsed.sign(rotated), [w.line(text, 1_700_000_000) for w in witnesses])
    files = _remanifest(bundles.mine | {CHECKPOINT: note.encode()})
    for trusted in ([SIGNER.verifier], []):
        report = verify_bundle(_zip(files, tmp_path / "b.zip"), trusted)
        assert report.failure is not None and report.failure.file == CHECKPOINT
        assert f"(it is signed by key id {rotated.verifier.key_id.hex()})" in report.failure.reason
        assert "rotated" in report.failure.reason and "coi trust add" in report.failure.reason


def test_two_saved_checkpoints_of_one_size_with_other_roots_are_a_fork(
    bundles: Bundles, tmp_path: Path
) -> None:
    genuine = _bundle_checkpoint(bundles)
    larger = dataclasses.replace(genuine, size=genuine.size + 5)
    saved = _saved(tmp_path / "saved", larger, dataclasses.replace(larger, root=bytes(32)))
    report = verify_bundle(_zip(bundles.mine, tmp_path / "b.zip"), [SIGNER.verifier], [held_to_saved(saved)])
    assert report.failure is not None and report.failure.file == CHECKPOINT, report.failure
    assert "the log was forked" in report.failure.reason


def test_directory_entries_of_a_re_zipped_bundle_are_ignored(bundles: Bundles, tmp_path: Path) -> None:
    path = _zip(bundles.mine, tmp_path / "rezipped.zip")
    with zipfile.ZipFile(path, "a") as z:
        z.writestr(zipfile.ZipInfo("records/"), b"")
    report = verify_bundle(path, [SIGNER.verifier])
    assert report.failure is None, report.failure


def test_saved_notes_of_another_log_need_not_be_signed_by_its_key(bundles: Bundles, tmp_path: Path) -> None:
    genuine = _bundle_checkpoint(bundles)
    stranger = NoteSigner("elsewhere.example/log", Ed25519PrivateKey.generate())
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "mine.note").write_text(genuine.sign(SIGNER))
    (folder / "other.note").write_text(dataclasses.replace(genuine, origin=stranger.name).sign(stranger))
    saved = read_saved([folder], [SIGNER.verifier], SIGNER.name)
    report = verify_bundle(_zip(bundles.mine, tmp_path / "b.zip"), [SIGNER.verifier], [held_to_saved(saved)])
    assert report.failure is None, report.failure
