"""Trust roots apart from the data, on SQLite and PostgreSQL: an insider who writes the
database and the data folder can no longer make `coi verify` pass by planting a key beside the
data, nor find the ledger's signing key there to re-sign a rewritten log."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.app import ledgerkey
from ledger.app.application import LedgerApplication
from ledger.app.log import MerkleLog, sign
from ledger.audit.trust import TrustStore
from ledger.demo.journeys import Cast, compressed_run
from ledger.demo.kit import register_cast
from ledger.store.logstore import LogStore
from ledger.transparency.checkpoint import NoteSigner, parse
from tests.stores import RawStore
from tests.support import advance, coi, new_journey, sealed_ledger


@pytest.fixture
def ledger(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cast: Cast
) -> Iterator[tuple[str, NoteSigner]]:
    """A ledger made as `coi init` makes one (its own origin, its key in the signer's folder,
    trusted by this user), journeys under two signed checkpoints."""
    monkeypatch.setenv("COI_DATA_DIR", str(tmp_path / "coi-data"))
    app = LedgerApplication(store_url)
    made = ledgerkey.create(LogStore(app.recorder))
    register_cast(app, cast, compressed_run(datetime.now(UTC)).registered_at)
    advance(app, new_journey(cast, index=0))
    sign(MerkleLog(app))
    advance(app, new_journey(cast, index=1))
    sign(MerkleLog(app))
    app.close()
    yield store_url, made


def _verify(tmp: Path, url: str, *args: str) -> tuple[int, str]:
    done = coi(tmp, "verify", *args, COI_DATABASE_URL=url)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout + done.stderr


def _resign_every_checkpoint(raw: RawStore, signer: NoteSigner) -> None:
    for size, note in raw.sql("SELECT tree_size, note FROM coi_checkpoints"):
        checkpoint, _, _ = parse(note)
        raw.sql("UPDATE coi_checkpoints SET note = ? WHERE tree_size = ?", (checkpoint.sign(signer), size))


def _plant(tmp: Path, raw: RawStore, attacker: NoteSigner) -> None:
    """The attacker's verifier key where the old coi looked (the data folder) and where the
    ledger publishes its keys (its database)."""
    folder = tmp / "coi-data" / "ledger-keys"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{attacker.verifier.key_id.hex()}.vkey").write_text(attacker.verifier.encode() + "\n")
    raw.sql(
        "INSERT INTO coi_ledger_keys VALUES (?, ?)",
        (attacker.verifier.encode(), datetime.now(UTC).isoformat()),
    )


def test_the_ledger_verifies_against_the_trust_store(ledger: tuple[str, NoteSigner], tmp_path: Path) -> None:
    url, genuine = ledger
    code, out = _verify(tmp_path, url)
    assert code == 0 and "OK:" in out, out
    assert (
        f"trust store {TrustStore().path}, origin {genuine.name}: key ids {genuine.verifier.key_id.hex()}"
        in out
    )


def test_a_planted_key_with_every_checkpoint_re_signed_fails(
    ledger: tuple[str, NoteSigner], tmp_path: Path
) -> None:
    url, genuine = ledger
    attacker = NoteSigner(genuine.name, Ed25519PrivateKey.generate())
    raw = RawStore(url)
    _resign_every_checkpoint(raw, attacker)
    _plant(tmp_path, raw, attacker)
    raw.conn.close()
    code, out = _verify(tmp_path, url)
    assert code == 1 and "FAILED at sequence 1: checkpoint at tree size" in out, out
    assert "no signature by a trusted ledger key" in out
    # The genuine key given explicitly is the only root: nothing is added from the data folder.
    genuine_file = tmp_path / "genuine.vkey"
    genuine_file.write_text(genuine.verifier.encode() + "\n")
    code, out = _verify(tmp_path, url, "--trusted-key", str(genuine_file))
    assert code == 1 and "no signature by a trusted ledger key" in out, out
    assert TrustStore().keys(genuine.name) == [genuine.verifier]  # nothing learned from the attacker


def test_a_rewritten_record_finds_no_ledger_key_beside_the_data_and_a_key_of_its_own_fails(
    ledger: tuple[str, NoteSigner], tmp_path: Path
) -> None:
    url, genuine = ledger
    data = tmp_path / "coi-data"
    key = ledgerkey.key_path(genuine.name)
    assert key.exists() and oct(key.stat().st_mode & 0o777) == "0o600"
    assert not key.resolve().is_relative_to(data.resolve())
    beside = [p for p in data.rglob("*") if p.is_file() and p.read_bytes().startswith(b"PRIVATE+KEY+")]
    assert beside == [] and not (data / "ledger-key").exists()
    # So the insider rewrites a record, rebuilds the log over it and signs with a key of their own.
    attacker = NoteSigner(genuine.name, Ed25519PrivateKey.generate())
    raw = RawStore(url)
    stream, version, topic, state = raw.row(20)
    state = bytes(state)
    at = state.index(b"payload") + 30
    raw.set_row(
        20,
        (
            stream,
            version,
            topic,
            state[:at] + (b"A" if state[at : at + 1] != b"A" else b"B") + state[at + 1 :],
        ),
    )
    for table in ("coi_checkpoints", "coi_nodes", "coi_leaves"):
        raw.sql(f"DELETE FROM {table}")
    _plant(tmp_path, raw, attacker)
    raw.conn.close()
    app = LedgerApplication(url)
    MerkleLog(app).checkpoint(attacker, genuine.name, memory=None)
    app.close()
    code, out = _verify(tmp_path, url)
    assert code == 1 and "no signature by a trusted ledger key" in out, out


def test_a_rotation_is_learned_from_the_checkpoint_both_keys_sign(
    ledger: tuple[str, NoteSigner], tmp_path: Path, cast: Cast
) -> None:
    url, old = ledger
    app = LedgerApplication(url)
    new = ledgerkey.rotate(LogStore(app.recorder))
    assert TrustStore().keys(old.name) == [old.verifier]  # the verifier learns it, not the rotation
    advance(app, new_journey(cast, index=2))
    both = sign(MerkleLog(app))
    signed_by = {kid for _, kid, _ in parse(both.note)[2]}
    assert signed_by == {old.verifier.key_id, new.verifier.key_id}
    advance(app, new_journey(cast, index=3))
    only_new = sign(MerkleLog(app))  # the old key retired once both had signed
    assert {kid for _, kid, _ in parse(only_new.note)[2]} == {new.verifier.key_id}
    app.close()
    code, out = _verify(tmp_path, url)
    assert code == 0, out
    assert f"learned: log {old.name}, {old.name} key {new.verifier.key_id.hex()}" in out
    assert f"at size {both.size}; added to {TrustStore().path}" in out
    assert TrustStore().keys(old.name) == [old.verifier, new.verifier]


def test_a_key_that_only_the_ledger_vouches_for_is_not_learned(
    ledger: tuple[str, NoteSigner], tmp_path: Path
) -> None:
    """A key published in the database and signing the latest checkpoint alone, with no
    handover from a trusted key: the log's tail fails."""
    url, genuine = ledger
    attacker = NoteSigner(genuine.name, Ed25519PrivateKey.generate())
    raw = RawStore(url)
    _plant(tmp_path, raw, attacker)
    (size, note) = raw.sql("SELECT tree_size, note FROM coi_checkpoints ORDER BY tree_size DESC")[0]
    raw.sql("UPDATE coi_checkpoints SET note = ? WHERE tree_size = ?", (parse(note)[0].sign(attacker), size))
    raw.conn.close()
    code, out = _verify(tmp_path, url)
    assert code == 1 and f"checkpoint at tree size {size}: no signature by a trusted ledger key" in out, out
    assert "learned" not in out


