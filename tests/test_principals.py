"""The principal registry: genesis, rotation and revocation replayed against occurred_at."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ledger import events as ev
from ledger.application import LedgerApplication
from ledger.cast import Member, envelope, registration
from ledger.journeys import Cast
from tests.support import advance, new_journey

NOW = datetime.now(UTC)


def _label(member: Member, coi: str, din: str, at: datetime) -> bytes:
    return envelope(ev.LabelPrinted, member, at, coi=coi, label_id=f"L-{at.timestamp()}", din=din)


def _enrol(app: LedgerApplication, cast: Cast) -> tuple[str, str]:
    journey = new_journey(cast)
    advance(app, journey, before="label_printed")
    return journey.coi, journey.din


def test_the_first_principal_must_be_a_self_registered_administrator(app: LedgerApplication) -> None:
    nurse = Member.new("nurse.x", "Nia Nurse", "person", ("collection",), "US-BDW")
    assert app.submit(registration(nurse, nurse, NOW - timedelta(days=1))).code == "no_administrator"
    admin = Member.new("admin.x", "Ada Admin", "person", ("admin",), "US-SSF")
    assert app.submit(registration(admin, admin, NOW - timedelta(days=1))).status == "accepted"
    # Once there is an administrator nobody registers themselves.
    rogue = Member.new("admin.y", "Rogue", "person", ("admin",), "US-SSF")
    assert app.submit(registration(rogue, rogue, NOW - timedelta(days=1))).code == "unknown_key"


def test_rotation_keeps_the_old_key_valid_for_what_it_signed_before(
    registered: LedgerApplication, cast: Cast
) -> None:
    coi, din = _enrol(registered, cast)
    nurse = cast["nurse.bdw"]
    rotated = Member.new(nurse.principal_id, nurse.printed_name, "person", nurse.roles, nurse.site)
    switch = NOW - timedelta(days=2)
    rotation = envelope(
        ev.PrincipalKeyRotated, cast.admin, switch, principal_id=nurse.principal_id,
        public_key=rotated.public_key, valid_from=switch,
    )  # fmt: skip
    assert registered.submit(rotation).status == "accepted"
    # Events that occurred before the switch still verify with the old key ...
    assert registered.submit(_label(nurse, coi, din, switch - timedelta(hours=1))).status == "accepted"
    # ... after it the old key has expired and the new one signs.
    assert registered.submit(_label(nurse, coi, din, switch + timedelta(hours=1))).code == "key_expired"
    assert registered.submit(_label(rotated, coi, din, switch + timedelta(hours=1))).status == "accepted"
    assert (
        registered.submit(_label(rotated, coi, din, switch - timedelta(hours=1))).code == "key_not_yet_valid"
    )


def test_revocation_needs_a_reason_and_applies_from_its_effective_time(
    registered: LedgerApplication, cast: Cast
) -> None:
    coi, din = _enrol(registered, cast)
    nurse = cast["nurse.bdw"]
    lost = NOW - timedelta(days=1)
    body = {"principal_id": nurse.principal_id, "effective_at": lost}
    assert registered.submit(envelope(ev.PrincipalRevoked, cast.admin, NOW, **body)).code == "reason_required"
    revoke = envelope(ev.PrincipalRevoked, cast.admin, NOW, reason="laptop stolen", **body)
    assert registered.submit(revoke).status == "accepted"
    assert registered.submit(_label(nurse, coi, din, lost - timedelta(hours=1))).status == "accepted"
    assert registered.submit(_label(nurse, coi, din, lost + timedelta(hours=1))).code == "key_revoked"


def test_only_administrators_change_the_registry(registered: LedgerApplication, cast: Cast) -> None:
    newcomer = Member.new("new.one", "New One", "person", ("qa",), "US-SSF")
    raw = registration(cast["qa.ssf"], newcomer, NOW - timedelta(hours=1))
    assert registered.submit(raw).code == "role_not_allowed"


def test_a_person_signature_without_its_manifestation_is_refused(
    registered: LedgerApplication, cast: Cast
) -> None:
    coi, din = _enrol(registered, cast)
    raw = envelope(
        ev.LabelPrinted, cast["nurse.bdw"], NOW, coi=coi, label_id="L-m", din=din, manifestations=[]
    )
    assert registered.submit(raw).code == "missing_manifestation"


def test_a_two_person_step_needs_both_signatures(registered: LedgerApplication, cast: Cast) -> None:
    coi, _ = _enrol(registered, cast)
    raw = envelope(
        ev.CustodyTransferred, cast["nurse.bdw"], NOW, coi=coi, unit_ids=["BAG-x"],
        from_custodian="nurse.bdw", to_custodian="courier.wc", location="dock", condition="intact",
    )  # fmt: skip
    outcome = registered.submit(raw)
    assert (outcome.code, outcome.field) == ("missing_cosignature", "to_custodian")


def test_a_revocation_through_another_writer_counts_from_the_next_batch(
    store_url: str, registered: LedgerApplication, cast: Cast
) -> None:
    coi, din = _enrol(registered, cast)
    other = LedgerApplication(store_url)  # a second ingest on the same store
    nurse = cast["nurse.bdw"]
    assert (
        other.submit(_label(nurse, coi, din, NOW - timedelta(hours=3))).status == "accepted"
    )  # caches nurse
    revoke = envelope(
        ev.PrincipalRevoked, cast.admin, NOW, principal_id=nurse.principal_id,
        effective_at=NOW - timedelta(hours=2), reason="badge lost",
    )  # fmt: skip
    assert registered.submit(revoke).status == "accepted"
    assert other.submit(_label(nurse, coi, din, NOW - timedelta(hours=1))).code == "key_revoked"


def test_a_key_changed_in_one_batch_counts_in_the_next_one_prepared_before_it(
    registered: LedgerApplication, cast: Cast
) -> None:
    """submit_many decodes each batch and starts its signature checks before the batch
    ahead of it is stored: a verdict made with the keys known then must not outlive a
    rotation or a revocation stored in between."""
    coi, din = _enrol(registered, cast)
    nurse = cast["nurse.bdw"]
    rotated = Member.new(nurse.principal_id, nurse.printed_name, "person", nurse.roles, nurse.site)
    switch, lost = NOW - timedelta(days=2), NOW - timedelta(days=1)
    registered.batch_size = 2
    outcomes = registered.submit_many(
        [
            # batch 1
            envelope(
                ev.PrincipalKeyRotated, cast.admin, switch, principal_id=nurse.principal_id,
                public_key=rotated.public_key, valid_from=switch,
            ),
            _label(nurse, coi, din, switch - timedelta(hours=1)),
            # batch 2, prepared before batch 1 was stored
            _label(rotated, coi, din, switch + timedelta(hours=1)),  # a key unknown then
            _label(nurse, coi, din, switch + timedelta(hours=1)),  # checked by the old key
            # batch 3
            envelope(
                ev.PrincipalRevoked, cast.admin, NOW, principal_id=nurse.principal_id,
                effective_at=lost, reason="laptop stolen",
            ),
            _label(rotated, coi, din, lost - timedelta(hours=2)),
            # batch 4, prepared before batch 3 was stored
            _label(rotated, coi, din, lost + timedelta(hours=1)),
            _label(rotated, coi, din, lost - timedelta(hours=1)),
        ]
    )  # fmt: skip
    assert [o.code or o.status for o in outcomes] == [
        "accepted", "accepted", "accepted", "key_expired", "accepted", "accepted", "key_revoked", "accepted",
    ]  # fmt: skip
