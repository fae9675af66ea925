"""The treatment site through the ledger, with real signatures, on SQLite and PostgreSQL: the
product goes to the hospital the patient is enrolled at, and a move to another hospital is a
signed event of its own (enrolment role, QA's e-signature, a reason)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from ledger.app.application import LedgerApplication, Outcome
from ledger.demo.journeys import Cast, Journey, Step
from ledger.site.signing import envelope
from ledger.wire import events as ev
from tests.support import advance, body_dict, new_journey, signed, tag_of


def _ready_to_ship(app: LedgerApplication, cast: Cast) -> tuple[Journey, Step]:
    """A patient enrolled at US-BDW, the product released at US-SSF; the dispatch is next."""
    journey = new_journey(cast, "happy", 0)
    assert (journey.hospital, journey.factory) == ("US-BDW", "US-SSF")
    rest = advance(app, journey, before="shipment_dispatched")
    return journey, rest[0]


def _dispatch_to(cast: Cast, dispatch: Step, site: str) -> bytes:
    """The journey's own dispatch, sent to `site` instead (a new event, signed again)."""
    body = body_dict(dispatch) | {"destination_site": site, "event_id": str(uuid.uuid4())}
    return signed(body, cast[body["actor"]])


def _move(
    app: LedgerApplication, cast: Cast, journey: Journey, *cosigners: str, site: str = "JP-KAS"
) -> Outcome:
    return app.submit(
        envelope(
            ev.TreatmentSiteChanged,
            cast["coord.bdw"],
            datetime.now(UTC),
            tuple(cast[c] for c in cosigners),
            coi=journey.coi,
            treatment_site=site,
            reason="the patient moved to Kashiwa",
        )
    )


def test_a_product_cannot_be_shipped_to_another_hospital(registered: LedgerApplication, cast: Cast) -> None:
    _, dispatch = _ready_to_ship(registered, cast)
    refused = registered.submit(_dispatch_to(cast, dispatch, "JP-KAS"))
    assert (refused.code, refused.field) == ("wrong_treatment_site", "destination_site"), refused
    assert tag_of(dispatch) == "shipment_dispatched"
    assert registered.submit(dispatch.envelope).status == "accepted"  # to the enrolled hospital


def test_a_patient_moves_with_qa_signing_and_the_product_follows(
    registered: LedgerApplication, cast: Cast
) -> None:
    journey, dispatch = _ready_to_ship(registered, cast)
    unsigned = _move(registered, cast, journey)
    assert (unsigned.code, unsigned.field) == ("missing_manifestation", "manifestations"), unsigned
    # Every signer is bound to the event's site (issue 14): QA signs the hospital's move only
    # once it acts for the hospital too.
    elsewhere = _move(registered, cast, journey, "qa.ssf")
    assert (elsewhere.code, elsewhere.field) == ("site_not_bound", "signatures"), elsewhere
    bound = envelope(
        ev.PrincipalSitesBound, cast.admin, datetime.now(UTC), principal_id="qa.ssf", sites=["US-BDW"]
    )
    assert registered.submit(bound).status == "accepted"
    assert _move(registered, cast, journey, "qa.ssf").status == "accepted"
    old = registered.submit(dispatch.envelope)
    assert (old.code, old.field) == ("wrong_treatment_site", "destination_site"), old
    assert registered.submit(_dispatch_to(cast, dispatch, "JP-KAS")).status == "accepted"
    in_transit = _move(registered, cast, journey, "qa.ssf", site="US-BDW")
    assert (in_transit.code, in_transit.field) == ("out_of_sequence", "treatment_site"), in_transit


def test_a_move_needs_the_enrolment_role_and_a_reason(registered: LedgerApplication, cast: Cast) -> None:
    journey, _ = _ready_to_ship(registered, cast)
    by_qa = registered.submit(
        envelope(
            ev.TreatmentSiteChanged,
            cast["qa.ssf"],
            datetime.now(UTC),
            coi=journey.coi,
            treatment_site="JP-KAS",
            reason="moved",
        )
    )
    assert (by_qa.code, by_qa.field) == ("role_not_allowed", "type"), by_qa
    no_reason = registered.submit(
        envelope(
            ev.TreatmentSiteChanged,
            cast["coord.bdw"],
            datetime.now(UTC),
            (cast["qa.ssf"],),
            coi=journey.coi,
            treatment_site="JP-KAS",
        )
    )
    assert (no_reason.code, no_reason.field) == ("reason_required", "reason"), no_reason
