"""The bedside identity check: a per-patient key derived from a hospital-held salt and the
wristband, so nothing the ledger holds lets anyone forge a match (README: Patient keys)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from aggregates import therapy
from aggregates.base import Context, body_of
from aggregates.policy import RULES_VERSION, Policy
from aggregates.therapy import therapy_uuid
from ledger.app.application import LedgerApplication
from ledger.demo.journeys import Cast
from ledger.demo.run import load_cast
from ledger.site.signing import envelope
from ledger.store.streams import Therapy
from ledger.wire import events as ev
from ledger.wire.patient import (
    Wristband,
    patient_private_key,
    patient_public_key,
    sign_bedside,
)
from tests.stores import history
from tests.support import advance, body_dict, copy_fixture_ledger, new_journey, signed

OLD_MISMATCH = "CHJ0788260059EP"  # v0.1 demo: failed bedside check at Kashiwa, not infused
OLD_HAPPY = "CHW0451260059EM"  # v0.1 demo: matched with the copyable proof, then infused


def test_the_ledger_holds_a_public_key_and_no_identifier(registered: LedgerApplication, cast: Cast) -> None:
    journey = new_journey(cast)
    advance(registered, journey)
    stored = _stored(registered, journey.coi)
    enrolment, bedside = (b for b in stored if b["type"] in ("enrolled", "bedside_identity_verified"))
    assert enrolment["patient_key"] == patient_public_key(journey.salt, journey.wristband)
    assert enrolment["patient_commitment"] is None and bedside["patient_proof"] is None
    assert journey.wristband.mrn not in str(stored) and journey.salt.hex() not in str(stored)


def test_new_records_must_use_the_patient_key(registered: LedgerApplication, cast: Cast) -> None:
    journey = new_journey(cast)
    rest = advance(registered, journey, before="bedside_identity_verified")
    coord, nurse, witness = cast["coord.bdw"], cast["nurse.bdw"], cast["witness.bdw"]

    enrolment = _stored(registered, journey.coi)[0]
    for changes, field, code in (
        ({"patient_key": None}, "patient_key", "missing_field"),
        ({"patient_commitment": "ab" * 32}, "patient_commitment", "invalid_value"),
    ):
        body = {**enrolment, "event_id": str(uuid.uuid4()), "coi": "CHW0451260099ZZ", **changes}
        outcome = registered.submit(signed({k: v for k, v in body.items() if v is not None}, coord))
        assert (outcome.code, outcome.field) == (code, field), outcome

    again = envelope(
        ev.PatientKeyRegistered, coord, datetime.now(UTC), coi=journey.coi,
        patient_key=patient_public_key(bytes(16), journey.wristband),
    )  # fmt: skip
    assert registered.submit(again).code == "patient_key_exists"

    bedside = body_dict(rest[0])
    old_form = {**bedside, "event_id": str(uuid.uuid4()), "patient_proof": "ab" * 32}
    del old_form["patient_signature"]
    outcome = registered.submit(signed(old_form, nurse, witness))
    assert (outcome.code, outcome.field) == ("patient_signature_required", "patient_proof")


def test_a_patient_signature_copied_into_another_bedside_record_is_a_mismatch(
    registered: LedgerApplication, cast: Cast
) -> None:
    journey = new_journey(cast)
    rest = advance(registered, journey, before="infused")
    nurse, witness = cast["nurse.bdw"], cast["witness.bdw"]
    stored = next(b for b in _stored(registered, journey.coi) if b["type"] == "bedside_identity_verified")
    copied = {k: v for k, v in stored.items() if v is not None} | {"event_id": str(uuid.uuid4())}
    assert registered.submit(signed(copied, nurse, witness)).status == "accepted"  # recorded...
    assert registered.submit(rest[0].envelope).code == "identity_mismatch"  # ...as a mismatch


def _stored(app: LedgerApplication, coi: str) -> list[dict[str, Any]]:
    """The bodies of one patient's records, as anyone reading the ledger sees them."""
    return [msgspec.to_builtins(b) for b in _bodies(app, coi)]


# --- patients enrolled before the change (the v0.1 fixture ledger) ------------------


@pytest.fixture
def old(tmp_path: Path) -> Iterator[tuple[LedgerApplication, Cast]]:
    copy_fixture_ledger(tmp_path / "data")
    app = LedgerApplication(f"sqlite:///{tmp_path / 'data' / 'ledger.sqlite'}")
    yield app, load_cast(tmp_path / "data" / "demo-keys")
    app.close()


def _bodies(app: LedgerApplication, coi: str) -> list[ev.Event]:
    return [body_of(e.envelope) for e in app.events.get(therapy_uuid(coi))]  # type: ignore[attr-defined]


