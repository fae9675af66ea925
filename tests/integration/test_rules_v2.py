"""Rules version 2 (issue 14): signatures that mean what they say, and time and order. A ledger
written by a coi that knew only version 1 holds records version 2 refuses; it still verifies,
because `coi verify` replays each record under the policy in force at its place. The same kind
of record after a version-2 boundary, put in by an insider, is named by the verifier."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import aggregates.policy
from aggregates.policy import Policy
from aggregates.therapy import therapy_uuid
from ledger.app.application import LedgerApplication
from ledger.app.log import MerkleLog
from ledger.demo.journeys import Cast, Journey
from ledger.site.signing import Member, adoption, envelope
from ledger.transparency.checkpoint import NoteSigner
from ledger.wire import events as ev
from tests.stores import RawStore, ledger_url, verify_ledger
from tests.support import advance, new_journey

TOPIC = "aggregates.base:Ledgered.Recorded"  # as tests/integration/test_replay.py appends


def _signed_as(member: Member, at: datetime, meaning: str) -> list[ev.Manifestation]:
    return [ev.Manifestation(member.principal_id, member.printed_name, at, meaning)]  # type: ignore[arg-type]


def _step(cls: type[ev.Body], actor: Member, journey: Journey, at: datetime, **fields: Any) -> bytes:
    return envelope(cls, actor, at, coi=journey.coi, **fields)


def _forbidden(cast: Cast, journey: Journey, at: datetime) -> dict[str, bytes]:
    """Records of a failed batch that rules version 2 refuses (the code it gives, then what)."""
    qa = cast["qa.ssf"]
    batch = f"B-{journey.coi}"
    return {
        "signed_at_out_of_range: a deviation opened meaning released, signed in 2019": _step(
            ev.DeviationOpened, qa, journey, at, deviation_id=f"DV-{at.timestamp():.0f}", description="seen",
            severity="minor", manifestations=_signed_as(qa, datetime(2019, 1, 1, tzinfo=UTC), "released"),
        ),
        "meaning_not_allowed: a rejection meaning approved, with no reason": _step(
            ev.Disposition, qa, journey, at + timedelta(seconds=1), batch_id=batch, decision="rejected",
            manifestations=_signed_as(qa, at + timedelta(seconds=1), "approved"),
        ),
    }  # fmt: skip


@pytest.fixture
def older_coi(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """This process as a coi that knew rules version 1; `.undo()` makes it today's again."""
    monkeypatch.setattr(aggregates.policy, "RULES_VERSION", 1)
    return monkeypatch


def test_a_version_1_ledger_with_records_version_2_refuses_still_verifies(
    app: LedgerApplication, cast: Cast, older_coi: pytest.MonkeyPatch
) -> None:
    journey = new_journey(cast, "qc_failure")
    at = journey.clock - timedelta(seconds=1)  # the cast registered just before the journey
    setup = [*cast.registrations(at), adoption([cast.admin], Policy(1), at, "version 1")]
    assert {o.status for o in app.submit_many(setup, now=at)} == {"accepted"}
    advance(app, journey, before="disposition")
    now = datetime.now(UTC)
    for what, raw in _forbidden(cast, journey, now).items():
        outcome = app.submit(raw)
        assert outcome.status == "accepted", (what, outcome)
    signer = NoteSigner("coi-ledger.test/log", Ed25519PrivateKey.generate())
    MerkleLog(app).checkpoint(signer, signer.name, memory=None)
    older_coi.undo()  # today's coi verifies what the older one wrote

    report = verify_ledger(app, [signer.verifier])
    assert report.failure is None and report.replayed, report.failure

    # Today's coi refuses the same records, and the verifier names one an insider adds after
    # a version-2 boundary.
    later = datetime.now(UTC)
    again = _forbidden(cast, new_journey(cast, "qc_failure", index=1), later)
    for what, raw in again.items():
        outcome = app.submit(raw)
        assert outcome.code == what.split(":")[0], (what, outcome)
    assert app.submit(adoption([cast.admin], Policy(2), later, "version 2")).status == "accepted"
    deviation = _forbidden(cast, journey, datetime.now(UTC))
    raw = RawStore(ledger_url(app))
    try:
        sequence = raw.append(therapy_uuid(journey.coi), next(iter(deviation.values())).decode(), TOPIC)
    finally:
        raw.conn.close()
    MerkleLog(app).checkpoint(signer, signer.name, memory=None)
    failure = verify_ledger(app, [signer.verifier]).failure
    assert failure is not None and failure.sequence == sequence, failure
    assert "signed_at_out_of_range" in failure.reason, failure
