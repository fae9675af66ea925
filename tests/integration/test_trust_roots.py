"""Trust roots apart from the data, on SQLite and PostgreSQL: an insider who writes the
database and the data folder can no longer make `coi verify` pass by planting a key beside the
data, nor find the ledger's signing key there to re-sign a rewritten log."""

from __future__ import annotations

import shutil
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
from ledger.transparency.cosignature import Cosigner, with_lines
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


def _verify(tmp: Path, url: str, *args: str, **env: str) -> tuple[int, str]:
    done = coi(tmp, "verify", *args, COI_DATABASE_URL=url, **env)
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
    # No record is at fault: the checkpoint is named, with the key that signed it and those trusted.
    assert code == 1 and out.startswith("FAILED: the checkpoint at tree size"), out
    assert (
        f"no signature by a trusted ledger key (signed by key {attacker.verifier.key_id.hex()}; "
        f"trusted: key {genuine.verifier.key_id.hex()})" in out
    )
    assert "(no record was checked: every checkpoint's signature is checked first)" in out
    other = NoteSigner("other.example/log", Ed25519PrivateKey.generate())
    other_file = tmp_path / "other.vkey"
    other_file.write_text(other.verifier.encode() + "\n")
    code, out = _verify(tmp_path, url, "--trusted-key", str(other_file))
    assert code == 1 and f"trusted: key {other.verifier.key_id.hex()} of the log other.example/log)" in out
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


def _signed_by(note: str) -> set[bytes]:
    return {kid for _, kid, _ in parse(note)[2]}


def test_a_staged_rotation_signs_with_both_keys_until_the_old_one_is_retired(
    ledger: tuple[str, NoteSigner], tmp_path: Path, cast: Cast
) -> None:
    """Witnesses that know only the old key keep cosigning until the operator retires it; an
    auditor who trusts only the old key learns the new one from the checkpoints both sign."""
    url, old = ledger
    auditor = tmp_path / "auditor"
    auditor.mkdir()
    shutil.copy(TrustStore().path, auditor / TrustStore().path.name)
    app = LedgerApplication(url)
    store = LogStore(app.recorder)
    with pytest.raises(ledgerkey.RotationError, match="no rotation of the ledger key is in progress"):
        ledgerkey.retire_old_key(store)
    new = ledgerkey.rotate(store)
    assert TrustStore().keys(old.name) == [old.verifier, new.verifier]  # the operator made it: trusted
    with pytest.raises(ledgerkey.RotationError, match="in progress already"):
        ledgerkey.rotate(store)
    with pytest.raises(ledgerkey.RotationError, match="no checkpoint signed by both"):
        ledgerkey.retire_old_key(store)
    both = []
    for index in (2, 3):
        advance(app, new_journey(cast, index=index))
        both.append(sign(MerkleLog(app)))
    assert [_signed_by(c.note) for c in both] == [{old.verifier.key_id, new.verifier.key_id}] * 2
    assert ledgerkey.retire_old_key(store) == old.verifier
    advance(app, new_journey(cast, index=4))
    assert _signed_by(sign(MerkleLog(app)).note) == {new.verifier.key_id}
    app.close()
    code, out = _verify(tmp_path, url, COI_CONFIG_DIR=str(auditor))
    assert code == 0, out
    assert f"learned: log {old.name}, key {new.verifier.key_id.hex()}" in out
    assert f"at size {both[0].size}; added to {auditor / TrustStore().path.name}" in out


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


def _plant_private(tmp: Path, attacker: NoteSigner) -> Path:
    """The attacker's signing key where the old coi kept the ledger's (coi-data/ledger-key)."""
    old = tmp / "coi-data" / "ledger-key"
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_text(attacker.encode() + "\n")
    old.chmod(0o600)
    return old


