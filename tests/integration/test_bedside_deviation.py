"""A bedside mismatch opens a deviation by itself (issue 14 item 4), on SQLite and PostgreSQL:
the ledger appends a `deviation_opened` signed by its service principal, which every verifier
checks like any record and QA closes like any deviation; without a service key it says so."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aggregates.security import DEVIATION_NOT_RECORDED
from aggregates.therapy import failure_deviation
from ledger.app.application import LedgerApplication
from ledger.app.log import MerkleLog
from ledger.app.servicekey import SERVICE_PRINCIPAL
from ledger.demo.journeys import Cast, Journey
from ledger.site.signing import Member, envelope
from ledger.store.security import SecurityLog
from ledger.transparency.checkpoint import NoteSigner
from ledger.wire import events as ev
from projections.queries import RecordView
from tests.stores import history, ledger_url, verify_ledger
from tests.support import advance, body_dict, new_journey


def _mismatch(app: LedgerApplication, cast: Cast) -> tuple[Journey, dict[str, Any]]:
    """A journey up to its bedside check, which scans another patient's wristband; the
    bedside record's body."""
    journey = new_journey(cast, "identity_mismatch")
    steps = list(journey.steps())  # each call makes new event ids
    rest = advance(app, steps, before="infused")
    assert [body_dict(s)["type"] for s in rest] == ["infused"]
    bedside = next(b for b in map(body_dict, steps) if b["type"] == "bedside_identity_verified")
    return journey, bedside


def _opened(app: LedgerApplication, coi: str) -> list[RecordView]:
    return [r for r in history(app, coi) if r.type == "deviation_opened"]


def test_a_mismatch_opens_a_deviation_the_ledger_signs_and_qa_closes(
    registered: LedgerApplication, cast: Cast, service: Member
) -> None:
    journey, bedside = _mismatch(registered, cast)
    coi = journey.coi
    opened = _opened(registered, coi)
    assert len(opened) == 1, opened
    body = body_dict(opened[0].envelope.encode())
    product = bedside["unit_id"]
    assert [s.principal for s in opened[0].signatures] == [SERVICE_PRINCIPAL]
    assert body["actor"] == SERVICE_PRINCIPAL
    assert body["deviation_id"] == failure_deviation(bedside["event_id"])
    assert (body["severity"], body["site"], body["batch_id"]) == ("critical", bedside["site"], f"B-{coi}")
    assert product in body["description"] and "did not match" in body["description"]
    assert bedside["event_id"] in body["reason"]
    # the bedside site is not the service principal's: the site rules let it sign there
    assert bedside["site"] != service.site
    # QA closes it like any deviation
    qa = cast[f"qa.{journey.factory[3:].lower()}"]
    closed = envelope(
        ev.DeviationClosed, qa, datetime.now(UTC), coi=coi, deviation_id=body["deviation_id"],
        outcome="wrong wristband scanned; patient re-identified, product quarantined",
    )  # fmt: skip
    assert registered.submit(closed).status == "accepted"
    # every verifier replays it: the standalone verifier accepts the ledger
    signer = NoteSigner("coi-ledger.test/log", Ed25519PrivateKey.generate())
    MerkleLog(registered).checkpoint(signer, signer.name, memory=None)
    report = verify_ledger(registered, [signer.verifier])
    assert report.failure is None and report.replayed, report.failure


def test_the_service_principal_signs_nothing_else_at_a_site(
    registered: LedgerApplication, cast: Cast, service: Member
) -> None:
    """Being at no site lets the service open a deviation anywhere; its role still limits it."""
    journey, bedside = _mismatch(registered, cast)
    hold = envelope(
        ev.HoldPlaced, service, datetime.now(UTC), coi=journey.coi, site=bedside["site"], hold_id="H-1",
        unit_ids=[bedside["unit_id"]], reason="by the service",
    )  # fmt: skip
    assert registered.submit(hold).code == "role_not_allowed"


def test_without_a_service_key_the_deviation_is_said_not_opened(
    registered: LedgerApplication, cast: Cast
) -> None:
    journey, bedside = _mismatch(registered, cast)
    assert not _opened(registered, journey.coi)
    log = SecurityLog(ledger_url(registered))
    said = [e for e in log.entries() if e.code == DEVIATION_NOT_RECORDED]
    log.close()
    deviation_id = failure_deviation(bedside["event_id"])
    assert [(e.source, e.principal) for e in said] == [("ledger", SERVICE_PRINCIPAL)]
    assert deviation_id in said[0].message and "NOT opened" in said[0].message
    assert "coi security service" in said[0].message
