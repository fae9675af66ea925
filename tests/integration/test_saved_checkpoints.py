"""Checkpoints saved outside the ledger catch what its own re-signed checkpoints hide: an
insider who holds the signing key rewrites a record, or cuts the tail and the checkpoints that
covered it, and signs the ledger's checkpoints anew. On SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.app.application import LedgerApplication
from ledger.app.log import MerkleLog
from ledger.audit.saved import read_saved
from ledger.audit.source import StoredCheckpoint
from ledger.audit.verification import LedgerVerifier, Report
from ledger.demo.journeys import Cast
from ledger.store.sources import open_source
from ledger.transparency.checkpoint import Checkpoint, NoteError, NoteSigner
from tests.stores import RawStore, ledger_url
from tests.support import advance, new_journey

Sealed = tuple[LedgerApplication, NoteSigner, RawStore, list[StoredCheckpoint]]


@pytest.fixture
def sealed(registered: LedgerApplication, cast: Cast, tmp_path: Path) -> Iterator[Sealed]:
    """Two patients under a checkpoint, a third under a second one; both notes saved in
    tmp_path/saved, as a monitor keeps them."""
    signer = NoteSigner("coi-ledger.test/log", Ed25519PrivateKey.generate())
    log = MerkleLog(registered)
    for i in range(2):
        advance(registered, new_journey(cast, index=i))
    first = log.checkpoint(signer, signer.name, memory=None)
    advance(registered, new_journey(cast, index=2))
    second = log.checkpoint(signer, signer.name, memory=None)
    (tmp_path / "saved").mkdir()
    for stored in (first, second):
        (tmp_path / "saved" / f"log.{stored.size}.note").write_text(stored.note)
    raw = RawStore(ledger_url(registered))
    yield registered, signer, raw, [first, second]
    raw.conn.close()


def verify(app: LedgerApplication, signer: NoteSigner, saved: Path | None = None) -> Report:
    notes = read_saved([saved], [signer.verifier]) if saved else None
    source = open_source(ledger_url(app))
    try:
        return LedgerVerifier(source, [signer.verifier], saved=notes).run()
    finally:
        source.close()


def test_an_untouched_ledger_matches_its_saved_checkpoints(sealed: Sealed, tmp_path: Path) -> None:
    app, signer, _, _ = sealed
    report = verify(app, signer, tmp_path / "saved")
    assert report.failure is None, report.failure
    assert report.saved == 2


def test_a_rewritten_record_with_every_checkpoint_re_signed(sealed: Sealed, tmp_path: Path) -> None:
    app, signer, raw, (first, second) = sealed
    raw.rewrite_last_record()
    raw.resign_log(app, signer)
    assert verify(app, signer).failure is None  # the ledger's own checkpoints hide it
    failure = verify(app, signer, tmp_path / "saved").failure
    assert failure is not None
    # The roots tell only that a leaf after the largest saved size that still matches differs:
    # no one record is named, the range is.
    store = MerkleLog(app).store
    assert failure.sequence is None
    assert f"different root at tree size {second.size}" in failure.reason
    assert f"the one at {first.size} still matches" in failure.reason
    assert f"a record among leaves {first.size} to {second.size - 1} was changed" in failure.reason
    assert f"(sequences {store.sequence(first.size)} to {store.sequence(second.size - 1)})" in failure.reason
    assert "at the latest" not in failure.reason


def test_the_tail_cut_with_the_checkpoints_that_covered_it(sealed: Sealed, tmp_path: Path) -> None:
    app, signer, raw, (first, second) = sealed
    first_cut = MerkleLog(app).store.sequence(first.size)
    raw.cut_log_tail(first.size)
    assert verify(app, signer).failure is None  # nothing inside the ledger shows it
    failure = verify(app, signer, tmp_path / "saved").failure
    assert failure is not None and failure.sequence == first_cut
    assert (
        f"the ledger holds {first.size} records and {first.size} leaves but the checkpoint saved outside "
        f"it ({tmp_path / 'saved' / f'log.{second.size}.note'}) commits to {second.size} leaves"
    ) in failure.reason


def test_the_leaves_cut_but_not_the_records_are_counted_apart(sealed: Sealed, tmp_path: Path) -> None:
    app, signer, raw, (first, _) = sealed
    records = int(raw.sql("SELECT COUNT(*) FROM {table}")[0][0])
    for table in ("coi_checkpoints", "coi_nodes", "coi_leaves"):
        raw.sql(f"DELETE FROM {table}")
    failure = verify(app, signer, tmp_path / "saved").failure
    assert failure is not None
    assert f"the ledger holds {records} records and 0 leaves" in failure.reason, failure.reason
    assert f"commits to {first.size} leaves" in failure.reason


def test_the_tail_cut_and_grown_again_to_a_second_root_for_one_size(
    sealed: Sealed, cast: Cast, tmp_path: Path
) -> None:
    app, signer, raw, (first, second) = sealed
    raw.cut_log_tail(first.size)
    advance(app, new_journey(cast, index=7))
    advance(app, new_journey(cast, index=8))
    MerkleLog(app).checkpoint(signer, signer.name, memory=None)
    assert MerkleLog(app).store.size() >= second.size
    failure = verify(app, signer, tmp_path / "saved").failure
    assert failure is not None
    assert f"different root at tree size {second.size}" in failure.reason
    assert f"a record among leaves {first.size} to {second.size - 1}" in failure.reason


def test_notes_of_another_log_only_are_no_evidence(sealed: Sealed, tmp_path: Path) -> None:
    app, signer, _, (first, _) = sealed
    other = tmp_path / "other.note"
    other.write_text(Checkpoint("coi-ledger.test/other", first.size, first.root).sign(signer))
    failure = verify(app, signer, other).failure
    assert failure is not None
    assert "none of the checkpoints saved outside the ledger is of its log" in failure.reason


def test_a_saved_note_no_trusted_key_signed_is_refused(sealed: Sealed, tmp_path: Path) -> None:
    _, signer, _, (first, _) = sealed
    stranger = NoteSigner(signer.name, Ed25519PrivateKey.generate())
    forged = tmp_path / "forged.note"
    forged.write_text(Checkpoint(signer.name, first.size, first.root).sign(stranger))
    with pytest.raises(NoteError, match=f"{forged}: no signature by a trusted ledger key"):
        read_saved([forged], [signer.verifier])


def test_an_incremental_run_walks_from_the_start_for_notes_it_cannot_recompute(
    sealed: Sealed, tmp_path: Path
) -> None:
    app, signer, _, (_, second) = sealed
    state = tmp_path / "verify-state.json"
    source = open_source(ledger_url(app))
    try:
        assert LedgerVerifier(source, [signer.verifier]).run(state).failure is None
        notes = read_saved([tmp_path / "saved"], [signer.verifier])
        report = LedgerVerifier(source, [signer.verifier], saved=notes).run(state)
        assert report.failure is None and report.saved == 2
        assert report.resumed_from == 0  # both saved sizes lie at or below the verified one
        assert LedgerVerifier(source, [signer.verifier]).run(state).resumed_from == second.size
    finally:
        source.close()


def test_notes_of_other_logs_are_passed_over_unverified(sealed: Sealed, tmp_path: Path) -> None:
    app, signer, _, (first, _) = sealed
    stranger = NoteSigner("coi-ledger.test/other", Ed25519PrivateKey.generate())
    folder = tmp_path / "saved"
    (folder / "other.note").write_text(Checkpoint(stranger.name, first.size, first.root).sign(stranger))
    notes = read_saved([folder], [signer.verifier], signer.name)
    source = open_source(ledger_url(app))
    try:
        report = LedgerVerifier(source, [signer.verifier], saved=notes).run()
    finally:
        source.close()
    assert report.failure is None and report.saved == 2, report.failure


def test_a_note_of_this_log_no_trusted_key_signed_names_the_key_that_did(
    sealed: Sealed, tmp_path: Path
) -> None:
    _, signer, _, (first, _) = sealed
    stranger = NoteSigner(signer.name, Ed25519PrivateKey.generate())
    forged = tmp_path / "forged.note"
    forged.write_text(Checkpoint(signer.name, first.size, first.root).sign(stranger))
    with pytest.raises(NoteError, match=f"signed by key id {stranger.verifier.key_id.hex()}"):
        read_saved([forged], [signer.verifier], signer.name)
