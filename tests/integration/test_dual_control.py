"""Dual control (issue 14, item 3) through the application and the verifier, on SQLite and
PostgreSQL: what two administrators sign is accepted and verifies; a key one administrator
replaced by hand in the table is found by `coi verify`; what an older coi accepted from one
administrator still verifies."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import aggregates.policy
from aggregates.policy import Policy
from aggregates.principal import principal_uuid
from ledger.app.application import LedgerApplication
from ledger.demo.journeys import Cast
from ledger.site.signing import Member, adoption, envelope, registration
from ledger.wire import events as ev
from tests.stores import RawStore, verify_ledger


def _qa(name: str = "Pat QA") -> Member:
    return Member.new(f"qa.{name.split()[0].lower()}", name, "person", ("qa",), "US-SSF")


def test_a_grant_two_administrators_sign_is_accepted_and_verifies(
    registered: LedgerApplication, cast: Cast
) -> None:
    deputy = cast.admins[1]
    now = datetime.now(UTC)
    alone = registered.submit(registration(cast.admin, _qa(), now))
    assert (alone.code, alone.field) == ("second_administrator_required", "signatures")
    assert registered.submit(registration(cast.admin, _qa(), now, (deputy,))).status == "accepted"
    # A second administrator who is the same person twice is still one administrator.
    same = Member.new("admin.third", "Tom Third", "person", ("admin",), "US-SSF")
    assert registered.submit(registration(cast.admin, same, now, (cast.admin,))).code == "repeated_signature"
    assert verify_ledger(registered, []).failure is None


def test_a_key_one_administrator_replaced_by_hand_is_found_by_the_verifier(
    registered: LedgerApplication, cast: Cast, store_url: str
) -> None:
    """The attack of the issue: one administrator replaces QA's key with one they hold."""
    qa = cast["qa.ssf"]
    held = Member.new(qa.principal_id, qa.printed_name, qa.kind, qa.roles, qa.site)
    now = datetime.now(UTC)
    fields = {"principal_id": qa.principal_id, "public_key": held.public_key, "valid_from": now}
    assert registered.submit(envelope(ev.PrincipalKeyRotated, cast.admin, now, **fields)).code == (
        "second_administrator_required"
    )
    forged = envelope(ev.PrincipalKeyRotated, cast.admin, now, **fields).decode()
    raw = RawStore(store_url)
    try:
        sequence = raw.append(
            principal_uuid(qa.principal_id), forged, "aggregates.principal:Principal.Recorded", now
        )
    finally:
        raw.conn.close()
    failure = verify_ledger(registered, []).failure
    assert failure is not None and failure.sequence == sequence
    assert "second_administrator_required" in failure.reason


def test_what_one_administrator_granted_under_version_2_still_verifies(
    app: LedgerApplication, cast: Cast, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger an older coi (rules version 2) wrote, where one administrator granted qa:
    today's coi refuses the same grant, and verifies the old one."""
    monkeypatch.setattr(aggregates.policy, "RULES_VERSION", 2)
    now = datetime.now(UTC)
    setup = [*cast.registrations(now), adoption(cast.admins, Policy(2), now, "v2")]
    assert {o.status for o in app.submit_many(setup, now=now)} == {"accepted"}
    assert app.submit(registration(cast.admin, _qa("Old QA"), now)).status == "accepted"
    monkeypatch.undo()
    assert verify_ledger(app, []).failure is None
    refused = app.submit(registration(cast.admin, _qa("New QA"), now))
    assert refused.code == "second_administrator_required"
