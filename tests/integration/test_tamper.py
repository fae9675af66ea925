"""Tampering with the store by hand, with direct SQL, on SQLite and on PostgreSQL: each kind
must make verification fail naming the first affected sequence number."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aggregates.therapy import therapy_uuid
from ledger.app.application import LedgerApplication
from ledger.app.log import MerkleLog
from ledger.audit.verification import Report
from ledger.demo.journeys import Cast
from ledger.site.signing import Member, envelope
from ledger.transparency.checkpoint import Checkpoint, NoteSigner
from ledger.wire import events as ev
from tests.stores import RawStore, ledger_url, verify_ledger
from tests.support import advance, new_journey


@pytest.fixture
def sealed(
    registered: LedgerApplication, cast: Cast
) -> Iterator[tuple[LedgerApplication, NoteSigner, RawStore]]:
    """Three patients' journeys under a signed checkpoint, then one more patient after it."""
    signer = NoteSigner("coi-ledger.test/log", Ed25519PrivateKey.generate())
    log = MerkleLog(registered)
    for i in range(3):
        advance(registered, new_journey(cast, index=i))
    log.checkpoint(signer, signer.name, memory=None)
    advance(registered, new_journey(cast, index=3))
    log.checkpoint(signer, signer.name, memory=None)
    raw = RawStore(ledger_url(registered))
    yield registered, signer, raw
    raw.conn.close()


def verify(app: LedgerApplication, signer: NoteSigner) -> Report:
    return verify_ledger(app, [signer.verifier])


def test_an_untouched_ledger_verifies(sealed: tuple[LedgerApplication, NoteSigner, RawStore]) -> None:
    app, signer, raw = sealed
    report = verify(app, signer)
    assert report.failure is None, report.failure
    assert report.records == report.leaves == raw.last()
    assert report.checkpoints == 2


def test_one_changed_byte_in_a_stored_event(sealed: tuple[LedgerApplication, NoteSigner, RawStore]) -> None:
    app, signer, raw = sealed
    stream, version, topic, state = raw.row(40)
    state = bytes(state)
    at = state.index(b"payload") + 30  # a byte inside the signed payload (escaped JSON in the row)
    forged = state[:at] + (b"A" if state[at : at + 1] != b"A" else b"B") + state[at + 1 :]
    raw.set_row(40, (stream, version, topic, forged))
    assert verify(app, signer).failure.sequence == 40  # type: ignore[union-attr]


def test_a_deleted_row(sealed: tuple[LedgerApplication, NoteSigner, RawStore]) -> None:
    app, signer, raw = sealed
    raw.sql("DELETE FROM {table} WHERE {seq} = ?", (57,))
    failure = verify(app, signer).failure
    assert failure is not None and failure.sequence == 57 and "missing" in failure.reason


def test_a_leaf_hash_deleted_from_the_log_is_named_as_missing(
    sealed: tuple[LedgerApplication, NoteSigner, RawStore],
) -> None:
    app, signer, raw = sealed
    raw.sql("DELETE FROM coi_nodes WHERE level = 0 AND idx = ?", (39,))  # leaf 39 commits to sequence 40
    failure = verify(app, signer).failure
    assert failure is not None and failure.sequence == 40, failure
    assert "the Merkle log's leaf hash for it is missing" in failure.reason, failure


def test_two_swapped_rows(sealed: tuple[LedgerApplication, NoteSigner, RawStore]) -> None:
    app, signer, raw = sealed
    a, b = raw.row(30), raw.row(31)
    raw.set_row(30, (b[0], b[1] + 1000, b[2], b[3]))  # out of the way of the primary key first
    raw.set_row(31, a)
    raw.set_row(30, b)
    assert verify(app, signer).failure.sequence == 30  # type: ignore[union-attr]


def _insert_next(raw: RawStore, coi: str, forged: str) -> int:
    """Append `forged` to the patient's chain straight into the table, correctly chained and
    recorded now; returns the sequence it gets."""
    return raw.append(therapy_uuid(coi), forged, "aggregates.base:Ledgered.Recorded")


