"""The signer's memory: never two checkpoints for one tree size, whatever the database went
through (truncated and written again, restored from a backup), and one signer at a time."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.app.application import LedgerApplication
from ledger.app.log import MerkleLog, SigningRefusedError
from ledger.app.signermemory import SignerMemory
from ledger.audit.source import StoredCheckpoint
from ledger.demo.journeys import Cast
from ledger.transparency.checkpoint import NoteSigner
from tests.stores import RawStore
from tests.support import advance, new_journey

ORIGIN = "coi-ledger.test/log"


@pytest.fixture
def signer() -> NoteSigner:
    return NoteSigner(ORIGIN, Ed25519PrivateKey.generate())


@pytest.fixture
def memory(tmp_path: Path) -> SignerMemory:
    return SignerMemory(tmp_path / "signer", ORIGIN)


@pytest.fixture
def raw(store_url: str) -> Iterator[RawStore]:
    store = RawStore(store_url)
    yield store
    store.conn.close()


@pytest.fixture
def signed(
    registered: LedgerApplication, cast: Cast, signer: NoteSigner, memory: SignerMemory
) -> StoredCheckpoint:
    """Two patients' journeys under a checkpoint the signer signed and remembers."""
    for i in range(2):
        advance(registered, new_journey(cast, index=i))
    return MerkleLog(registered).checkpoint(signer, ORIGIN, memory=memory)


def rewritten(store_url: str, cast: Cast, raw: RawStore, signed: StoredCheckpoint, size: int) -> MerkleLog:
    """The ledger's last 5 signed records truncated, with the checkpoints that covered them,
    and new patients' records written, one at a time, until it holds `size` records."""
    raw.truncate(signed.size - 5)
    app = LedgerApplication(store_url)
    for i in range(100, 200):
        for step in new_journey(cast, index=i).steps():
            if raw.count() == size:
                return MerkleLog(app)
            assert app.submit(step.envelope).status == "accepted"
    raise AssertionError("never reached the size")


@pytest.mark.parametrize(
    ("more", "says"),
    [
        (0, "the log of size {size:,} has another root than the checkpoint of size {signed:,}"),
        (3, "the log of size {size:,} does not extend the checkpoint of size {signed:,}"),
    ],
    ids=["same-size", "larger"],
)
def test_a_head_that_does_not_extend_the_signed_one_is_refused(
    store_url: str,
    cast: Cast,
    raw: RawStore,
    signed: StoredCheckpoint,
    signer: NoteSigner,
    memory: SignerMemory,
    more: int,
    says: str,
) -> None:
    """Truncated, then written again to the size signed or past it: never a second checkpoint."""
    log = rewritten(store_url, cast, raw, signed, signed.size + more)
    with pytest.raises(SigningRefusedError) as refused:
        log.checkpoint(signer, ORIGIN, memory=memory)
    message = str(refused.value)
    assert says.format(size=signed.size + more, signed=signed.size) in message
    assert "Do not re-sign" in message and "new origin (coi init)" in message and str(memory.path) in message
    assert log.store.size() == signed.size + more and log.store.checkpoints() == []
    with memory.holding() as remembered:
        assert remembered is not None and remembered.note == signed.note


def test_a_rollback_is_refused_and_the_operator_told_what_to_do(
    store_url: str, raw: RawStore, signed: StoredCheckpoint, signer: NoteSigner, memory: SignerMemory
) -> None:
    raw.truncate(signed.size - 5)  # as a restore from an older backup leaves it
    log = MerkleLog(LedgerApplication(store_url))
    with pytest.raises(SigningRefusedError) as refused:
        log.checkpoint(signer, ORIGIN, memory=memory)
    message = str(refused.value)
    assert (
        f"the log holds {signed.size - 5:,} records but this key signed a checkpoint of size {signed.size:,}"
        in message
    )
    assert "restored from a backup or truncated" in message
    assert f"so the log holds the {signed.size:,} records this key signed again" in message
    assert log.store.checkpoints() == []  # the one that covered them deleted, none signed


def test_a_head_that_extends_the_signed_one_is_signed_and_remembered(
    registered: LedgerApplication,
    cast: Cast,
    signed: StoredCheckpoint,
    signer: NoteSigner,
    memory: SignerMemory,
) -> None:
    advance(registered, new_journey(cast, index=2))
    log = MerkleLog(registered)
    second = log.checkpoint(signer, ORIGIN, memory=memory)
    assert second.size > signed.size
    with memory.holding() as remembered:
        assert remembered is not None and (remembered.size, remembered.note) == (second.size, second.note)


def test_a_crash_between_remembering_and_storing_signs_the_same_head_again(
    store_url: str, raw: RawStore, signed: StoredCheckpoint, signer: NoteSigner, memory: SignerMemory
) -> None:
    # The memory is written first: a crash before the row is stored leaves it ahead.
    raw.sql("DELETE FROM coi_checkpoints WHERE tree_size = ?", (signed.size,))
    again = MerkleLog(LedgerApplication(store_url)).checkpoint(signer, ORIGIN, memory=memory)
    assert (again.size, again.root, again.note) == (signed.size, signed.root, signed.note)


HOLDER = """
import sys
from pathlib import Path
from ledger.app.signermemory import SignerMemory
with SignerMemory(Path(sys.argv[1]), sys.argv[2]).holding():
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_a_second_signer_waits_for_the_one_holding_the_memory(
    store_url: str, registered: LedgerApplication, cast: Cast, signer: NoteSigner, tmp_path: Path
) -> None:
    advance(registered, new_journey(cast, index=0))
    folder = tmp_path / "signer"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), ORIGIN],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline() == "held\n"
        waiting = threading.Event()
        memory = SignerMemory(folder, ORIGIN, waiting=waiting.set)
        log = MerkleLog(LedgerApplication(store_url))
        done: list[StoredCheckpoint] = []
        signing = threading.Thread(target=lambda: done.append(log.checkpoint(signer, ORIGIN, memory=memory)))
        signing.start()
        assert waiting.wait(timeout=60), "the second signer never said it waits"
        assert signing.is_alive() and not done and log.store.latest_checkpoint() is None
        holder.stdin.write("\n")
        holder.stdin.flush()
        signing.join(timeout=60)
        assert len(done) == 1 and log.store.latest_checkpoint() == done[0]
    finally:
        holder.kill()
        holder.wait()


def test_sequence_numbers_are_never_reused_after_the_last_records_are_deleted(
    registered: LedgerApplication, cast: Cast, raw: RawStore, store_url: str
) -> None:
    advance(registered, new_journey(cast, index=0))
    top = raw.last()
    raw.sql("DELETE FROM {table} WHERE {seq} > ?", (top - 3,))
    app = LedgerApplication(store_url)
    outcome = app.submit(next(iter(new_journey(cast, index=1).steps())).envelope)
    assert outcome.status == "accepted" and outcome.sequence == top + 1 == raw.last()
    assert app.recorder.max_notification_id() == top + 1
    gap = raw.sql("SELECT COUNT(*) FROM {table} WHERE {seq} > ? AND {seq} <= ?", (top - 3, top))
    assert gap == [(0,)]
