"""The eventsourcing streams (ledger/store/streams.py) write what the first ledgers wrote:
each stream's first event names its class as `aggregates.<module>:<Class>`, though the
classes now live in the store layer, and a stream replays into the plain rules' state."""

from __future__ import annotations

import msgspec

from aggregates.principal import PrincipalState, principal_uuid
from aggregates.therapy import TherapyState, therapy_uuid
from ledger.app.application import LedgerApplication
from ledger.demo.journeys import Cast
from ledger.store.streams import Principal, Therapy
from tests.support import advance, new_journey


def test_a_streams_first_event_names_its_class_as_the_first_ledgers_did(
    store_url: str, registered: LedgerApplication, cast: Cast
) -> None:
    journey = new_journey(cast)
    advance(registered, journey, before="custody_transferred")
    first = {
        n.originator_id: msgspec.json.decode(n.state)["originator_topic"]
        for n in registered.recorder.select_notifications(start=1, limit=1000)
        if n.topic.endswith(".Opened")
    }
    assert first[therapy_uuid(journey.coi)] == "aggregates.therapy:Therapy"
    assert first[principal_uuid(cast.admin.principal_id)] == "aggregates.principal:Principal"
    fresh = LedgerApplication(store_url)  # no cache: the streams replay from the store
    therapy = fresh.repository.get(therapy_uuid(journey.coi))
    admin = fresh.repository.get(principal_uuid(cast.admin.principal_id))
    assert isinstance(therapy, Therapy) and isinstance(therapy.state, TherapyState)
    assert therapy.state.coi == journey.coi and therapy.state.units
    assert isinstance(admin, Principal) and isinstance(admin.state, PrincipalState)
    assert "admin" in admin.state.roles
