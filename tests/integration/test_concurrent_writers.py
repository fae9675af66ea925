"""Two `coi submit` processes on one ledger, sending the same envelopes at once: every line
is stored exactly once, both report success, and neither prints a traceback."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.app import log
from ledger.app.application import LedgerApplication
from ledger.app.log import MerkleLog
from ledger.demo.journeys import Cast
from ledger.transparency.checkpoint import NoteSigner
from tests.support import new_journey


def test_an_integrator_overtaken_by_another_carries_on(
    store_url: str, registered: LedgerApplication, cast: Cast, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay and a `coi submit` integrate the same ledger: the one overtaken between two
    chunks finds the leaves it was about to write already there and carries on."""
    steps = [s for i in range(3) for s in new_journey(cast, "happy", i).steps() if s.expect is None]
    assert all(o.status == "accepted" for o in registered.submit_many(s.envelope for s in steps))
    monkeypatch.setattr(log, "READ_CHUNK", 10)  # several chunks from a small ledger
    mine, other = MerkleLog(registered), MerkleLog(LedgerApplication(store_url))
    overtaken: list[int] = []

    def overtake(size: int) -> None:
        if not overtaken:
            overtaken.append(other.integrate())

    size = mine.integrate(progress=overtake)
    assert overtaken and size == overtaken[0] == registered.recorder.max_notification_id()
    checkpoint = mine.checkpoint(NoteSigner("test.log", Ed25519PrivateKey.generate()), "test.log")
    assert checkpoint.size == size
