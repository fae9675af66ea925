"""The principal registry: genesis, rotation and revocation; keys judged at the ledger's receipt
time, registration and roles at occurred_at."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from aggregates.policy import LEGACY
from ledger.app.application import LedgerApplication
from ledger.demo.journeys import Cast
from ledger.site.signing import Member, envelope, registration
from ledger.wire import events as ev
from tests.support import advance, new_journey


def _label(member: Member, coi: str, din: str, at: datetime) -> bytes:
    return envelope(ev.LabelPrinted, member, at, coi=coi, label_id=f"L-{uuid.uuid4()}", din=din)


def _enrol(app: LedgerApplication, cast: Cast) -> tuple[str, str]:
    journey = new_journey(cast)
    advance(app, journey, before="label_printed")
    return journey.coi, journey.din


def _rotation(cast: Cast, principal_id: str, at: datetime, routine: bool = False) -> tuple[Member, bytes]:
    """A rotation under dual control: after a loss, two administrators sign; a routine one,
    the old key and an administrator other than its owner."""
    old = cast[principal_id]
    new = Member.new(old.principal_id, old.printed_name, old.kind, old.roles, old.site)
    deputy = cast.admins[1]
    cosigners = (deputy, old) if routine and old is not cast.admin else (deputy,)
    raw = envelope(
        ev.PrincipalKeyRotated, cast.admin, at, cosigners, principal_id=principal_id,
        public_key=new.public_key, valid_from=at, routine=routine,
    )  # fmt: skip
    return new, raw


def test_the_first_principal_must_be_a_self_registered_administrator(app: LedgerApplication) -> None:
    now = datetime.now(UTC)
    nurse = Member.new("nurse.x", "Nia Nurse", "person", ("collection",), "US-BDW")
    assert app.submit(registration(nurse, nurse, now)).code == "no_administrator"
    admin = Member.new("admin.x", "Ada Admin", "person", ("admin",), "US-SSF")
    assert app.submit(registration(admin, admin, now - timedelta(days=1))).code == "valid_from_too_early"
    assert app.submit(registration(admin, admin, now)).status == "accepted"
    # Once there is an administrator nobody registers themselves.
    rogue = Member.new("admin.y", "Rogue", "person", ("admin",), "US-SSF")
    assert app.submit(registration(rogue, rogue, now)).code == "unknown_key"


def test_a_key_is_judged_at_receipt_so_back_dating_cannot_pass_a_rotation(
    registered: LedgerApplication, cast: Cast
) -> None:
    coi, din = _enrol(registered, cast)
    now = datetime.now(UTC)
    rotated, rotation = _rotation(cast, "nurse.bdw", now)
    assert registered.submit(rotation).status == "accepted"
    nurse = cast["nurse.bdw"]
    # The replaced key cannot sign any more, even an event dated before the switch ...
    assert registered.submit(_label(nurse, coi, din, now - timedelta(seconds=30))).code == "key_expired"
    # ... while a late entry from before the switch is signed with the current key.
    assert registered.submit(_label(rotated, coi, din, now - timedelta(seconds=30))).status == "accepted"
    assert registered.submit(_label(rotated, coi, din, datetime.now(UTC))).status == "accepted"


def test_a_routine_rotation_leaves_the_old_key_a_short_grace(
    registered: LedgerApplication, cast: Cast
) -> None:
    coi, din = _enrol(registered, cast)
    now = datetime.now(UTC)
    _, rotation = _rotation(cast, "nurse.bdw", now, routine=True)
    assert registered.submit(rotation, now=now).status == "accepted"
    nurse = cast["nurse.bdw"]
    in_flight = _label(nurse, coi, din, now - timedelta(seconds=1))
    late = _label(nurse, coi, din, now - timedelta(seconds=2))
    grace = LEGACY.rotation_grace  # the default setting
    assert registered.submit(in_flight, now=now + grace / 2).status == "accepted"
    assert registered.submit(late, now=now + grace).code == "key_expired"


def test_a_revoked_key_signs_nothing_more_whatever_date_it_writes(
    registered: LedgerApplication, cast: Cast
) -> None:
    coi, din = _enrol(registered, cast)
    nurse = cast["nurse.bdw"]
    now = datetime.now(UTC)
    body = {"principal_id": nurse.principal_id, "effective_at": now}
    assert registered.submit(envelope(ev.PrincipalRevoked, cast.admin, now, **body)).code == "reason_required"
    revoke = envelope(ev.PrincipalRevoked, cast.admin, now, reason="laptop stolen", **body)
    assert registered.submit(revoke).status == "accepted"
    assert registered.submit(_label(nurse, coi, din, now - timedelta(seconds=20))).code == "key_revoked"
    assert registered.submit(_label(nurse, coi, din, datetime.now(UTC))).code == "key_revoked"


def test_a_revoked_sole_administrator_cannot_back_date_a_successor(app: LedgerApplication) -> None:
    """The attack from the hardening review: the sole administrator, revoked, registered a
    successor dated a minute before the revocation, who registered QA valid from a year ago."""
    now = datetime.now(UTC)
    admin = Member.new("admin.x", "Ada Admin", "person", ("admin",), "US-SSF")
    second = Member.new("admin.z", "Zed Admin", "person", ("admin",), "US-SSF")
    assert app.submit(registration(admin, admin, now - timedelta(minutes=3))).status == "accepted"
    assert app.submit(registration(admin, second, now - timedelta(minutes=3))).status == "accepted"
    third = Member.new("admin.w", "Wim Admin", "person", ("admin",), "US-SSF")  # dual control keeps two
    assert app.submit(registration(admin, third, now - timedelta(minutes=3), (second,))).status == "accepted"
    revoke = envelope(
        ev.PrincipalRevoked, second, now, principal_id="admin.x", effective_at=now, reason="left the company"
    )
    assert app.submit(revoke).status == "accepted"
    successor = Member.new("admin.s", "Sly Successor", "person", ("admin",), "US-SSF")
    back_dated = registration(admin, successor, now - timedelta(minutes=1))
    assert app.submit(back_dated).code == "key_revoked"
    qa = Member.new("qa.q", "Quick QA", "person", ("qa",), "US-SSF")
    a_year_ago = envelope(
        ev.PrincipalRegistered, second, now, (third,), principal_id=qa.principal_id, kind="person",
        printed_name=qa.printed_name, roles=["qa"], public_key=qa.public_key,
        valid_from=now - timedelta(days=365),
    )  # fmt: skip
    outcome = app.submit(a_year_ago)
    assert (outcome.code, outcome.field) == ("valid_from_too_early", "valid_from")


def test_the_last_administrator_cannot_be_revoked(app: LedgerApplication) -> None:
    now = datetime.now(UTC)
    admin = Member.new("admin.x", "Ada Admin", "person", ("admin",), "US-SSF")
    assert app.submit(registration(admin, admin, now)).status == "accepted"
    revoke = {"principal_id": "admin.x", "effective_at": now, "reason": "leaving"}
    outcome = app.submit(envelope(ev.PrincipalRevoked, admin, now, **revoke))
    assert (outcome.code, outcome.field) == ("last_administrator", "principal_id")
    second = Member.new("admin.z", "Zed Admin", "person", ("admin",), "US-SSF")
    assert app.submit(registration(admin, second, now)).status == "accepted"  # the bootstrap: one signs
    # Two administrators now: none may leave fewer than two (dual control, rules version 3).
    one_left = app.submit(envelope(ev.PrincipalRevoked, admin, now, **revoke))
    assert (one_left.code, one_left.field) == ("last_administrator", "principal_id")
    assert "dual control" in (one_left.message or "")
    third = Member.new("admin.w", "Wim Admin", "person", ("admin",), "US-SSF")
    alone = app.submit(registration(admin, third, now))
    assert (alone.code, alone.field) == ("second_administrator_required", "signatures")
    assert app.submit(registration(admin, third, now, (second,))).status == "accepted"
    assert app.submit(envelope(ev.PrincipalRevoked, admin, now, **revoke)).status == "accepted"
    revoke_second = {"principal_id": "admin.z", "effective_at": now, "reason": "leaving too"}
    assert (
        app.submit(envelope(ev.PrincipalRevoked, second, now, **revoke_second)).code == "last_administrator"
    )


def test_only_administrators_change_the_registry(registered: LedgerApplication, cast: Cast) -> None:
    newcomer = Member.new("new.one", "New One", "person", ("qa",), "US-SSF")
    raw = registration(cast["qa.ssf"], newcomer, datetime.now(UTC))
    assert registered.submit(raw).code == "role_not_allowed"


def test_a_person_signature_without_its_manifestation_is_refused(
    registered: LedgerApplication, cast: Cast
) -> None:
    coi, din = _enrol(registered, cast)
    raw = envelope(
        ev.LabelPrinted,
        cast["nurse.bdw"],
        datetime.now(UTC),
        coi=coi,
        label_id="L-m",
        din=din,
        manifestations=[],
    )
    assert registered.submit(raw).code == "missing_manifestation"


def test_a_two_person_step_needs_both_signatures(registered: LedgerApplication, cast: Cast) -> None:
    coi, _ = _enrol(registered, cast)
    raw = envelope(
        ev.CustodyTransferred, cast["nurse.bdw"], datetime.now(UTC), coi=coi, unit_ids=["BAG-x"],
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
    now = datetime.now(UTC)
    assert other.submit(_label(nurse, coi, din, now)).status == "accepted"  # caches nurse
    revoke = envelope(
        ev.PrincipalRevoked, cast.admin, now, principal_id=nurse.principal_id, effective_at=now,
        reason="badge lost",
    )  # fmt: skip
    assert registered.submit(revoke).status == "accepted"
    assert other.submit(_label(nurse, coi, din, now - timedelta(seconds=1))).code == "key_revoked"


def test_a_key_changed_in_one_batch_counts_in_the_next_one_prepared_before_it(
    registered: LedgerApplication, cast: Cast
) -> None:
    """submit_many decodes each batch and starts its signature checks before the batch
    ahead of it is stored: a verdict made with the keys known then must not outlive a
    rotation or a revocation stored in between."""
    coi, din = _enrol(registered, cast)
    nurse = cast["nurse.bdw"]
    now = datetime.now(UTC)
    rotated, rotation = _rotation(cast, "nurse.bdw", now)
    registered.batch_size = 2
    outcomes = registered.submit_many(
        [
            # batch 1
            _label(nurse, coi, din, now),
            rotation,
            # batch 2, prepared before batch 1 was stored
            _label(rotated, coi, din, now),  # a key unknown then
            _label(nurse, coi, din, now),  # checked by the old key
            # batch 3
            _label(rotated, coi, din, now),
            envelope(
                ev.PrincipalRevoked, cast.admin, now, principal_id=nurse.principal_id,
                effective_at=now, reason="laptop stolen",
            ),
            # batch 4, prepared before batch 3 was stored
            _label(rotated, coi, din, now - timedelta(seconds=1)),
            _label(rotated, coi, din, now),
        ]
    )  # fmt: skip
    assert [o.code or o.status for o in outcomes] == [
        "accepted", "accepted", "accepted", "key_expired",
        "accepted", "accepted", "key_revoked", "key_revoked",
    ]  # fmt: skip


def test_a_key_valid_only_later_does_not_keep_the_last_administrator(app: LedgerApplication) -> None:
    """Rotating to a key valid from next year, then revoking the current one, would leave
    nobody able to administer the registry until then."""
    now = datetime.now(UTC)
    admin = Member.new("admin.x", "Ada Admin", "person", ("admin",), "US-SSF")
    assert app.submit(registration(admin, admin, now)).status == "accepted"
    later = Member.new("admin.x", "Ada Admin", "person", ("admin",), "US-SSF")
    rotation = envelope(
        ev.PrincipalKeyRotated, admin, now, principal_id="admin.x", public_key=later.public_key,
        valid_from=now + timedelta(days=180),
    )  # fmt: skip
    assert app.submit(rotation).status == "accepted"
    revoke = envelope(
        ev.PrincipalRevoked, admin, now, principal_id="admin.x", keyid=admin.signer.keyid,
        effective_at=now, reason="lost laptop",
    )  # fmt: skip
    assert app.submit(revoke).code == "last_administrator"
