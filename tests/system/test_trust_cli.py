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
    assert f"TRUST ON FIRST USE: log {origin}, {origin} key {key_id}" in first.stderr
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
    assert "TRUSTED for coi-ledger.local/log: coi-ledger.local/log key ca87303d" in moved.stderr
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
