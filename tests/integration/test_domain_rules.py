"""Issue 9 domain rules: people's jobs stay with people, custody only to those who hold
material, corrections within the field's own schema, QC failures and authorised retests,
and event times against the patient's timeline. Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import pytest

from aggregates.base import body_of
from aggregates.therapy import failure_deviation
from ledger.app.application import LedgerApplication, Outcome
from ledger.demo.journeys import Cast, Journey, Step
from ledger.site.signing import Member, envelope, manifestations, registration
from ledger.wire import events as ev
from tests.stores import history
from tests.support import advance, body_dict, new_journey, signed, tag_of


def _later(journey: Journey, hours: float = 1) -> datetime:
    """A time after the journey's last generated step (the journey's own clock)."""
    return journey._at(hours)


def _submit(app: LedgerApplication, cls: type[ev.Body], journey: Journey, actor: Member,
            *cosigners: Member, **fields: Any) -> Outcome:  # fmt: skip
    at = fields.pop("at", None) or _later(journey)
    return app.submit(envelope(cls, actor, at, cosigners, coi=journey.coi, **fields))


def _step(steps: list[Step], tag: str) -> Step:
    return next(s for s in steps if tag_of(s) == tag)


# ------------------------------------------------------------- 4: people and custodians


def test_a_device_cannot_be_registered_with_the_qa_or_admin_role(
    registered: LedgerApplication, cast: Cast
) -> None:
    for role in ("qa", "admin"):
        device = Member.new(f"robot.{role}", "Robot", "device", (role,), "US-SSF")
        outcome = registered.submit(registration(cast.admin, device, _later(new_journey(cast))))
        assert (outcome.code, outcome.field) == ("person_required", "kind"), outcome


def test_a_devices_manifestation_is_refused_even_with_a_persons_name(
    registered: LedgerApplication, cast: Cast
) -> None:
    journey = new_journey(cast)
    advance(registered, journey, before="qc_sample_taken")
    device = cast["cellq.ssf"]
    at = _later(journey)
    forged = manifestations([cast["qa.ssf"]], "qc_sample_taken", at)
    body = body_dict(
        envelope(ev.QcSampleTaken, device, at, coi=journey.coi, batch_id=f"B-{journey.coi}",
                 sample_id="S-x", manifestations=[])
    )  # fmt: skip
    body["manifestations"] = [
        {"principal": device.principal_id, "printed_name": m.printed_name, "signed_at": at.isoformat(),
         "meaning": "approved"}
        for m in forged
    ]  # fmt: skip
    outcome = registered.submit(signed(body, device))
    assert (outcome.code, outcome.field) == ("person_required", "manifestations"), outcome


@pytest.mark.parametrize(
    ("witness", "code"), [("logger.wc", "person_required"), ("courier.wc", "role_not_allowed")]
)
def test_the_bedside_witness_is_a_treating_person(
    registered: LedgerApplication, cast: Cast, witness: str, code: str
) -> None:
    journey = new_journey(cast)
    rest = advance(registered, journey, before="bedside_identity_verified")
    proof = body_dict(rest[0])["patient_proof"]
    outcome = _submit(
        registered, ev.BedsideIdentityVerified, journey, cast["nurse.bdw"], cast[witness],
        unit_id=f"P-{journey.coi}-1", patient_proof=proof, witness=witness,
    )  # fmt: skip
    assert (outcome.code, outcome.field) == (code, "witness"), outcome


@pytest.mark.parametrize("taker", ["admin.root", "shuttle.ssf", "analyst.ssf"])
def test_custody_goes_only_to_a_person_who_holds_material(
    registered: LedgerApplication, cast: Cast, taker: str
) -> None:
    journey = new_journey(cast)
    advance(registered, journey, before="disposition")
    outcome = _submit(
        registered, ev.CustodyTransferred, journey, cast["recv.ssf"], cast[taker],
        unit_ids=[f"P-{journey.coi}-1"], from_custodian="recv.ssf", to_custodian=taker,
        location="bay", condition="intact",
    )  # fmt: skip
    assert (outcome.code, outcome.field) == ("not_a_custodian", "to_custodian"), outcome


# ------------------------------------------------------------------ 8: corrections


@pytest.mark.parametrize(
    ("tag", "field", "new", "code"),
    [
        ("apheresis_collected", "volume_ml", "banana", "invalid_value"),
        ("apheresis_collected", "volume_ml", "-5", "invalid_value"),
        ("apheresis_collected", "started_at", "not a time", "invalid_value"),
        ("apheresis_collected", "ended_at", "2000-01-01T00:00:00Z", "interval_out_of_order"),  # < started_at
        ("apheresis_collected", "ended_at", "2999-01-01T00:00:00Z", "interval_out_of_order"),  # > occurred_at
        ("custody_transferred", "location", "x" * 100_000, "invalid_value"),
    ],
)
def test_a_corrected_value_must_satisfy_the_fields_schema(
    registered: LedgerApplication, cast: Cast, tag: str, field: str, new: str, code: str
) -> None:
    journey = new_journey(cast)
    steps = list(journey.steps())
    advance(registered, steps, before="record_corrected")
    target = _step(steps, tag)
    value = getattr(body_of(target.envelope.decode()), field)
    old_text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    outcome = _submit(
        registered, ev.RecordCorrected, journey, cast["qa.ssf"], corrects_event_id=target.event_id,
        field=field, old_value=old_text, new_value=new, reason="transcription error",
    )  # fmt: skip
    assert (outcome.code, outcome.field) == (code, "new_value"), outcome


@pytest.mark.parametrize(
    ("tag", "field"),
    [
        ("enrolled", "order_id"),
        ("enrolled", "treatment_site"),
        ("apheresis_collected", "product_code"),
        ("qc_result_recorded", "result"),
        ("custody_transferred", "to_custodian"),
    ],
)
def test_only_documented_fields_are_correctable(
    registered: LedgerApplication, cast: Cast, tag: str, field: str
) -> None:
    journey = new_journey(cast)
    steps = list(journey.steps())
    advance(registered, steps, before="record_corrected")
    target = _step(steps, tag)
    old = body_dict(target)[field]
    outcome = _submit(
        registered, ev.RecordCorrected, journey, cast["qa.ssf"], corrects_event_id=target.event_id,
        field=field, old_value=str(old), new_value="X1", reason="transcription error",
    )  # fmt: skip
    assert (outcome.code, outcome.field) == ("not_correctable", "field"), outcome


# ---------------------------------------------------------- 9: QC failure and retest


def _failed_sterility(app: LedgerApplication, cast: Cast) -> tuple[Journey, list[Step]]:
    journey = new_journey(cast, "qc_failure")
    steps = list(journey.steps())
    advance(app, steps, before="disposition")
    return journey, steps


def _qc(app: LedgerApplication, journey: Journey, cast: Cast, passed: bool) -> Outcome:
    return _submit(
        app, ev.QcResultRecorded, journey, cast["cellq.ssf"], batch_id=f"B-{journey.coi}",
        sample_id=f"S-{journey.coi}", test="sterility", method="retest", specification="conforms",
        result="conforms" if passed else "growth", passed=passed,
    )  # fmt: skip


def test_a_failed_release_test_opens_a_deviation_and_a_retest_needs_qas_authorisation(
    registered: LedgerApplication, cast: Cast
) -> None:
    journey, steps = _failed_sterility(registered, cast)
    failed = next(s for s in steps if tag_of(s) == "qc_result_recorded" and not body_dict(s)["passed"])
    deviation = failure_deviation(failed.event_id)
    outcome = _qc(registered, journey, cast, passed=True)
    assert (outcome.code, outcome.field) == ("retest_not_authorised", "test"), outcome
    # A retest authorisation must name the deviation the failure opened.
    wrong = _submit(
        registered, ev.RetestAuthorised, journey, cast["qa.ssf"], batch_id=f"B-{journey.coi}",
        deviation_id="D-nothing", test="sterility", reason="sampling error suspected",
    )  # fmt: skip
    assert wrong.code == "retest_not_authorised", wrong
    ok = _submit(
        registered, ev.RetestAuthorised, journey, cast["qa.ssf"], batch_id=f"B-{journey.coi}",
        deviation_id=deviation, test="sterility", reason="sampling error suspected",
    )  # fmt: skip
    assert ok.status == "accepted", ok
    assert _qc(registered, journey, cast, passed=True).status == "accepted"
    # One authorisation, one retest.
    assert _qc(registered, journey, cast, passed=True).code == "retest_not_authorised"
    release = dict(batch_id=f"B-{journey.coi}", decision="released")
    assert _submit(registered, ev.Disposition, journey, cast["qa.ssf"], **release).code == "open_deviation"
    closed = _submit(
        registered, ev.DeviationClosed, journey, cast["qa.ssf"], deviation_id=deviation,
        outcome="investigation: sampling contamination; retest conforms",
    )  # fmt: skip
    assert closed.status == "accepted", closed
    assert _submit(registered, ev.Disposition, journey, cast["qa.ssf"], **release).status == "accepted"
    rows = history(registered, journey.coi)
    first = next(r for r in rows if r.type == "qc_result_recorded" and r.details.get("passed") is False)
    assert any(deviation in note for note in first.flags), first


def test_an_open_deviation_never_blocks_a_rejection(registered: LedgerApplication, cast: Cast) -> None:
    journey, _ = _failed_sterility(registered, cast)
    rejection = dict(batch_id=f"B-{journey.coi}", decision="rejected")
    unexplained = _submit(registered, ev.Disposition, journey, cast["qa.ssf"], **rejection)
    assert (unexplained.code, unexplained.field) == ("reason_required", "reason"), unexplained
    rejected = _submit(
        registered, ev.Disposition, journey, cast["qa.ssf"], **rejection, reason="sterility failed"
    )
    assert rejected.status == "accepted", rejected
    assert [s.meaning for s in history(registered, journey.coi)[-1].signatures] == ["rejected"]


# ------------------------------------------------------------- 12: times and holds


def test_a_step_cannot_be_dated_before_the_steps_it_depends_on(
    registered: LedgerApplication, cast: Cast
) -> None:
    journey = new_journey(cast)
    steps = list(journey.steps())
    rest = advance(registered, steps, before="infused")
    collected = body_dict(_step(steps, "apheresis_collected"))
    early = datetime.fromisoformat(collected["occurred_at"]) - 2 * journey.hour
    infusion = body_dict(rest[0])
    outcome = _submit(
        registered, ev.Infused, journey, cast["nurse.bdw"], at=early, unit_id=infusion["unit_id"],
        thaw_started_at=early,
    )  # fmt: skip
    assert (outcome.code, outcome.field) == ("before_prerequisite", "occurred_at"), outcome


def test_a_step_dated_inside_a_released_hold_is_refused(registered: LedgerApplication, cast: Cast) -> None:
    journey = new_journey(cast, "excursion")
    steps = list(journey.steps())
    released = next(i for i, s in enumerate(steps) if tag_of(s) == "hold_released")
    advance(registered, steps[: released + 1])
    refused = next(s for s in steps if s.expect == "unit_on_hold")
    assert registered.submit(refused.envelope).code == "unit_on_hold"  # the hold is released now


def test_a_label_cannot_be_applied_to_a_held_bag(registered: LedgerApplication, cast: Cast) -> None:
    journey = new_journey(cast)
    rest = advance(registered, journey, before="label_applied")
    bag = f"BAG-{journey.coi}"
    held = _submit(
        registered, ev.HoldPlaced, journey, cast["nurse.bdw"], hold_id="H-bag", unit_ids=[bag],
        reason="bag seal in doubt",
    )  # fmt: skip
    assert held.status == "accepted", held
    applied = body_dict(rest[0])
    outcome = _submit(
        registered, ev.LabelApplied, journey, cast["nurse.bdw"], label_id=applied["label_id"], unit_id=bag
    )
    assert (outcome.code, outcome.field) == ("unit_on_hold", "unit_id"), outcome


def test_a_late_excursion_is_accepted_flags_what_it_covers_and_blocks_what_follows(
    registered: LedgerApplication, cast: Cast
) -> None:
    journey = new_journey(cast)
    steps = list(journey.steps())
    rest = advance(registered, steps, before="bedside_identity_verified")
    received = body_dict(_step(steps, "shipment_received"))
    handover = next(
        s for s in steps if tag_of(s) == "custody_transferred" and body_dict(s)["to_custodian"] == "nurse.bdw"
    )
    during = datetime.fromisoformat(body_dict(handover)["occurred_at"]) - journey.hour / 2
    late = _submit(
        registered, ev.TemperatureExcursion, journey, cast["logger.wc"], at=during,
        shipment_id=received["shipment_id"], logger_id="LOG-77", celsius=-140.0, limit_celsius=-150.0,
        duration_s=600,
    )  # fmt: skip
    assert late.status == "accepted", late
    assert registered.submit(rest[0].envelope).code == "unit_on_hold"
    rows = {r.type: r for r in history(registered, journey.coi)}
    assert any("hold" in n for n in rows["shipment_received"].flags), rows["shipment_received"]
    assert any("deviation" in n for n in rows["temperature_excursion"].flags)
