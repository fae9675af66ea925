"""A ledger written by an earlier version (tests/fixtures/ledger-v0.1) must always open,
verify and answer, and resending one of its envelopes stays a duplicate."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from uuid import UUID

import msgspec
import pytest

from ledger.app.application import LedgerApplication
from ledger.demo.journeys import Cast
from projections.history import history
from tests.stores import RawStore
from tests.support import advance, body_dict, copy_fixture_ledger, new_journey, signed
from tests.test_cli import coi

PATIENT = "CHW0451260059EM"  # the demo's happy patient, with a correction


@pytest.fixture
def old_ledger(tmp_path: Path) -> Path:
    copy_fixture_ledger(tmp_path / "coi-data")
    return tmp_path


def test_the_old_ledger_verifies(old_ledger: Path) -> None:
    done = coi(old_ledger, "verify")
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


def test_a_record_accepted_before_a_constraint_existed_still_replays(
    store_url: str, registered: LedgerApplication, cast: Cast
) -> None:
    """v0.1 took any treatment_site and the nil UUID as an event id; the door refuses both
    now, but a patient enrolled so must stay loadable: replay reads bodies as accepted."""
    journey = new_journey(cast)
    steps = list(journey.steps())
    advance(registered, steps, before="label_printed")
    raw = RawStore(store_url)
    sequence = raw.last()
    stream, version, topic, state = raw.row(sequence)
    stored = msgspec.json.decode(bytes(state))
    old = {**body_dict(steps[0]), "treatment_site": "Bridgewater General", "event_id": str(UUID(int=0))}
    assert registered.submit(signed(old, cast["coord.bdw"])).code == "invalid_value"  # the door
    stored["envelope"] = signed(old, cast["coord.bdw"]).decode()
    raw.set_row(sequence, (stream, version, topic, msgspec.json.encode(stored)))

    later = LedgerApplication(store_url)  # nothing cached: the patient is loaded from the store
    assert later.submit(steps[1].envelope).status == "accepted"
    (enrolment, *_) = history(later, journey.coi)
    assert "treatment_site=Bridgewater General" in enrolment.details
