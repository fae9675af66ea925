"""Sites as registered things (issue 14, aggregates/site.py) through the ledger and the
verifier, with real signatures, on SQLite and PostgreSQL: an existing ledger keeps accepting
after the upgrade until it adopts the site rules, then refuses an unknown site and an unbound
signer; `coi verify` replays the same verdicts."""

from __future__ import annotations

from datetime import UTC, datetime

from aggregates.policy import SITES_ADOPTED, Policy
from aggregates.therapy import therapy_uuid
from ledger.app.application import LedgerApplication, Outcome
from ledger.demo.journeys import Cast, Journey, compressed_run
from ledger.site.signing import Member, adoption, envelope
from ledger.store.streams import SITES_STREAM
from ledger.wire import events as ev
from tests.integration.test_policy import _by_hand
from tests.stores import verify_ledger
from tests.support import advance, new_journey


def _deviation(journey: Journey, actor: Member, site: str) -> bytes:
    return envelope(
        ev.DeviationOpened, actor, datetime.now(UTC), coi=journey.coi, site=site,
        deviation_id=f"DEV-{site}", description="label smudged", severity="minor",
    )  # fmt: skip


def _submit(app: LedgerApplication, *raws: bytes) -> list[Outcome]:
    return list(app.submit_many(raws))


def test_an_old_ledger_accepts_free_sites_until_it_adopts_the_site_rules(
    app: LedgerApplication, cast: Cast
) -> None:
    # A ledger written before sites: nobody bound, version 2 adopted.
    at = compressed_run(datetime.now(UTC)).registered_at
    old = cast.registrations(at, bound=False)
    setup = list(app.submit_many([*old, adoption(cast.admins, Policy(2), at, "before sites")], now=at))
    assert {o.status for o in setup} == {"accepted"}, setup
    journey = new_journey(cast)
    rest = advance(app, journey, before="manufacturing_started")
    nurse = cast["nurse.bdw"]
    # The upgraded writer judges by version 3, but the log has not adopted it.
    assert _submit(app, _deviation(journey, nurse, "XX-NOWHERE"))[0].status == "accepted"

    refused = _submit(app, adoption(cast.admins, Policy(SITES_ADOPTED), datetime.now(UTC), "sites"))[0]
    assert (refused.code, refused.field) == ("site_not_bound", "version"), refused
    assert "nurse.bdw" in (refused.message or "")

    now = datetime.now(UTC)
    binds = [
        envelope(ev.PrincipalSitesBound, cast.admin, now, principal_id=m.principal_id, sites=[m.site])
        for m in cast.members.values()
    ]
    done = _submit(app, *cast.sites(now), *binds, adoption(cast.admins, Policy(SITES_ADOPTED), now, "sites"))
    assert {o.status for o in done} == {"accepted"}, done

    unknown = _submit(app, _deviation(journey, nurse, "XX-ELSE"))[0]
    assert (unknown.code, unknown.field) == ("unknown_site", "site"), unknown
    unbound = _submit(app, _deviation(journey, nurse, "US-SSF"))[0]
    assert (unbound.code, unbound.field) == ("site_not_bound", "actor"), unbound
    advance(app, rest, before="disposition")  # the journey goes on where its signers are bound
    report = verify_ledger(app, [])
    assert report.failure is None and report.replayed, report.failure


def test_a_release_by_qa_of_another_factory_is_refused(registered: LedgerApplication, cast: Cast) -> None:
    journey = new_journey(cast)
    assert journey.factory == "US-SSF"
    rest = advance(registered, journey, before="disposition")
    # Leiden's QA, at Leiden where it is bound, did not make this batch: South San Francisco did.
    release = envelope(
        ev.Disposition, cast["qa.lei"], datetime.now(UTC), coi=journey.coi, site="NL-LEI",
        batch_id=f"B-{journey.coi}", decision="released",
    )  # fmt: skip
    refused = _submit(registered, release)[0]
    assert (refused.code, refused.field) == ("site_not_bound", "actor"), refused
    advance(registered, rest)  # South San Francisco's QA releases it


def test_the_verifier_names_a_record_at_a_site_nobody_registered(
    registered: LedgerApplication, cast: Cast, store_url: str
) -> None:
    journey = new_journey(cast)
    advance(registered, journey, before="manufacturing_started")
    forged = _deviation(journey, cast["nurse.bdw"], "XX-NOWHERE").decode()
    sequence = _by_hand(store_url, therapy_uuid(journey.coi), forged, "aggregates.therapy:Therapy.Recorded")
    failure = verify_ledger(registered, []).failure
    assert failure is not None and failure.sequence == sequence and "unknown_site" in failure.reason


def test_a_new_ledger_holds_its_sites_and_replays_them(registered: LedgerApplication, cast: Cast) -> None:
    assert set(registered.sites()) == {"US-BDW", "JP-KAS", "US-SSF", "NL-LEI", "US-WCX"}
    again = _submit(registered, *cast.sites(datetime.now(UTC))[:1])[0]
    assert (again.code, again.field) == ("site_exists", "code"), again
    assert registered.repository.get(SITES_STREAM).version == 5
    assert verify_ledger(registered, []).failure is None