def _bedside(cast: Cast, coi: str, **proof: object) -> bytes:
    return envelope(
        ev.BedsideIdentityVerified, cast["nurse.kas"], datetime.now(UTC) - timedelta(minutes=10),
        (cast["witness.kas"],), coi=coi, unit_id=f"P-{coi}-1", witness="witness.kas", **proof,
    )  # fmt: skip


def _infusion(cast: Cast, coi: str) -> bytes:
    at = datetime.now(UTC) - timedelta(minutes=5)
    return envelope(ev.Infused, cast["nurse.kas"], at, coi=coi, unit_id=f"P-{coi}-1", thaw_started_at=at)


def test_a_commitment_copied_from_the_ledger_no_longer_unblocks_infusion(
    old: tuple[LedgerApplication, Cast],
) -> None:
    """The reported attack: the demo's mismatch patient infused after copying the proof."""
    app, cast = old
    enrolment = _bodies(app, OLD_MISMATCH)[0]
    assert isinstance(enrolment, ev.Enrolled)
    forged = app.submit(_bedside(cast, OLD_MISMATCH, patient_proof=enrolment.patient_commitment))
    assert (forged.code, forged.field) == ("patient_signature_required", "patient_proof")
    assert app.submit(_infusion(cast, OLD_MISMATCH)).code == "identity_mismatch"


def test_a_patient_enrolled_before_registers_a_key_then_is_infused(
    old: tuple[LedgerApplication, Cast],
) -> None:
    app, cast = old
    salt, wristband = bytes(range(16)), Wristband("MRN-000003", "Doe", "Pat", "1970-01-04")
    key = patient_private_key(salt, wristband)
    event_id = uuid.uuid4()
    bedside = _bedside(
        cast, OLD_MISMATCH, event_id=event_id,
        patient_signature=sign_bedside(key, OLD_MISMATCH, f"P-{OLD_MISMATCH}-1", event_id),
    )  # fmt: skip
    assert app.submit(bedside).code == "patient_key_missing"
    registration = envelope(
        ev.PatientKeyRegistered, cast["coord.kas"], datetime.now(UTC) - timedelta(minutes=20),
        coi=OLD_MISMATCH, patient_key=patient_public_key(salt, wristband),
    )  # fmt: skip
    assert app.submit(registration).status == "accepted"
    assert app.submit(bedside).status == "accepted"
    assert app.submit(_infusion(cast, OLD_MISMATCH)).status == "accepted"


def test_a_stored_v01_match_still_replays_but_no_longer_allows_a_new_infusion(
    old: tuple[LedgerApplication, Cast],
) -> None:
    app, _ = old
    bodies = _bodies(app, OLD_HAPPY)
    at = next(i for i, b in enumerate(bodies) if isinstance(b, ev.Infused))
    before = app.repository.get(therapy_uuid(OLD_HAPPY), version=at)  # replayed up to the bedside check
    assert isinstance(before, Therapy)
    infusion = bodies[at]
    assert isinstance(infusion, ev.Infused)
    now = Context(infusion.occurred_at, Policy(version=RULES_VERSION))
    refused = therapy.decide(before.state, infusion, now)
    assert refused is not None and refused.code == "identity_not_verified"
    after = app.repository.get(therapy_uuid(OLD_HAPPY))  # the stored infusion still replays
    assert isinstance(after, Therapy) and after.state.units[f"P-{OLD_HAPPY}-1"].infused


def test_history_shows_the_bedside_signature_and_no_empty_v01_fields(
    registered: LedgerApplication, cast: Cast
) -> None:
    journey = new_journey(cast)
    advance(registered, journey)
    rows = {r.type: r for r in history(registered, journey.coi)}
    assert "patient_key" in rows["enrolled"].details
    assert "patient_signature" in rows["bedside_identity_verified"].details
    # An absent v0.1 field says nothing.
    assert "patient_commitment" not in rows["enrolled"].details
    assert "patient_proof" not in rows["bedside_identity_verified"].details


@pytest.mark.parametrize(("variant", "flags"), [("happy", []), ("identity_mismatch", ["MISMATCH:"])])
def test_history_flags_a_bedside_mismatch(
    registered: LedgerApplication, cast: Cast, variant: str, flags: list[str]
) -> None:
    journey = new_journey(cast, variant)
    advance(registered, journey)
    (bedside,) = [r for r in history(registered, journey.coi) if r.type == "bedside_identity_verified"]
    assert [n.split(" ", 1)[0] for n in bedside.flags] == flags
