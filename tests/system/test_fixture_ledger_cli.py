"""The v0.1 fixture ledger through the coi command: verify, history, resent envelopes."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import pytest

from tests.support import FIXTURE_VKEY, coi, copy_fixture_ledger


@pytest.fixture
def old_ledger(tmp_path: Path) -> Path:
    copy_fixture_ledger(tmp_path / "coi-data")
    return tmp_path


def test_the_old_ledger_verifies(old_ledger: Path) -> None:
    done = coi(old_ledger, "verify", "--trusted-key", str(FIXTURE_VKEY))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: 146 records" in done.stdout


def test_the_old_ledger_answers_history(old_ledger: Path) -> None:
    done = coi(old_ledger, "history", PATIENT)
    assert done.returncode == 0, done.stderr
    assert "record_corrected" in done.stdout and "apheresis_collected" in done.stdout


def test_resending_an_old_envelope_is_a_duplicate(old_ledger: Path) -> None:
    with sqlite3.connect(old_ledger / "coi-data" / "ledger.sqlite") as db:
        (state,) = db.execute("SELECT state FROM stored_events WHERE rowid = 30").fetchone()
    envelope = json.loads(state)["envelope"]
    done = coi(old_ledger, "submit", "-", stdin=envelope + "\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "duplicate" in done.stdout


def test_a_re_encoded_old_envelope_is_a_duplicate(old_ledger: Path) -> None:
    """The old ledger's claims hold envelope digests until the first start migrates them."""
    with sqlite3.connect(old_ledger / "coi-data" / "ledger.sqlite") as db:
        (state,) = db.execute("SELECT state FROM stored_events WHERE rowid = 30").fetchone()
    envelope = json.loads(json.loads(state)["envelope"])
    done = coi(old_ledger, "submit", "-", stdin=json.dumps(envelope, indent=1).replace("\n", "") + "\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "duplicate" in done.stdout


PATIENT = "CHW0451260059EM"  # the demo's happy patient, with a correction


def test_the_old_ledger_migrated_verifies_and_never_reuses_a_sequence(old_ledger: Path) -> None:
    migrated = coi(old_ledger, "migrate")
    assert migrated.returncode == 0 and "sqlite-sequences-never-reused" in migrated.stdout, migrated.stderr
    done = coi(old_ledger, "verify", "--trusted-key", str(FIXTURE_VKEY))
    assert done.returncode == 0 and "OK: 146 records" in done.stdout, done.stdout + done.stderr
    # The last record deleted, with what made it a duplicate: sent again, it is a new record.
    with sqlite3.connect(old_ledger / "coi-data" / "ledger.sqlite") as db:
        (state,) = db.execute("SELECT state FROM stored_events WHERE rowid = 146").fetchone()
        envelope = json.loads(state)["envelope"]
        body = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
        db.execute("DELETE FROM stored_events WHERE rowid = 146")
        db.execute("DELETE FROM coi_claims WHERE kind = 'event' AND value = ?", (body["event_id"],))
    done = coi(old_ledger, "submit", "-", stdin=envelope + "\n")
    assert done.returncode == 0 and "seq=147" in done.stdout, done.stdout + done.stderr
