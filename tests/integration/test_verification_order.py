"""`coi verify` checks records chunk by chunk while worker processes verify the signatures of
the chunks before: whatever fails first in sequence order must be the failure it names, on
SQLite and on PostgreSQL, whichever chunk it falls in."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import msgspec
import pytest

from ledger.app.application import LedgerApplication
from ledger.app.log import MerkleLog
from ledger.audit import verification
from ledger.audit.signatures import BackgroundVerifier
from ledger.demo.journeys import Cast
from ledger.store.logstore import TABLES
from tests.stores import RawStore, ledger_url, verify_ledger
from tests.support import advance, new_journey

CHUNKS = [1, 3, 4000]  # a record per chunk, a few, everything in one
pytestmark = pytest.mark.usefixtures("checked_in_and_out_of_process")


@pytest.fixture
def ledger(registered: LedgerApplication, cast: Cast) -> Iterator[tuple[LedgerApplication, RawStore]]:
    """Two patients' journeys, integrated into the Merkle log (no checkpoint)."""
    for i in range(2):
        advance(registered, new_journey(cast, index=i))
    MerkleLog(registered).integrate()
    raw = RawStore(ledger_url(registered))
    yield registered, raw
    raw.conn.close()


def verify(app: LedgerApplication) -> verification.Report:
    return verify_ledger(app, [])  # no checkpoints to check


def forge_signature(app: LedgerApplication, raw: RawStore, sequence: int) -> None:
    """Flip a bit of a stored record's signature and rebuild the Merkle log over the rows, as
    someone who can write every table could: the tree matches the records again, and the
    next record of the same aggregate no longer chains to this one."""
    stream, version, topic, state = raw.row(sequence)
    stored = msgspec.json.decode(bytes(state))
    envelope = msgspec.json.decode(stored["envelope"])
    sig = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
    sig[0] ^= 1
    envelope["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    stored["envelope"] = msgspec.json.encode(envelope).decode()
    raw.set_row(sequence, (stream, version, topic, msgspec.json.encode(stored)))
    for table in TABLES:
        raw.sql(f"DELETE FROM {table}")
    MerkleLog(app).integrate()


@pytest.mark.parametrize("chunk", CHUNKS)
def test_an_untouched_ledger_verifies_in_any_chunk_size(
    ledger: tuple[LedgerApplication, RawStore], chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, raw = ledger
    monkeypatch.setattr(verification, "CHUNK", chunk)
    report = verify(app)
    assert report.failure is None, report.failure
    assert report.records == report.leaves == raw.last()


@pytest.mark.parametrize("chunk", CHUNKS)
def test_a_forged_signature_is_named_before_the_chain_break_it_causes(
    ledger: tuple[LedgerApplication, RawStore], chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, raw = ledger
    forged = raw.last() - 5  # inside the second journey: later records of its aggregate follow
    forge_signature(app, raw, forged)
    monkeypatch.setattr(verification, "CHUNK", chunk)

    failure = verify(app).failure
    assert failure is not None and failure.sequence == forged, failure
    assert "signature does not verify" in failure.reason

    # Without the signature checks, what remains is the later chain break.
    monkeypatch.setattr(BackgroundVerifier, "submit", lambda self, jobs: None)
    later = verify(app).failure
    assert later is not None and later.sequence is not None and later.sequence > forged, later
    assert "chain broken" in later.reason


@pytest.mark.parametrize("chunk", CHUNKS)
def test_a_deleted_row_before_a_forged_signature_is_named_first(
    ledger: tuple[LedgerApplication, RawStore], chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, raw = ledger
    last = raw.last()
    forge_signature(app, raw, last)
    raw.sql("DELETE FROM {table} WHERE {seq} = ?", (last - 20,))
    monkeypatch.setattr(verification, "CHUNK", chunk)
    failure = verify(app).failure
    assert failure is not None and failure.sequence == last - 20 and "missing" in failure.reason
