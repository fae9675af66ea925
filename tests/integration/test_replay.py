"""Records the ledger would have refused, signed with genuine keys and put straight into the
tables by an insider, then signed over by a checkpoint: `coi verify` replays the domain rules
and names each by its sequence and reason code, on SQLite and on PostgreSQL, replaying in the
verifying process and in worker processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aggregates.therapy import therapy_uuid
from ledger.app.application import LedgerApplication
from ledger.app.log import MerkleLog
from ledger.demo.journeys import Cast
from ledger.site.signing import envelope
from ledger.transparency.checkpoint import NoteSigner
from ledger.wire import events as ev
from tests.stores import RawStore, ledger_url, verify_ledger
from tests.support import advance, new_journey, tag_of

TOPIC = "aggregates.base:Ledgered.Recorded"


pytestmark = pytest.mark.usefixtures("checked_in_and_out_of_process")


@pytest.fixture
def ledger(registered: LedgerApplication) -> Iterator[tuple[LedgerApplication, NoteSigner, RawStore]]:
    signer = NoteSigner("coi-ledger.test/log", Ed25519PrivateKey.generate())
    raw = RawStore(ledger_url(registered))
    yield registered, signer, raw
    raw.conn.close()


def test_an_infusion_after_a_bedside_mismatch(
    ledger: tuple[LedgerApplication, NoteSigner, RawStore], cast: Cast
) -> None:
    app, signer, raw = ledger
    advance(app, new_journey(cast, index=1))  # others' records before and after it
    journey = new_journey(cast, "identity_mismatch", index=2)
    rest = advance(app, journey, before="infused")  # the bedside check recorded as a mismatch
    assert [tag_of(s) for s in rest] == ["infused"]
    sequence = raw.append(therapy_uuid(journey.coi), rest[0].envelope.decode(), TOPIC)
    advance(app, new_journey(cast, index=3))
    MerkleLog(app).checkpoint(signer, signer.name, memory=None)  # the ledger signs over it
    failure = verify_ledger(app, [signer.verifier]).failure
    assert failure is not None and failure.sequence == sequence, failure
    assert "identity_mismatch" in failure.reason
    # Without the replay, every other check passes: the record is genuinely signed and logged.
    unreplayed = verify_ledger(app, [signer.verifier], replay=False)
    assert unreplayed.failure is None and not unreplayed.replayed


def test_a_reused_deviation_id(ledger: tuple[LedgerApplication, NoteSigner, RawStore], cast: Cast) -> None:
    app, signer, raw = ledger
    journey = new_journey(cast, index=4)
    advance(app, journey, before="manufacturing_started")
    nurse = cast[f"nurse.{journey.hospital[3:].lower()}"]
    at = journey.clock  # after the journey's last step

    def opened(description: str) -> bytes:
        return envelope(ev.DeviationOpened, nurse, at, coi=journey.coi, deviation_id="DEV-1",
                        description=description, severity="minor")  # fmt: skip

    assert app.submit(opened("bag label scuffed")).status == "accepted"
    again = opened("a second deviation under the same id")
    assert app.submit(again).code == "duplicate_id"  # the ledger refuses it ...
    sequence = raw.append(therapy_uuid(journey.coi), again.decode(), TOPIC)  # ... the insider does not
    MerkleLog(app).checkpoint(signer, signer.name, memory=None)
    failure = verify_ledger(app, [signer.verifier]).failure
    assert failure is not None and failure.sequence == sequence, failure
    assert "duplicate_id" in failure.reason


def test_records_not_yet_in_the_log_are_counted(
    ledger: tuple[LedgerApplication, NoteSigner, RawStore], cast: Cast
) -> None:
    app, signer, raw = ledger
    advance(app, new_journey(cast, index=5))
    MerkleLog(app).checkpoint(signer, signer.name, memory=None)
    first = raw.last() + 1
    advance(app, new_journey(cast, index=6))  # committed, no leaf yet
    report = verify_ledger(app, [signer.verifier])
    assert report.failure is None, report.failure
    assert report.replayed
    assert (report.unlogged, report.unlogged_from) == (raw.last() - first + 1, first)


def test_an_incremental_run_says_it_did_not_replay(
    ledger: tuple[LedgerApplication, NoteSigner, RawStore], cast: Cast, tmp_path: Path
) -> None:
    """A run resumed from a checkpoint has not the patients' states: it says so, and a full
    run replays them."""
    app, signer, _ = ledger
    advance(app, new_journey(cast, index=7))
    MerkleLog(app).checkpoint(signer, signer.name, memory=None)
    state = tmp_path / "verify-state.json"
    first = verify_ledger(app, [signer.verifier], state)
    assert first.failure is None and first.replayed and not first.resumed_from
    resumed = verify_ledger(app, [signer.verifier], state)
    assert resumed.failure is None and resumed.resumed_from and not resumed.replayed