def test_where_no_key_is_the_log_is_integrated_and_not_signed(
    ledger: tuple[str, NoteSigner], tmp_path: Path, cast: Cast
) -> None:
    url, _ = ledger
    elsewhere = tmp_path / "no-key-here"
    before = RawStore(url)
    (checkpoints,) = before.sql("SELECT COUNT(*) FROM coi_checkpoints")[0]
    app = LedgerApplication(url)
    advance(app, new_journey(cast, index=2))
    app.close()
    done = coi(
        tmp_path, "checkpoint", COI_DATABASE_URL=url, COI_SIGNER_DIR=str(elsewhere), COI_CHECKPOINT_EVERY="1"
    )
    assert done.returncode == 0 and "not signed: no ledger key here" in done.stderr, done.stderr
    asked = coi(tmp_path, "checkpoint", "--sign", COI_DATABASE_URL=url, COI_SIGNER_DIR=str(elsewhere))
    assert asked.returncode == 2 and "not signed: no ledger key here" in asked.stderr, asked.stderr
    assert not elsewhere.exists()  # no key made silently
    assert before.sql("SELECT COUNT(*) FROM coi_checkpoints")[0][0] == checkpoints
    assert before.sql("SELECT MAX(leaf_index) FROM coi_leaves")[0][0] + 1 == before.last()  # integrated
    before.conn.close()


def test_a_ledger_older_than_its_origin_keeps_the_origin_of_its_checkpoints(store_url: str) -> None:
    signer, _ = sealed_ledger(store_url, patients=1)  # signs as "coi-ledger.test/log"
    raw = RawStore(store_url)
    raw.sql("DROP TABLE coi_origin")
    raw.sql("DROP TABLE coi_ledger_keys")
    raw.sql("DELETE FROM coi_schema WHERE name = 'log-origin-and-keys'")
    raw.conn.close()
    app = LedgerApplication(store_url)  # a writer migrates
    assert app.migrations == ["log-origin-and-keys"]
    assert ledgerkey.origin(LogStore(app.recorder)) == signer.name
    app.close()


def test_a_new_ledger_gets_an_origin_of_its_own_once(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    app = LedgerApplication(store_url)
    store = LogStore(app.recorder)
    assert store.origin() is None
    made = ledgerkey.origin(store)
    assert made.startswith("coi-ledger.local/") and made != "coi-ledger.local/log"
    monkeypatch.setenv("COI_LOG_ORIGIN", "coi-ledger.example/eu")
    assert ledgerkey.origin(store) == made  # stored with the ledger: later settings change nothing
    app.close()
