"""A ledger written by an earlier version (tests/fixtures/ledger-v0.1) must always open,
verify and answer, and resending one of its envelopes stays a duplicate."""

from __future__ import annotations

from uuid import UUID

import msgspec

from ledger.app.application import LedgerApplication
from ledger.demo.journeys import Cast
from tests.stores import RawStore, history
from tests.support import advance, body_dict, new_journey, signed


def test_a_record_accepted_before_a_constraint_existed_still_replays(
    store_url: str, registered: LedgerApplication, cast: Cast
) -> None:
    """v0.1 took any treatment_site and the nil UUID as an event id; the door refuses both
    now, but a patient enrolled so must stay loadable: replay reads bodies as accepted."""
    journey = new_journey(cast)
    steps = list(journey.steps())
    advance(registered, steps, before="label_printed")
    raw = RawStore(store_url)
    sequence = raw.last()
    stream, version, topic, state = raw.row(sequence)
    stored = msgspec.json.decode(bytes(state))
    old = {**body_dict(steps[0]), "treatment_site": "Bridgewater General", "event_id": str(UUID(int=0))}
    assert registered.submit(signed(old, cast["coord.bdw"])).code == "invalid_value"  # the door
    stored["envelope"] = signed(old, cast["coord.bdw"]).decode()
    raw.set_row(sequence, (stream, version, topic, msgspec.json.encode(stored)))

    later = LedgerApplication(store_url)  # nothing cached: the patient is loaded from the store
    assert later.submit(steps[1].envelope).status == "accepted"
    (enrolment, *_) = history(later, journey.coi)
    assert enrolment.details["treatment_site"] == "Bridgewater General"
