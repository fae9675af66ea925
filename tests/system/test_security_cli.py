"""`coi security log|watch|unlock` as a user runs them: refusals logged with their source, a
key locked after the policy's threshold of authenticated failures, alerts, and an unlock."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from tests.support import FIXTURE_VKEY, coi, coi_here, copy_fixture_ledger

THRESHOLD = 5  # the policy's default


def _overreach(
    tmp: Path,
    i: int,
    nurse: str = "nurse.kim",
    keys: str = "keys",
    passphrase: str = "correct horse",
    site: str = "US-SSF",
) -> str:
    """A nurse releasing a hold, which only QA may: signed, so an authenticated failure."""
    body = tmp / f"hold{i}.json"
    body.write_text(
        json.dumps(
            {"type": "hold_released", "coi": "CHW04512600A0B1", "site": site, "actor": nurse,
             "hold_id": f"H-{i}", "reason": "tried"}
        )
    )  # fmt: skip
    key = str(tmp / "coi-data" / keys / f"{nurse}.key")
    signed = coi_here(tmp, "sign", "--key", key, str(body), passphrase=passphrase)
    assert signed.returncode == 0, signed.stderr
    return signed.stdout


def test_security_log_watch_and_unlock(tmp_path: Path) -> None:
    keys = tmp_path / "coi-data" / "keys"
    assert (
        coi_here(
            tmp_path, "init", "--admin", "admin.jane", "--name", "Jane Admin", "--site", "US-SSF"
        ).returncode
        == 0
    )
    assert (
        coi_here(tmp_path, "keys", "new", "--principal", "nurse.kim", "--name", "Kim Nurse").returncode == 0
    )
    added = coi_here(
        tmp_path, "principals", "add", "--admin-key", str(keys / "admin.jane.key"),
        "--public-key", str(keys / "nurse.kim.key.pub"), "--role", "enrolment", "--site", "US-SSF",
        "--bind-site", "US-SSF",
    )  # fmt: skip
    assert added.returncode == 0, added.stdout + added.stderr
    assert coi(tmp_path, "security", "watch", "--once").returncode == 0
    made = coi(
        tmp_path, "security", "service", "--admin-key", str(keys / "admin.jane.key"), "--site", "US-SSF"
    )
    assert made.returncode == 2 and "made already" in made.stderr  # coi init made it

    first = _overreach(tmp_path, 0)
    # the same refused envelope submitted again and again counts once
    again = coi(tmp_path, "submit", "-", stdin=first * (THRESHOLD + 1))
    assert again.returncode == 2 and again.stdout.count("role_not_allowed") == THRESHOLD + 1
    watched = coi(tmp_path, "security", "watch", "--once")
    assert watched.returncode == 0, watched.stdout
    assert "no threshold crossed" in watched.stdout

    rest = "".join(_overreach(tmp_path, i) for i in range(1, THRESHOLD))
    crossing = coi(tmp_path, "submit", "-", stdin=rest)
    assert crossing.returncode == 2 and "is now LOCKED (key_locked)" in crossing.stdout, crossing.stdout
    locked = coi(tmp_path, "submit", "-", stdin=_overreach(tmp_path, 99))
    assert "key_locked" in locked.stdout, locked.stdout

    logged = coi(tmp_path, "security", "log", "--principal", "nurse.kim", "--format", "csv")
    assert logged.returncode == 0, logged.stderr
    rows = list(csv.DictReader(io.StringIO(logged.stdout)))
    assert [r["code"] for r in rows] == ["role_not_allowed"] * (2 * THRESHOLD) + ["key_locked"]
    assert {r["source"].split(":")[0] for r in rows} == {"cli"}
    assert [r["authenticated"] for r in rows[-2:]] == ["yes", "no"]
    assert len({r["payload_sha256"] for r in rows[:-1]}) == THRESHOLD
    assert coi(tmp_path, "security", "log", "--principal", "nobody.here").stdout.strip() == "(no rows match)"

    watched = coi(tmp_path, "security", "watch", "--once")
    assert watched.returncode == 1
    keyid = watched.stdout.split("ALERT key ", 1)[1].split()[0]
    assert keyid.startswith("nurse.kim:") and "is locked" in watched.stdout

    malformed = coi(
        tmp_path, "security", "unlock", "--admin-key", str(keys / "admin.jane.key"), "--keyid", "nobody:0000",
        "--reason", "x", "--site", "US-SSF",
    )  # fmt: skip
    assert malformed.returncode == 2 and "is not a key id: PRINCIPAL:16 hex digits" in malformed.stderr
    unlock = coi(
        tmp_path, "security", "unlock", "--admin-key", str(keys / "admin.jane.key"), "--keyid", keyid,
        "--reason", "retrained on the QA release procedure", "--site", "US-SSF",
    )  # fmt: skip
    assert unlock.returncode == 0, unlock.stdout + unlock.stderr
    assert "principal_key_unlocked" in unlock.stdout
    assert coi(tmp_path, "security", "watch", "--once").returncode == 0
    history = coi(tmp_path, "principals", "history", "nurse.kim")
    assert "key_locked" in history.stdout and "key_unlocked" in history.stdout

    # forgeries from one source alert, and lock no one
    forged = first.replace('"sig":"', '"sig":"AA', 1)
    assert coi(tmp_path, "submit", "-", stdin=forged * 3).returncode == 2
    noisy = coi(tmp_path, "security", "watch", "--once", "--threshold", "3")
    assert (
        noisy.returncode == 1
        and "unauthenticated failures" in noisy.stdout
        and "is locked" not in noisy.stdout
    )
    assert coi(tmp_path, "verify").returncode == 0


def test_an_old_ledger_gets_its_service_principal_and_locks_then_still_verifies(tmp_path: Path) -> None:
    """The v0.1 fixture ledger: migrated, its service principal registered by an administrator,
    a key locked after authenticated failures; every record, old and new, verifies."""
    keys = copy_fixture_ledger(tmp_path / "coi-data") / "demo-keys"
    made = coi(
        tmp_path, "security", "service", "--admin-key", str(keys / "admin.root.key"), "--site", "US-SSF",
        passphrase="demo-passphrase",
    )  # fmt: skip
    assert made.returncode == 0 and "principal_registered" in made.stdout, made.stdout + made.stderr
    signed = "".join(
        _overreach(tmp_path, i, "nurse.bdw", "demo-keys", "demo-passphrase", "US-BDW")
        for i in range(THRESHOLD)
    )
    assert coi(tmp_path, "submit", "-", stdin=signed).returncode == 2
    watched = coi(tmp_path, "security", "watch", "--once")
    assert watched.returncode == 1 and "of nurse.bdw is locked" in watched.stdout, watched.stdout
    done = coi(tmp_path, "verify", "--trusted-key", str(FIXTURE_VKEY))
    assert done.returncode == 0 and "OK: 148 records" in done.stdout, done.stdout + done.stderr
