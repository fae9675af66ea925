"""Two `coi submit` processes on one ledger, sending the same envelopes at once: every line
is stored exactly once, both report success, and neither prints a traceback."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.app import log
from ledger.app.application import LedgerApplication
from ledger.app.log import MerkleLog
from ledger.demo.journeys import Cast
from ledger.store.sql import LOG_LOCK_KEY
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
    checkpoint = mine.checkpoint(
        NoteSigner("test.log", Ed25519PrivateKey.generate()), "test.log", memory=None
    )
    assert checkpoint.size == size


@contextmanager
def log_lock_held(store_url: str) -> Iterator[None]:
    """The Merkle log's lock, held by someone else (as the relay would, integrating)."""
    if store_url.startswith("postgresql"):
        with psycopg.connect(store_url) as conn:  # one transaction until the block ends
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOG_LOCK_KEY,))
            yield
            conn.rollback()
        return
    conn = sqlite3.connect(store_url.removeprefix("sqlite:///"), isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.rollback()
        conn.close()


def test_a_second_integrator_waits_for_the_first_says_so_then_completes(
    store_url: str, registered: LedgerApplication, cast: Cast
) -> None:
    steps = [s for s in new_journey(cast, "happy", 0).steps() if s.expect is None]
    assert all(o.status == "accepted" for o in registered.submit_many(s.envelope for s in steps))
    top = registered.recorder.max_notification_id()
    waiting = threading.Event()
    second = MerkleLog(LedgerApplication(store_url), waiting=waiting.set)
    done: list[int] = []
    with log_lock_held(store_url):
        integrator = threading.Thread(target=lambda: done.append(second.integrate()))
        integrator.start()
        assert waiting.wait(timeout=60), "the second integrator never said it waits"
        assert integrator.is_alive() and not done
        assert second.store.size() == 0  # nothing written while the other holds the lock
    integrator.join(timeout=60)
    assert done == [top] and second.store.size() == top


def test_a_checkpoint_waits_for_the_integrator_and_none_is_signed_twice(
    store_url: str, registered: LedgerApplication, cast: Cast
) -> None:
    steps = [s for s in new_journey(cast, "happy", 0).steps() if s.expect is None]
    assert all(o.status == "accepted" for o in registered.submit_many(s.envelope for s in steps))
    signer = NoteSigner("test.log", Ed25519PrivateKey.generate())
    first = MerkleLog(registered).checkpoint(signer, signer.name, memory=None)
    one_more = next(iter(new_journey(cast, "happy", 1).steps()))
    assert registered.submit(one_more.envelope).status == "accepted"
    waiting = threading.Event()
    second = MerkleLog(LedgerApplication(store_url), waiting=waiting.set)
    signed: list[int] = []
    with log_lock_held(store_url):
        checkpointer = threading.Thread(
            target=lambda: signed.append(second.checkpoint(signer, signer.name, memory=None).size)
        )
        checkpointer.start()
        assert waiting.wait(timeout=60)
        assert second.store.latest_checkpoint() == first
    checkpointer.join(timeout=60)
    assert signed == [first.size + 1]
    again = MerkleLog(registered).checkpoint(signer, signer.name, memory=None)  # nothing new: the same one
    assert again.size == first.size + 1 and len(second.store.checkpoints()) == 2