def test_a_key_planted_at_the_old_place_never_replaces_the_signers_key(
    ledger: tuple[str, NoteSigner], tmp_path: Path
) -> None:
    """The insider plants a key and its verifier key at the old place and re-signs every
    checkpoint with it: the signer's key stays, nothing is trusted, and it is said."""
    url, genuine = ledger
    attacker = NoteSigner(genuine.name, Ed25519PrivateKey.generate())
    key = ledgerkey.key_path(genuine.name)
    before = key.read_bytes()
    raw = RawStore(url)
    _resign_every_checkpoint(raw, attacker)
    _plant(tmp_path, raw, attacker)
    raw.conn.close()
    old = _plant_private(tmp_path, attacker)
    done = coi(tmp_path, "checkpoint", COI_DATABASE_URL=url)
    assert "moved the ledger key" not in done.stderr and "TRUSTED" not in done.stderr, done.stderr
    assert f"the key at {old} is not used nor moved" in done.stderr
    assert "holds a key for" in done.stderr and "ignored the verifier keys" in done.stderr
    assert key.read_bytes() == before and old.exists()
    assert TrustStore().keys(genuine.name) == [genuine.verifier]
    code, out = _verify(tmp_path, url)
    assert code == 1 and "no signature by a trusted ledger key" in out, out


def test_a_planted_key_is_not_moved_where_the_signer_has_none(
    ledger: tuple[str, NoteSigner], tmp_path: Path
) -> None:
    """No key in the signer's folder (a host that lost it, or never had it): a planted key is
    moved only if it signed the log so far and the trust store does not contradict it."""
    url, genuine = ledger
    ledgerkey.key_path(genuine.name).unlink()
    attacker = NoteSigner(genuine.name, Ed25519PrivateKey.generate())
    old = _plant_private(tmp_path, attacker)
    done = coi(tmp_path, "checkpoint", "--sign", COI_DATABASE_URL=url)
    assert done.returncode == 2 and "not signed: no ledger key here" in done.stderr, done.stderr
    assert f"your trust store trusts other keys for {genuine.name}" in done.stderr
    assert not ledgerkey.key_path(genuine.name).exists() and old.exists()
    # With no trust store to contradict it, the checkpoints (and the signer's memory) still do.
    stranger = tmp_path / "stranger"
    done = coi(tmp_path, "checkpoint", "--sign", COI_DATABASE_URL=url, COI_CONFIG_DIR=str(stranger))
    assert done.returncode == 2 and "did not sign the ledger's latest checkpoint" in done.stderr, done.stderr
    assert not (stranger / "known_logs").exists() and old.exists()


def test_a_log_no_signed_checkpoint_covers_fails(ledger: tuple[str, NoteSigner], tmp_path: Path) -> None:
    """Every checkpoint deleted, with the tree: the records are proved by their own signatures alone."""
    url, _ = ledger
    raw = RawStore(url)
    for table in ("coi_checkpoints", "coi_nodes", "coi_leaves"):
        raw.sql(f"DELETE FROM {table}")
    (first,) = raw.sql("SELECT MIN({seq}) FROM {table}")[0]
    (count,) = raw.sql("SELECT COUNT(*) FROM {table}")[0]
    raw.conn.close()
    code, out = _verify(tmp_path, url)
    assert code == 1, out
    assert (
        f"FAILED at sequence {first}: no signed checkpoint covers the log: {count:,} records, from "
        f"sequence {first}, are proved by nothing but their own signatures" in out
    )


def test_records_after_the_latest_checkpoint_are_said_on_a_line_of_their_own(
    ledger: tuple[str, NoteSigner], tmp_path: Path, cast: Cast
) -> None:
    url, _ = ledger
    raw = RawStore(url)
    after = raw.last() + 1
    app = LedgerApplication(url)
    advance(app, new_journey(cast, index=2))
    app.close()
    unsealed = raw.last() - after + 1
    raw.conn.close()
    code, out = _verify(tmp_path, url)
    assert code == 0 and "OK:" in out, out
    assert (
        f"not yet covered: {unsealed} records, from sequence {after}, came after the latest checkpoint" in out
    )


