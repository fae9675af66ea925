"""`coi run monitor`: every checkpoint kept outside the ledger, and exit 1 with both notes named
when the log forks or rolls back; polling the ledger (SQLite and PostgreSQL), and following
coi.checkpoints on a real broker with the relay's consistency proofs."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consumers.broker import ensure_topics
from ledger.app import ledgerkey
from ledger.app.application import LedgerApplication
from ledger.app.log import MerkleLog
from ledger.audit.source import StoredCheckpoint
from ledger.demo.harness import Services, wait_until
from ledger.demo.journeys import Cast, compressed_run
from ledger.demo.kit import register_cast
from ledger.site import kafka
from ledger.store.logstore import LogStore
from ledger.transparency.checkpoint import Checkpoint, NoteSigner
from ledger.wire.kafka_topics import Topics
from ledger.wire.messages import SignedCheckpoint
from tests.stores import RawStore
from tests.support import COI, advance, new_journey


def grow(app: LedgerApplication, cast: Cast, signer: NoteSigner, patients: range) -> StoredCheckpoint:
    """These patients' journeys on the ledger, under a new checkpoint signed by `signer`."""
    for i in patients:
        advance(app, new_journey(cast, index=i))
    return MerkleLog(app).checkpoint(signer, signer.name, memory=None)


