"""Rules version 2 (issue 14): signatures that mean what they say, and time and order. A ledger
written by a coi that knew only version 1 holds records version 2 refuses; it still verifies,
because `coi verify` replays each record under the policy in force at its place. Today's coi
refuses the same records, and the verifier names one an insider adds after a version-2
boundary."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import aggregates.policy
from aggregates.policy import Policy
from aggregates.therapy import therapy_uuid
from ledger.app.application import LedgerApplication
from ledger.app.log import MerkleLog
from ledger.demo.journeys import Cast, Journey, compressed_run
from ledger.site.signing import Member, adoption, envelope
from ledger.transparency.checkpoint import NoteSigner
from ledger.wire import events as ev
from tests.stores import RawStore, ledger_url, verify_ledger
from tests.support import advance, body_dict, new_journey, signed

TOPIC = "aggregates.base:Ledgered.Recorded"  # as tests/integration/test_replay.py appends


def _signed_as(member: Member, at: datetime, meaning: str) -> list[ev.Manifestation]:
    return [ev.Manifestation(member.principal_id, member.printed_name, at, meaning)]  # type: ignore[arg-type]


def _event(cls: type[ev.Body], actor: Member, journey: Journey, at: datetime, **fields: Any) -> bytes:
    return envelope(cls, actor, at, coi=journey.coi, **fields)


def _signatures(cast: Cast, journey: Journey, at: datetime) -> dict[str, bytes]:
    """A failed batch's records whose signatures version 2 refuses: the code, then what."""
    qa = cast["qa.ssf"]
    return {
        "signed_at_out_of_range: a deviation opened meaning released, signed in 2019": _event(
            ev.DeviationOpened, qa, journey, at, deviation_id=f"DV-{uuid.uuid4().hex[:8]}",
            description="seen", severity="minor",
            manifestations=_signed_as(qa, datetime(2019, 1, 1, tzinfo=UTC), "released"),
        ),
        "meaning_not_allowed: a rejection meaning approved, with no reason": _event(
            ev.Disposition, qa, journey, at, batch_id=f"B-{journey.coi}", decision="rejected",
            manifestations=_signed_as(qa, at, "approved"),
        ),
    }  # fmt: skip


def _second_run(app: LedgerApplication, cast: Cast, journey: Journey, before: str | None = None) -> str:
    """Submit the journey up to `before`, its first manufacturing step recorded twice (the same
    window under a new event id); the second one's outcome: accepted, or its code."""
    rest = advance(app, journey, before="manufacturing_step_completed")
    advance(app, rest[:1])
    body = body_dict(rest[0]) | {"event_id": str(uuid.uuid4())}
    outcome = app.submit(signed(body, cast[body["actor"]]))
    advance(app, rest[1:], before=before)
    return outcome.code or outcome.status


def _hold(cast: Cast, journey: Journey, at: datetime) -> bytes:
    return _event(
        ev.HoldPlaced, cast[f"nurse.{journey.hospital[3:].lower()}"], journey, at,
        hold_id=f"H-{uuid.uuid4().hex[:8]}", unit_ids=[f"P-{journey.coi}-1"], reason="recall notice",
    )  # fmt: skip


@pytest.fixture
def older_coi(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """This process as a coi that knew rules version 1; `.undo()` makes it today's again."""
    monkeypatch.setattr(aggregates.policy, "RULES_VERSION", 1)
    return monkeypatch


def test_a_version_1_ledger_with_records_version_2_refuses_still_verifies(
    app: LedgerApplication, cast: Cast, older_coi: pytest.MonkeyPatch
) -> None:
    # Everything happened three days before the ledger received it: late entries, no reason.
    run = compressed_run(datetime.now(UTC) - timedelta(days=3))
    setup = [
        *cast.registrations(run.registered_at),
        adoption(cast.admins, Policy(1), run.registered_at, "v1"),
    ]
    assert {o.status for o in app.submit_many(setup, now=run.registered_at)} == {"accepted"}
    failed = Journey(cast, 0, run.start(0), "qc_failure", run.hour)
    infused = Journey(cast, 1, run.start(1), "happy", run.hour)
    assert _second_run(app, cast, failed, before="disposition") == "accepted"
    for what, raw in _signatures(cast, failed, failed.clock).items():
        assert app.submit(raw).status == "accepted", what
    advance(app, infused)
    assert app.submit(_hold(cast, infused, infused.clock)).status == "accepted"
    signer = NoteSigner("coi-ledger.test/log", Ed25519PrivateKey.generate())
    MerkleLog(app).checkpoint(signer, signer.name, memory=None)
    older_coi.undo()  # today's coi verifies what the older one wrote

    report = verify_ledger(app, [signer.verifier])
    assert report.failure is None and report.replayed, report.failure

    # Today's coi refuses each kind, on a journey of today.
    today = new_journey(cast, "happy", index=2)
    assert _second_run(app, cast, today) == "interval_out_of_order"
    assert app.submit(_hold(cast, today, datetime.now(UTC))).code == "unit_consumed"
    late = _event(ev.DeviationOpened, cast["qa.ssf"], infused, infused.clock, deviation_id="DV-late",
                  description="found on review", severity="minor")  # fmt: skip
    assert app.submit(late).code == "late_entry_reason_required"
    rejected = new_journey(cast, "qc_failure", index=3)
    advance(app, rejected, before="disposition")
    for what, raw in _signatures(cast, rejected, datetime.now(UTC)).items():
        assert app.submit(raw).code == what.split(":")[0], what

    # After a version-2 boundary, the verifier names such a record an insider puts in.
    assert app.submit(adoption(cast.admins, Policy(2), datetime.now(UTC), "v2")).status == "accepted"
    forged = next(iter(_signatures(cast, rejected, datetime.now(UTC)).values()))
    raw = RawStore(ledger_url(app))
    try:
        sequence = raw.append(therapy_uuid(rejected.coi), forged.decode(), TOPIC)
    finally:
        raw.conn.close()
    MerkleLog(app).checkpoint(signer, signer.name, memory=None)
    failure = verify_ledger(app, [signer.verifier]).failure
    assert failure is not None and failure.sequence == sequence, failure
    assert "signed_at_out_of_range" in failure.reason, failure
