"""Two `coi submit` processes on one ledger, sending the same envelopes at once: every line
is stored exactly once, both report success, and neither prints a traceback."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
from tests.test_cli import COI


def test_two_submitters_of_the_same_envelopes_store_each_once(
    store_url: str, registered: LedgerApplication, cast: Cast, tmp_path: Path
) -> None:
    steps = [s for i in range(24) for s in new_journey(cast, "happy", i).steps() if s.expect is None]
    source = tmp_path / "envelopes.jsonl"
    source.write_bytes(b"\n".join(s.envelope for s in steps) + b"\n")
    env = {
        **os.environ,
        "COI_DATABASE_URL": store_url,
        "COI_DATA_DIR": str(tmp_path / "coi-data"),
        "COI_CHECKPOINT_EVERY": "200",
    }
    before = registered.recorder.max_notification_id() or 0
    runs = [
        subprocess.Popen(
            [*COI, "submit", "--json", str(source)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=300) for run in runs]
    results = [(run.returncode, out, err) for run, (out, err) in zip(runs, outputs, strict=True)]
    for code, out, err in results:
        assert code == 0 and b"Traceback" not in err, err.decode()[-3000:]
        assert out.count(b"\n") == len(steps)
    statuses = [out.count(b'"accepted"') for _, out, _ in results]
    assert sum(statuses) == len(steps), statuses
    assert (LedgerApplication(store_url).recorder.max_notification_id() or 0) - before >= len(steps)


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
    first = MerkleLog(registered).checkpoint(signer, signer.name)
    one_more = next(iter(new_journey(cast, "happy", 1).steps()))
    assert registered.submit(one_more.envelope).status == "accepted"
    waiting = threading.Event()
    second = MerkleLog(LedgerApplication(store_url), waiting=waiting.set)
    signed: list[int] = []
    with log_lock_held(store_url):
        checkpointer = threading.Thread(
            target=lambda: signed.append(second.checkpoint(signer, signer.name).size)
        )
        checkpointer.start()
        assert waiting.wait(timeout=60)
        assert second.store.latest_checkpoint() == first
    checkpointer.join(timeout=60)
    assert signed == [first.size + 1]
    again = MerkleLog(registered).checkpoint(signer, signer.name)  # nothing new: the same one
    assert again.size == first.size + 1 and len(second.store.checkpoints()) == 2