def monitor(tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`coi run monitor --once` keeping notes in tmp/kept, trusting tmp/ledger.vkey."""
    return subprocess.run(
        [*COI, "run", "monitor", "--state", str(tmp / "kept"), "--trusted-key", str(tmp / "ledger.vkey"),
         "--once", *args],
        capture_output=True, text=True, timeout=120, cwd=tmp,
        env={**os.environ, **homes(tmp), **env},
    )  # fmt: skip


def homes(tmp: Path) -> dict[str, str]:
    """The data folder, and the per-user directories (trust store, signer) in tmp, never the
    real home."""
    return {
        "COI_DATA_DIR": str(tmp / "coi-data"),
        "COI_CONFIG_DIR": str(tmp / "config"),
        "COI_SIGNER_DIR": str(tmp / "signer"),
    }


def kept(tmp: Path) -> list[str]:
    return sorted(p.name for p in (tmp / "kept").glob("*.note"))


# ---------------------------------------------------------------- polling the ledger


@pytest.fixture
def polled(
    store_url: str, cast: Cast, tmp_path: Path
) -> Iterator[tuple[LedgerApplication, NoteSigner, RawStore, list[StoredCheckpoint]]]:
    """A ledger with two checkpoints, both kept by a monitor that polled it."""
    app = LedgerApplication(store_url)
    register_cast(app, cast, compressed_run(datetime.now(UTC)).registered_at)
    signer = NoteSigner("coi-ledger.test/log", Ed25519PrivateKey.generate())
    (tmp_path / "ledger.vkey").write_text(signer.verifier.encode() + "\n")
    first = grow(app, cast, signer, range(2))
    second = grow(app, cast, signer, range(2, 3))
    done = monitor(tmp_path, "--poll", COI_DATABASE_URL=store_url)
    assert done.returncode == 0, done.stderr
    assert f"consistent with size {first.size}" in done.stderr
    assert len(kept(tmp_path)) == 2
    raw = RawStore(store_url)
    yield app, signer, raw, [first, second]
    raw.conn.close()
    app.close()


def test_polling_again_keeps_nothing_twice_and_never_rewrites(
    polled: tuple, store_url: str, tmp_path: Path
) -> None:
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "kept").iterdir()}
    again = monitor(tmp_path, "--poll", COI_DATABASE_URL=store_url)
    assert again.returncode == 0, again.stderr
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "kept").iterdir()} == before


def test_polling_catches_the_tail_cut_with_its_checkpoints(
    polled: tuple, store_url: str, tmp_path: Path
) -> None:
    _, _, raw, (first, second) = polled
    raw.cut_log_tail(first.size)
    done = monitor(tmp_path, "--poll", COI_DATABASE_URL=store_url)
    assert done.returncode == 1, done.stderr
    kept_second = next(p for p in (tmp_path / "kept").iterdir() if f".{second.size:012d}." in p.name)
    assert f"rollback: the ledger holds {first.size} leaves" in done.stderr
    assert str(kept_second) in done.stderr


def test_polling_catches_a_second_root_for_a_kept_size(polled: tuple, store_url: str, tmp_path: Path) -> None:
    _, signer, raw, (_, second) = polled
    forged_root = uuid.uuid4().bytes * 2
    note = Checkpoint(signer.name, second.size, forged_root).sign(signer)  # the insider holds the key
    raw.sql(
        "UPDATE coi_checkpoints SET note = ?, root = ? WHERE tree_size = ?", (note, forged_root, second.size)
    )
    done = monitor(tmp_path, "--poll", COI_DATABASE_URL=store_url)
    assert done.returncode == 1, done.stderr
    assert f"fork: two checkpoints of {signer.name} for tree size {second.size}" in done.stderr
    evidence = next(p for p in (tmp_path / "kept").iterdir() if ".fork-" in p.name)
    assert evidence.read_text() == note and str(evidence) in done.stderr
    # The fork stands: a monitor started again on the archive says so again.
    assert monitor(tmp_path, "--poll", COI_DATABASE_URL=store_url).returncode == 1


def test_polling_catches_history_rewritten_and_re_signed(
    polled: tuple, store_url: str, cast: Cast, tmp_path: Path
) -> None:
    app, signer, raw, (_, second) = polled
    raw.rewrite_last_record()
    advance(app, new_journey(cast, index=3))
    raw.resign_log(app, signer)  # one checkpoint of the whole rewritten log, larger than any kept
    grown = MerkleLog(app).store.latest_checkpoint()
    assert grown is not None and grown.size > second.size
    done = monitor(tmp_path, "--poll", COI_DATABASE_URL=store_url)
    assert done.returncode == 1, done.stderr
    assert f"the checkpoint at tree size {grown.size}" in done.stderr
    assert f"is not consistent with the one kept at {second.size}" in done.stderr


def test_a_running_monitor_keeps_new_checkpoints_and_stops_at_a_rollback(
    polled: tuple, store_url: str, cast: Cast, tmp_path: Path
) -> None:
    app, signer, raw, (first, second) = polled
    command = [*COI, "run", "monitor", "--state", str(tmp_path / "kept"), "--trusted-key",
               str(tmp_path / "ledger.vkey"), "--poll", "--interval", "0.2"]  # fmt: skip
    env = {**os.environ, **homes(tmp_path), "COI_DATABASE_URL": store_url}
    with subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) as running:
        try:
            third = grow(app, cast, signer, range(3, 4))
            wait_until(lambda: len(kept(tmp_path)) == 3, 30, f"the checkpoint at {third.size} kept")
            raw.cut_log_tail(first.size)
            assert running.wait(30) == 1
        finally:
            running.kill()
        assert running.stderr is not None
        said = running.stderr.read()
    assert f"at tree size {third.size}" in said and f"consistent with size {second.size}" in said
    assert f"rollback: the ledger holds {first.size} leaves" in said


def test_verify_holds_the_ledger_to_the_monitors_archive(
    polled: tuple, store_url: str, tmp_path: Path
) -> None:
    _, _, raw, (first, second) = polled
    env = {**os.environ, **homes(tmp_path), "COI_DATABASE_URL": store_url}

    def verify(*args: str, **more: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*COI, "verify", "--trusted-key", str(tmp_path / "ledger.vkey"), *args],
                              capture_output=True, text=True, timeout=120, env={**env, **more})  # fmt: skip

    done = verify("--checkpoints", str(tmp_path / "kept"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 checkpoints saved outside it" in done.stdout
    (tmp_path / "empty").mkdir()
    done = verify("--checkpoints", str(tmp_path / "empty"))
    assert done.returncode == 2 and "no saved checkpoints (*.note)" in done.stderr
    first_cut = int(raw.sql("SELECT sequence FROM coi_leaves WHERE leaf_index = ?", (first.size,))[0][0])
    raw.cut_log_tail(first.size)
    newcomer = {"COI_CONFIG_DIR": str(tmp_path / "newcomer")}  # a verifier that kept no checkpoint
    assert verify(**newcomer).returncode == 0  # the ledger alone shows nothing
    assert verify().returncode == 1  # to this verifier, which kept the checkpoint it verified, it does
    done = verify("--checkpoints", str(tmp_path / "kept"), **newcomer)
    assert done.returncode == 1
    assert (
        f"FAILED at sequence {first_cut}: the ledger holds {first.size} records and {first.size} leaves"
        in done.stdout
    )
    assert f".{second.size:012d}.note) commits to {second.size} leaves" in done.stdout


def test_the_monitor_needs_a_trusted_key_and_a_state_dir(
    polled: tuple, store_url: str, tmp_path: Path
) -> None:
    env = {**os.environ, **homes(tmp_path), "COI_DATABASE_URL": store_url}
    env.pop("COI_TRUSTED_KEYS", None)
    done = subprocess.run([*COI, "run", "monitor", "--state", str(tmp_path / "kept"), "--poll"],
                          capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert done.returncode == 2 and "--trusted-key FILE" in done.stderr, done.stderr
    assert "none for the log coi-ledger.test/log" in done.stderr
    done = subprocess.run(
        [*COI, "run", "monitor", "--poll"], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 2 and "--state DIR" in done.stderr
    done = monitor(
        tmp_path, "--poll", "--trusted-key", str(tmp_path / "missing.vkey"), COI_DATABASE_URL=store_url
    )
    assert done.returncode == 2, done.stderr
    assert f"cannot read the verifier key file {tmp_path / 'missing.vkey'}: No such file" in done.stderr
    assert "Errno" not in done.stderr


def test_the_monitor_takes_its_roots_from_the_trust_store_as_verify_does(
    polled: tuple, store_url: str, tmp_path: Path
) -> None:
    _, signer, _, _ = polled
    env = {**os.environ, **homes(tmp_path), "COI_DATABASE_URL": store_url}
    env.pop("COI_TRUSTED_KEYS", None)
    config = tmp_path / "config"
    config.mkdir(exist_ok=True)
    (config / "known_logs").write_text(f"{signer.name} {signer.verifier.encode()}\n")  # the log's origin
    done = subprocess.run([*COI, "run", "monitor", "--state", str(tmp_path / "kept"), "--poll", "--once"],
                          capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"trusted roots: trust store {config / 'known_logs'}" in done.stderr


def test_a_monitor_trusting_another_key_fails_naming_the_note_and_its_key(
    polled: tuple, store_url: str, tmp_path: Path
) -> None:
    _, signer, _, (first, _) = polled
    evil = NoteSigner(signer.name, Ed25519PrivateKey.generate())
    stranger = tmp_path / "stranger"  # a monitor of its own, trusting only the other key
    stranger.mkdir()
    (stranger / "ledger.vkey").write_text(evil.verifier.encode() + "\n")
    done = monitor(stranger, "--poll", COI_DATABASE_URL=store_url)
    assert done.returncode == 1, done.stderr
    assert f"at tree size {first.size}: no signature by a trusted ledger key" in done.stderr
    assert f"signed by key id {signer.verifier.key_id.hex()}" in done.stderr


def test_the_monitor_learns_a_rotated_key_and_keeps_it(
    polled: tuple, store_url: str, cast: Cast, tmp_path: Path
) -> None:
    app, signer, _, _ = polled
    rotated = NoteSigner(signer.name, Ed25519PrivateKey.generate())
    store = LogStore(app.recorder)
    store.add_ledger_keys([rotated.verifier.encode()])  # the ledger publishes the keys it signs with
    advance(app, new_journey(cast, index=3))
    handover = MerkleLog(app).checkpoint([signer, rotated], signer.name, memory=None)
    after = grow(app, cast, rotated, range(4, 5))
    done = monitor(tmp_path, "--poll", COI_DATABASE_URL=store_url)
    assert done.returncode == 0, done.stderr
    assert f"learned key {rotated.verifier.key_id.hex()}" in done.stderr
    assert f"at tree size {handover.size}" in done.stderr
    assert any(f".{after.size:012d}." in name for name in kept(tmp_path))
    # A later run, given the old key only, still trusts the new one: it kept it.
    done = monitor(tmp_path, "--poll", COI_DATABASE_URL=store_url)
    assert done.returncode == 0, done.stderr
    assert f"trusting the learned key {rotated.verifier.key_id.hex()}" in done.stderr


def test_polling_holds_the_ledgers_tree_to_the_largest_note_kept(
    polled: tuple, store_url: str, cast: Cast, tmp_path: Path
) -> None:
    app, _, raw, (first, second) = polled
    raw.cut_log_tail(first.size)
    for i in range(7, 9):
        advance(app, new_journey(cast, index=i))
    MerkleLog(app).integrate()  # the tree grows again, no checkpoint signed (its signer would refuse)
    assert MerkleLog(app).store.size() >= second.size
    done = monitor(tmp_path, "--poll", COI_DATABASE_URL=store_url)
    assert done.returncode == 1, done.stderr
    assert f"rewritten: at tree size {second.size} the tree of the ledger gives another root" in done.stderr
    assert f".{second.size:012d}.note" in done.stderr


def test_verify_passes_over_saved_notes_of_other_logs(polled: tuple, store_url: str, tmp_path: Path) -> None:
    stranger = NoteSigner("elsewhere.example/log", Ed25519PrivateKey.generate())
    (tmp_path / "kept" / "elsewhere.000000000003.note").write_text(
        Checkpoint(stranger.name, 3, bytes(32)).sign(stranger)
    )
    env = {**os.environ, **homes(tmp_path), "COI_DATABASE_URL": store_url}
    done = subprocess.run(
        [*COI, "verify", "--trusted-key", str(tmp_path / "ledger.vkey"), "--checkpoints",
         str(tmp_path / "kept")],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 checkpoints saved outside it" in done.stdout


# ---------------------------------------------------------------- following the broker


def test_following_the_relay_on_the_broker(
    tmp_path: Path, bootstrap: str, cast: Cast, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = Services(tmp_path, bootstrap, Topics(f"t{uuid.uuid4().hex[:8]}."), **homes(tmp_path))
    ensure_topics(bootstrap, stack.topics)
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    stack.register(cast, compressed_run(datetime.now(UTC)).registered_at)  # makes the relay's key
    app = LedgerApplication(stack.ledger_url)
    signer = ledgerkey.signer(ledgerkey.origin(LogStore(app.recorder)))  # the key the relay signs with
    (tmp_path / "ledger.vkey").write_text(signer.verifier.encode() + "\n")
    first = grow(app, cast, signer, range(2))
    second = grow(app, cast, signer, range(2, 3))
    try:
        stack.start("relay")
        seen = kafka.consumer(bootstrap, stack.topics.checkpoints)
        heads: list[SignedCheckpoint] = []

        def published() -> bool:
            heads.extend(msgspec.json.decode(m.value, type=SignedCheckpoint)
                         for batch in seen.poll(timeout_ms=500).values() for m in batch)  # fmt: skip
            return len(heads) >= 2

        wait_until(published, 60, "the relay publishing both checkpoints", stack)
        seen.close()
        assert (heads[1].proof_from, len(heads[1].consistency)) != (0, 0)
        done = monitor(tmp_path)
        assert done.returncode == 0, done.stderr
        assert f"consistent with size {first.size}" in done.stderr
        assert len(kept(tmp_path)) == 2
        # A second root for the size kept last, published on the topic by whoever holds the key.
        forged = Checkpoint(signer.name, second.size, uuid.uuid4().bytes * 2).sign(signer)
        message = SignedCheckpoint(signer.name, second.size, "", forged, proof_from=first.size)
        producer = kafka.producer(bootstrap)
        producer.send(stack.topics.checkpoints, key=signer.name.encode(), value=msgspec.json.encode(message))
        producer.flush()
        producer.close()
        done = monitor(tmp_path)
        assert done.returncode == 1, done.stderr
        assert f"fork: two checkpoints of {signer.name} for tree size {second.size}" in done.stderr
        assert len(kept(tmp_path)) == 3  # the forged note kept too, as evidence
    finally:
        stack.stop()
        app.close()
