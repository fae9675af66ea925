"""The verifier holds the ledger's clock to its own order and to the witnesses': a record
back-dated by an insider (inserted straight into the table, then signed over by the next
checkpoint) is named, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aggregates.therapy import therapy_uuid
from ledger.app.application import LedgerApplication
from ledger.app.log import MerkleLog
from ledger.audit.source import StoredCheckpoint
from ledger.audit.verification import LedgerVerifier
from ledger.audit.witnessing import CLOCK_TOLERANCE, Witnessing
from ledger.demo.journeys import Cast, Step
from ledger.store.sources import open_source
from ledger.transparency.checkpoint import NoteSigner
from ledger.transparency.cosignature import Cosigner, with_lines
from tests.stores import RawStore, ledger_url, verify_ledger
from tests.support import advance, new_journey

WITNESS = Cosigner.generate("witness.test/w1")
TOPIC = "aggregates.base:Ledgered.Recorded"


@pytest.fixture
def ledger(
    registered: LedgerApplication, cast: Cast
) -> Iterator[tuple[LedgerApplication, NoteSigner, RawStore]]:
    signer = NoteSigner("coi-ledger.test/log", Ed25519PrivateKey.generate())
    for i in range(2):
        advance(registered, new_journey(cast, index=i))
    MerkleLog(registered).checkpoint(signer, signer.name, memory=None)
    raw = RawStore(ledger_url(registered))
    yield registered, signer, raw
    raw.conn.close()


def _next_step(app: LedgerApplication, cast: Cast) -> tuple[str, Step]:
    """A patient enrolled (its records stored), and its next step, genuinely signed, not yet sent."""
    journey = new_journey(cast, index=7)
    [step, *_] = advance(app, journey, before="label_printed")
    return journey.coi, step


def _witness(log: MerkleLog, at: int, checkpoint: StoredCheckpoint | None = None) -> StoredCheckpoint:
    """The witness's cosignature on `checkpoint` (the latest) at time `at`, stored as the relay stores it."""
    checkpoint = checkpoint or log.store.latest_checkpoint()
    assert checkpoint is not None
    text = checkpoint.note.partition("\n\n")[0] + "\n"
    log.store.set_witnessed(checkpoint.size, with_lines(checkpoint.note, [WITNESS.line(text, at)]), "now")
    return checkpoint


def test_a_record_dated_before_the_one_it_follows_is_named(
    ledger: tuple[LedgerApplication, NoteSigner, RawStore], cast: Cast
) -> None:
    app, signer, raw = ledger
    coi, step = _next_step(app, cast)
    back = datetime.now(UTC) - CLOCK_TOLERANCE - timedelta(minutes=30)
    forged = raw.append(therapy_uuid(coi), step.envelope.decode(), TOPIC, recorded_at=back)
    MerkleLog(app).checkpoint(signer, signer.name, memory=None)  # the next checkpoint signs over it
    report = verify_ledger(app, [signer.verifier])
    assert report.failure is not None and report.failure.sequence == forged, report.failure
    assert "clock went back" in report.failure.reason


def test_a_record_moved_back_in_time_without_rehashing_is_named_as_changed_bytes(
    ledger: tuple[LedgerApplication, NoteSigner, RawStore],
) -> None:
    """The leaf check comes before the clock check: the clock did not go back, the record changed."""
    app, signer, raw = ledger
    moved = raw.rewrite_last_record(by=-timedelta(minutes=13))
    report = verify_ledger(app, [signer.verifier])
    assert report.failure is not None and report.failure.sequence == moved, report.failure
    assert "the record's bytes differ from what the Merkle log committed" in report.failure.reason


def test_a_cosigned_checkpoint_the_ledger_deleted_is_named_missing(
    ledger: tuple[LedgerApplication, NoteSigner, RawStore], cast: Cast
) -> None:
    app, signer, raw = ledger
    log = MerkleLog(app)
    first = _witness(log, 1_700_000_000)
    advance(app, new_journey(cast, index=3))
    log.checkpoint(signer, signer.name, memory=None)
    raw.sql("DELETE FROM coi_checkpoints WHERE tree_size = ?", (first.size,))
    report = verify_ledger(app, [signer.verifier], witnessing=Witnessing([WITNESS.verifier], 0))
    assert report.failure is not None, report
    assert f"tree size {first.size} is missing from the ledger's checkpoints" in report.failure.reason


def test_a_record_dated_before_a_witness_saw_a_checkpoint_without_it_is_named(
    ledger: tuple[LedgerApplication, NoteSigner, RawStore], cast: Cast
) -> None:
    app, signer, raw = ledger
    coi, step = _next_step(app, cast)
    log = MerkleLog(app)
    witnessed = log.checkpoint(signer, signer.name, memory=None)  # covers the enrolment
    # The witness cosigned it an hour on; a record dated now, yet left out of it, is back-dated.
    _witness(log, int(datetime.now(UTC).timestamp()) + 3600, witnessed)
    forged = raw.append(therapy_uuid(coi), step.envelope.decode(), TOPIC)
    log.checkpoint(signer, signer.name, memory=None)
    assert (
        verify_ledger(app, [signer.verifier]).failure is None
    )  # without the witness's key its time counts for nothing
    report = verify_ledger(app, [signer.verifier], witnessing=Witnessing([WITNESS.verifier], 1))
    assert report.failure is not None and report.failure.sequence == forged, report.failure
    assert "back-dated" in report.failure.reason and f"tree size {witnessed.size}" in report.failure.reason


def test_records_after_a_witnessed_checkpoint_pass_and_a_quorum_counts_distinct_keys(
    ledger: tuple[LedgerApplication, NoteSigner, RawStore], cast: Cast
) -> None:
    app, signer, _ = ledger
    log = MerkleLog(app)
    _witness(log, int(datetime.now(UTC).timestamp()) - 60)
    advance(app, new_journey(cast, index=8), before="label_printed")
    other = Cosigner.generate("witness.test/w2")
    assert (
        verify_ledger(
            app, [signer.verifier], witnessing=Witnessing([WITNESS.verifier, other.verifier], 1)
        ).failure
        is None
    )
    # The latest checkpoint now is the witnessed one: one cosignature, two required.
    report = verify_ledger(
        app, [signer.verifier], witnessing=Witnessing([WITNESS.verifier, other.verifier], 2)
    )
    assert report.failure is not None and "1 of the 2" in report.failure.reason
    assert "witness.test/w2" in report.failure.reason


def test_an_incremental_run_remembers_the_latest_time_it_verified(
    ledger: tuple[LedgerApplication, NoteSigner, RawStore], cast: Cast, tmp_path: Path
) -> None:
    app, signer, raw = ledger
    coi, step = _next_step(app, cast)
    MerkleLog(app).checkpoint(signer, signer.name, memory=None)
    state = tmp_path / "verify-state.json"
    source = open_source(ledger_url(app))
    try:
        assert LedgerVerifier(source, [signer.verifier]).run(state).failure is None
        back = datetime.now(UTC) - CLOCK_TOLERANCE - timedelta(minutes=30)
        forged = raw.append(therapy_uuid(coi), step.envelope.decode(), TOPIC, recorded_at=back)
        MerkleLog(app).checkpoint(signer, signer.name, memory=None)
        report = LedgerVerifier(source, [signer.verifier]).run(state)  # the forged record comes first
    finally:
        source.close()
    assert report.resumed_from and report.failure is not None and report.failure.sequence == forged
    assert "clock went back" in report.failure.reason
