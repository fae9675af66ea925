"""`coi trust`, trust on first use, each ledger its own origin, keys moved from the old place,
and verifier state kept with the verifier: through the coi command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ledger.audit.trust import TrustStore
from tests.support import FIXTURE_VKEY, coi, coi_here, copy_fixture_ledger


def _origin(tmp: Path) -> str:
    return coi(tmp, "checkpoint").stdout.splitlines()[0]


def test_a_verifier_with_no_trusted_key_fails_and_says_how_to_trust_one(tmp_path: Path) -> None:
    assert coi_here(tmp_path, "demo", "--patients", "1").returncode == 0
    stranger = tmp_path / "stranger"
    done = coi(tmp_path, "verify", COI_CONFIG_DIR=str(stranger))
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("FAILED: no trusted key for the log") and "coi trust add" in done.stdout
    assert "--trust-on-first-use" in done.stdout
    assert not (stranger / "known_logs").exists()


def test_trust_on_first_use_records_the_key_of_the_first_checkpoint_loudly(tmp_path: Path) -> None:
    assert coi_here(tmp_path, "demo", "--patients", "1").returncode == 0
    ((origin, key_id),) = [(e.origin, e.verifier.key_id.hex()) for e in TrustStore().entries()]
    stranger = tmp_path / "stranger"
    first = coi(tmp_path, "verify", "--trust-on-first-use", COI_CONFIG_DIR=str(stranger))
    assert first.returncode == 0 and "OK:" in first.stdout, first.stdout + first.stderr
    assert f"TRUST ON FIRST USE: log {origin}, key {key_id}" in first.stderr
    assert "compare the key id" in first.stderr and f"recorded in {stranger / 'known_logs'}" in first.stderr
    assert [e.verifier.key_id.hex() for e in TrustStore(stranger / "known_logs").entries()] == [key_id]
    again = coi(tmp_path, "verify", COI_CONFIG_DIR=str(stranger))
    assert again.returncode == 0 and "TRUST ON FIRST USE" not in again.stderr
    assert f"origin {origin}: key ids {key_id}" in again.stderr


def test_trust_add_list_remove(tmp_path: Path) -> None:
    assert coi_here(tmp_path, "demo", "--patients", "1").returncode == 0
    (entry,) = json.loads(coi(tmp_path, "trust", "list", "--format", "json").stdout)
    vkey = tmp_path / "ledger.vkey"
    vkey.write_text(entry["verifier_key"] + "\n")
    other = tmp_path / "auditor"
    added = coi(tmp_path, "trust", "add", str(vkey), COI_CONFIG_DIR=str(other))
    assert added.returncode == 0 and f"trusted: log {entry['origin']}" in added.stdout, added.stderr
    assert "already trusted" in coi(tmp_path, "trust", "add", str(vkey), COI_CONFIG_DIR=str(other)).stdout
    listed = coi(tmp_path, "trust", "list", COI_CONFIG_DIR=str(other)).stdout
    assert f"{entry['origin']}  {entry['key_id']}  {entry['verifier_key']}" in listed
    assert coi(tmp_path, "verify", COI_CONFIG_DIR=str(other)).returncode == 0
    assert coi(tmp_path, "trust", "remove", entry["key_id"], COI_CONFIG_DIR=str(other)).returncode == 0
    assert coi(tmp_path, "verify", COI_CONFIG_DIR=str(other)).returncode == 1
    gone = coi(tmp_path, "trust", "remove", entry["key_id"], COI_CONFIG_DIR=str(other))
    assert gone.returncode == 2 and "coi trust list" in gone.stderr
    private = next((Path(TrustStore().path.parent) / "signer").glob("*.key"))
    refused = coi(tmp_path, "trust", "add", str(private))
    assert (
        refused.returncode == 2
        and "private signing key" in refused.stderr
        and "PRIVATE" not in refused.stderr
    )


def test_trusted_keys_from_the_environment(tmp_path: Path) -> None:
    assert coi_here(tmp_path, "demo", "--patients", "1").returncode == 0
    (entry,) = json.loads(coi(tmp_path, "trust", "list", "--format", "json").stdout)
    vkey = tmp_path / "ledger.vkey"
    vkey.write_text(entry["verifier_key"] + "\n")
    done = coi(
        tmp_path, "verify", COI_CONFIG_DIR=str(tmp_path / "empty"), COI_TRUSTED_KEYS=f"/nowhere-else:{vkey}"
    )
    assert done.returncode == 2 and "/nowhere-else" in done.stderr  # every file named is read
    done = coi(tmp_path, "verify", COI_CONFIG_DIR=str(tmp_path / "empty"), COI_TRUSTED_KEYS=str(vkey))
    assert done.returncode == 0 and f"COI_TRUSTED_KEYS: {vkey}" in done.stderr, done.stdout + done.stderr


def test_each_new_ledger_is_a_new_log(tmp_path: Path) -> None:
    """`make clean && make demo`: a new log with a key of its own, not a rollback of the old one."""
    assert coi_here(tmp_path, "demo", "--patients", "1").returncode == 0
    first = _origin(tmp_path)
    shutil.rmtree(tmp_path / "coi-data")
    assert coi_here(tmp_path, "demo", "--patients", "1").returncode == 0
    second = _origin(tmp_path)
    assert (
        first != second and first.startswith("coi-ledger.local/") and second.startswith("coi-ledger.local/")
    )
    assert {e.origin for e in TrustStore().entries()} == {first, second}
    assert coi(tmp_path, "verify").returncode == 0


def test_the_origin_is_chosen_at_creation_and_kept(tmp_path: Path) -> None:
    init = ("init", "--admin", "admin.jane", "--name", "Jane Admin", "--site", "US-SSF")
    assert coi(tmp_path, *init, COI_LOG_ORIGIN="coi-ledger.example/eu").returncode == 0
    assert _origin(tmp_path) == "coi-ledger.example/eu"
    later = coi(tmp_path, "checkpoint", "--sign", COI_LOG_ORIGIN="coi-ledger.example/us")
    assert later.stdout.splitlines()[0] == "coi-ledger.example/eu", later.stderr


def test_incremental_state_is_kept_with_the_verifier(tmp_path: Path, config_dir: Path) -> None:
    assert coi_here(tmp_path, "demo", "--patients", "1").returncode == 0
    assert coi(tmp_path, "verify", "--incremental").returncode == 0
    again = coi(tmp_path, "verify", "--incremental")
    assert again.returncode == 0 and "resumed after" in again.stdout
    (state,) = (config_dir / "verify-state").glob("*.json")
    assert state.name.startswith("coi-ledger.local%2F")
    assert not list((tmp_path / "coi-data").rglob("verify-state*"))


def test_keys_at_the_old_place_are_moved_once_with_a_message(tmp_path: Path, config_dir: Path) -> None:
    data = copy_fixture_ledger(tmp_path / "coi-data")
    moved = coi(tmp_path, "checkpoint")
    assert moved.returncode == 0, moved.stderr
    key = config_dir / "signer" / "coi-ledger.local%2Flog.key"
    assert f"moved the ledger key from {data / 'ledger-key'} to {key}" in moved.stderr
    assert "TRUSTED for coi-ledger.local/log: key ca87303d" in moved.stderr
    assert not (data / "ledger-key").exists() and not (data / "ledger-keys").exists()
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert TrustStore().keys("coi-ledger.local/log") == TrustStore().keys("coi-ledger.local/log")[:1]
    assert FIXTURE_VKEY.read_text().strip() == TrustStore().keys("coi-ledger.local/log")[0].encode()
    once = coi(tmp_path, "checkpoint", "--sign")
    assert once.returncode == 0 and "moved" not in once.stderr
    verified = coi(tmp_path, "verify")
    assert verified.returncode == 0 and "OK: 146 records" in verified.stdout, (
        verified.stdout + verified.stderr
    )


def test_a_new_ledger_under_an_origin_this_signer_signed_is_refused(tmp_path: Path) -> None:
    """A fixed COI_LOG_ORIGIN (docker-compose sets one) after `rm -rf coi-data`: the signer
    remembers that log, so a new ledger under its name could never be signed; init and demo
    refuse and say what to do."""
    fixed = {"COI_LOG_ORIGIN": "tryout.example/log"}
    assert coi_here(tmp_path, "demo", "--patients", "1", **fixed).returncode == 0
    shutil.rmtree(tmp_path / "coi-data")
    again = coi(tmp_path, "demo", "--patients", "1", **fixed)
    assert again.returncode == 2, again.stdout + again.stderr
    assert "already signed the log tryout.example/log" in again.stderr and "COI_LOG_ORIGIN" in again.stderr
    shutil.rmtree(tmp_path / "coi-data")
    init = ("init", "--admin", "admin.jane", "--name", "Jane Admin", "--site", "US-SSF")
    refused = coi(tmp_path, *init, **fixed)
    assert refused.returncode == 2 and "already signed the log" in refused.stderr, refused.stderr
    assert not (tmp_path / "coi-data" / "ledger.sqlite").exists()
    assert coi(tmp_path, *init).returncode == 0  # unset: an origin of its own


def test_a_failed_init_leaves_no_ledger_behind(tmp_path: Path) -> None:
    init = ("init", "--admin", "admin.jane", "--name", "Jane Admin", "--site", "US-SSF")
    short = coi(tmp_path, *init, passphrase="short")
    assert short.returncode == 2 and "Traceback" not in short.stderr, short.stderr
    assert not (tmp_path / "coi-data" / "ledger.sqlite").exists()
    assert coi(tmp_path, *init).returncode == 0


def test_trust_export_writes_the_vkey_others_trust(tmp_path: Path) -> None:
    demo = coi_here(tmp_path, "demo", "--patients", "1")
    assert "coi trust export --out ledger.vkey" in demo.stderr
    (entry,) = TrustStore().entries()
    exported = coi(tmp_path, "trust", "export", "--out", "ledger.vkey")
    assert exported.returncode == 0 and f"key ids {entry.verifier.key_id.hex()}" in exported.stderr
    text = (tmp_path / "ledger.vkey").read_text()
    assert text.startswith("# verifier keys of the log") and entry.verifier.encode() in text.splitlines()
    assert coi(tmp_path, "trust", "export", entry.origin).stdout == text
    auditor = {"COI_CONFIG_DIR": str(tmp_path / "auditor")}
    assert coi(tmp_path, "trust", "add", "ledger.vkey", **auditor).returncode == 0  # its comment line read
    assert coi(tmp_path, "verify", "--trusted-key", "ledger.vkey", **auditor).returncode == 0
    unknown = coi(tmp_path, "trust", "export", "nobody.example/log")
    assert unknown.returncode == 2 and "holds no key of the log nobody.example/log" in unknown.stderr


def test_key_files_and_ids_are_read_alike_everywhere(tmp_path: Path) -> None:
    assert coi_here(tmp_path, "demo", "--patients", "1").returncode == 0
    (entry,) = TrustStore().entries()
    empty = tmp_path / "empty.vkey"
    empty.write_text("# nothing yet\n\n")
    for args in (("verify", "--trusted-key", str(empty)), ("trust", "add", str(empty))):
        done = coi(tmp_path, *args)
        assert done.returncode == 2 and f"{empty}: no verifier key in it" in done.stderr, (args, done.stderr)
    listed = coi(tmp_path, "trust", "list").stdout.splitlines()
    assert listed[0] == "ORIGIN  KEY_ID  VERIFIER_KEY"
    upper = entry.verifier.key_id.hex().upper()
    removed = coi(tmp_path, "trust", "remove", upper)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout == f"removed: log {entry.origin}, key {entry.verifier.key_id.hex()}\n"


def test_checkpoint_with_nothing_new_to_sign_says_so(tmp_path: Path) -> None:
    assert coi_here(tmp_path, "demo", "--patients", "1").returncode == 0
    size = int(coi(tmp_path, "checkpoint").stdout.splitlines()[1])
    again = coi(tmp_path, "checkpoint", "--sign")
    assert again.returncode == 0
    assert f"the latest checkpoint already covers the log (size {size}); nothing new to sign" in again.stderr
    rotated = coi(tmp_path, "checkpoint", "--rotate-key")
    assert rotated.returncode == 0, rotated.stderr
    assert (
        f"already covers the log (size {size}); the new key's first checkpoint, signed by both keys, "
        "comes with the next record" in rotated.stderr
    )
    assert "comes with the next record" in coi(tmp_path, "checkpoint", "--sign").stderr
    early = coi(tmp_path, "checkpoint", "--retire-old-key")
    assert (
        early.returncode == 2 and "no checkpoint signed by both the old and the new key yet" in early.stderr
    )
    nowhere = coi(tmp_path, "checkpoint", "--rotate-key", COI_SIGNER_DIR=str(tmp_path / "no-key"))
    assert nowhere.returncode == 2 and "cannot rotate the ledger key: no ledger key here" in nowhere.stderr


def test_unreadable_keys_at_the_old_place_are_ignored_with_a_warning(tmp_path: Path) -> None:
    """Whatever lies beside the data does not stop a writer: it is said and left alone."""
    assert coi_here(tmp_path, "demo", "--patients", "1").returncode == 0
    data = tmp_path / "coi-data"
    (data / "ledger-key").write_text("not a key\n")
    (data / "ledger-key").chmod(0o600)
    (data / "ledger-keys").mkdir()
    (data / "ledger-keys" / "empty.vkey").write_text("")
    before = TrustStore().entries()
    done = coi(tmp_path, "checkpoint", "--sign")
    assert done.returncode == 0, done.stderr
    assert f"the key at {data / 'ledger-key'} is not used nor moved" in done.stderr
    assert "ignored the verifier keys" in done.stderr  # the trust store holds this log's key already
    assert TrustStore().entries() == before


def test_a_rotation_is_staged_until_the_old_key_is_retired(tmp_path: Path) -> None:
    """Rotate, give the new .vkey to witnesses and auditors, retire the old key: the new key is
    in `coi trust export` at once, and the old one signs until it is retired."""
    assert coi_here(tmp_path, "demo", "--patients", "1").returncode == 0
    none = coi(tmp_path, "checkpoint", "--retire-old-key")
    assert none.returncode == 2 and "no rotation of the ledger key is in progress" in none.stderr
    rotated = coi(tmp_path, "checkpoint", "--rotate-key")
    assert rotated.returncode == 0, rotated.stderr
    new_vkey = rotated.stderr.splitlines()[1]
    assert "then coi checkpoint --retire-old-key" in rotated.stderr
    assert new_vkey in coi(tmp_path, "trust", "export").stdout.splitlines()
    again = coi(tmp_path, "checkpoint", "--rotate-key")
    assert again.returncode == 2 and "in progress already" in again.stderr
    assert coi_here(tmp_path, "demo", "--patients", "1").returncode == 0
    signed = coi(tmp_path, "checkpoint", "--sign").stdout
    assert len([line for line in signed.splitlines() if line.startswith("\u2014 ")]) == 2
    retired = coi(tmp_path, "checkpoint", "--retire-old-key")
    assert retired.returncode == 0 and "retired the old ledger key" in retired.stderr, retired.stderr
    assert coi_here(tmp_path, "demo", "--patients", "1").returncode == 0
    alone = coi(tmp_path, "checkpoint", "--sign").stdout
    assert len([line for line in alone.splitlines() if line.startswith("\u2014 ")]) == 1