def test_the_verifier_holds_the_ledger_to_the_checkpoints_it_verified_before(
    ledger: tuple[str, NoteSigner], tmp_path: Path, config_dir: Path
) -> None:
    """Its latest checkpoint and the records it covered deleted: a verifier that saw them fails
    the ledger; one that never did passes it (the ledger is consistent with itself)."""
    url, genuine = ledger
    code, out = _verify(tmp_path, url)
    assert code == 0, out
    ((kept_file),) = (config_dir / "checkpoints").rglob("*.note")
    raw = RawStore(url)
    (first_size, latest_size) = [
        s for (s,) in raw.sql("SELECT tree_size FROM coi_checkpoints ORDER BY tree_size")
    ]
    assert kept_file.name == f"{latest_size:012d}.note"
    code, out = _verify(tmp_path, url)
    assert code == 0 and f"held to 1 checkpoint this verifier kept: {kept_file.parent}" in out, out
    assert f"(the latest at tree size {latest_size:,})" in out
    assert "1 checkpoint kept by this verifier" in out and "saved outside it" not in out, out
    # The tail cut back to the first checkpoint, the checkpoint that covered it deleted.
    (cut,) = raw.sql("SELECT sequence FROM coi_leaves WHERE leaf_index = ?", (first_size,))[0]
    raw.sql("DELETE FROM {table} WHERE {seq} >= ?", (cut,))
    raw.sql("DELETE FROM coi_leaves WHERE leaf_index >= ?", (first_size,))
    raw.sql("DELETE FROM coi_checkpoints WHERE tree_size > ?", (first_size,))
    raw.conn.close()
    code, out = _verify(tmp_path, url)
    assert (
        code == 1
        and f"FAILED: the checkpoint at tree size {latest_size} this verifier verified before" in out
    )
    assert f"is gone from the ledger: the log holds {first_size} leaves, fewer than that" in out
    vkey = tmp_path / "genuine.vkey"
    vkey.write_text(genuine.verifier.encode() + "\n")
    code, out = _verify(tmp_path, url, COI_CONFIG_DIR=str(tmp_path / "newcomer"), COI_TRUSTED_KEYS=str(vkey))
    assert code == 0, out


def test_incremental_state_whose_checkpoint_is_gone_fails(
    ledger: tuple[str, NoteSigner], tmp_path: Path, config_dir: Path
) -> None:
    url, _ = ledger
    assert _verify(tmp_path, url, "--incremental")[0] == 0
    shutil.rmtree(config_dir / "checkpoints")  # the notes kept would say it first: the state says it too
    raw = RawStore(url)
    (latest,) = raw.sql("SELECT MAX(tree_size) FROM coi_checkpoints")[0]
    raw.sql("DELETE FROM coi_checkpoints WHERE tree_size = ?", (latest,))
    raw.conn.close()
    code, out = _verify(tmp_path, url, "--incremental")
    assert code == 1, out
    assert f"FAILED: the checkpoint at tree size {latest} this verifier verified before is gone" in out


def test_the_verifier_keeps_the_cosigned_note_and_dates_by_it_when_the_ledger_lost_it(
    ledger: tuple[str, NoteSigner], tmp_path: Path, config_dir: Path
) -> None:
    url, _ = ledger
    witness = Cosigner.generate("witness.test/w1")
    (tmp_path / "w1.vkey").write_text(witness.verifier.encode() + "\n")
    app = LedgerApplication(url)
    store = LogStore(app.recorder)
    latest = store.latest_checkpoint()
    assert latest is not None
    text = latest.note.partition("\n\n")[0] + "\n"
    line = witness.line(text, int(datetime.now(UTC).timestamp()))
    store.set_witnessed(latest.size, with_lines(latest.note, [line]), "now")
    app.close()
    code, out = _verify(tmp_path, url, "--witness-key", str(tmp_path / "w1.vkey"))
    assert code == 0, out
    [kept] = (config_dir / "checkpoints").glob("*/*.note")
    assert line in kept.read_text()
    raw = RawStore(url)
    raw.sql("DELETE FROM coi_witnessed")  # an insider hides what the witnesses saw
    raw.conn.close()
    code, out = _verify(tmp_path, url, "--witness-key", str(tmp_path / "w1.vkey"))
    assert code == 0 and "cosigned by witness.test/w1 at " in out, out
    code, out = _verify(tmp_path, url, "--witness-key", str(tmp_path / "w1.vkey"))
    assert code == 0 and "held to 1 checkpoint this verifier kept" in out, out  # not the plain note again


def test_a_kept_checkpoint_re_signed_with_another_root_names_the_leaves_it_covers(
    ledger: tuple[str, NoteSigner], tmp_path: Path
) -> None:
    url, genuine = ledger
    assert _verify(tmp_path, url)[0] == 0
    raw = RawStore(url)
    raw.rewrite_last_record()
    app = LedgerApplication(url)
    raw.resign_log(app, genuine)  # the insider holds the key: same size, another root
    (size,) = raw.sql("SELECT MAX(tree_size) FROM coi_checkpoints")[0]
    app.close()
    raw.conn.close()
    code, out = _verify(tmp_path, url)
    assert code == 1, out
    assert (
        f"is changed in the ledger: another root for that size, so a record among leaves 0 to {size - 1}"
        in out
    )