def test_a_forged_row_signed_by_an_unregistered_key(
    sealed: tuple[LedgerApplication, NoteSigner, RawStore], cast: Cast
) -> None:
    app, signer, raw = sealed
    journey = new_journey(cast, index=5)
    advance(app, journey, before="label_printed")  # enrolled: version 1, and not yet in the tree
    impostor = Member.new("nurse.bdw", "Noor Nurse BDW", "person", ("collection",), "US-BDW")
    forged = envelope(ev.LabelPrinted, impostor, datetime.now(UTC), coi=journey.coi,
                      label_id="L-forged", din=journey.din).decode()  # fmt: skip
    sequence = _insert_next(raw, journey.coi, forged)
    failure = verify(app, signer).failure
    assert failure is not None and failure.sequence == sequence and "registry" in failure.reason


def test_a_row_signed_with_a_revoked_key_and_dated_before_the_revocation(
    sealed: tuple[LedgerApplication, NoteSigner, RawStore], cast: Cast
) -> None:
    """The back-dating attack, put straight into the table: the verifier judges the key at the
    record's recorded_at, as the ledger does, not at the date the signer wrote."""
    app, signer, raw = sealed
    journey = new_journey(cast, index=5)
    advance(app, journey, before="label_printed")
    before = datetime.now(UTC)
    revoke = envelope(
        ev.PrincipalRevoked, cast.admin, before, principal_id="nurse.bdw",
        effective_at=before + timedelta(milliseconds=1), reason="laptop stolen",
    )  # fmt: skip
    assert app.submit(revoke).status == "accepted"
    forged = envelope(ev.LabelPrinted, cast["nurse.bdw"], before, coi=journey.coi,
                      label_id="L-backdated", din=journey.din).decode()  # fmt: skip
    sequence = _insert_next(raw, journey.coi, forged)
    failure = verify(app, signer).failure
    assert failure is not None and failure.sequence == sequence and "key_revoked" in failure.reason


def test_the_tail_behind_the_latest_checkpoint_truncated(
    sealed: tuple[LedgerApplication, NoteSigner, RawStore],
) -> None:
    app, signer, raw = sealed
    last = raw.last()
    raw.sql("DELETE FROM {table} WHERE {seq} > ?", (last - 5,))
    failure = verify(app, signer).failure
    assert failure is not None and failure.sequence == last - 4


def test_a_checkpoint_replaced_by_one_signed_with_another_key(
    sealed: tuple[LedgerApplication, NoteSigner, RawStore],
) -> None:
    app, signer, raw = sealed
    _, second = list(MerkleLog(app).store.checkpoints())
    other = NoteSigner(signer.name, Ed25519PrivateKey.generate())
    note = Checkpoint(signer.name, second.size, second.root).sign(other)
    raw.sql("UPDATE coi_checkpoints SET note = ? WHERE tree_size = ?", (note, second.size))
    failure = verify(app, signer).failure
    assert failure is not None and "trusted" in failure.reason
    # No record is at fault: the checkpoint is named, with the key that signed it.
    assert failure.sequence is None and f"the checkpoint at tree size {second.size}" in failure.reason
    assert f"signed by key {other.verifier.key_id.hex()}" in failure.reason


def test_two_checkpoints_that_are_not_consistent(
    sealed: tuple[LedgerApplication, NoteSigner, RawStore],
) -> None:
    app, signer, raw = sealed
    first, second = list(MerkleLog(app).store.checkpoints())
    # A split view: the ledger's own key signs a head at the same size over a different history.
    forged_root = uuid.uuid4().bytes * 2
    note = Checkpoint(signer.name, second.size, forged_root).sign(signer)
    raw.sql(
        "UPDATE coi_checkpoints SET note = ?, root = ? WHERE tree_size = ?", (note, forged_root, second.size)
    )
    failure = verify(app, signer).failure
    assert failure is not None and "not consistent" in failure.reason
    assert failure.sequence == MerkleLog(app).store.sequence(first.size)
