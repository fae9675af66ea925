"""The names stored events are filed under: ours, fixed, whatever module holds the class.

eventsourcing files an event under its class's import path and finds the class again by that
path, so moving a class would make every existing ledger unreadable. The ledger writes the
names below instead and resolves them (and any former name) to wherever the class lives now.
A name, once written, is never changed or reused; a new stored class gets a new name here.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import register_topic

from ledger.store.streams import PolicyStream, Principal, SiteStream, Therapy

# name -> class. The names are those the first ledgers were written with (ledger v0.1), when
# the classes lived in aggregates/; the classes carry them as their TOPIC too.
STORED: dict[str, type[Any]] = {
    "aggregates.therapy:Therapy.Opened": Therapy.Opened,
    "aggregates.therapy:Therapy.Recorded": Therapy.Recorded,
    "aggregates.principal:Principal.Opened": Principal.Opened,
    "aggregates.principal:Principal.Recorded": Principal.Recorded,
    # issue 10: the policy records (aggregates/policy.py)
    "coi:policy.opened": PolicyStream.Opened,
    "coi:policy.recorded": PolicyStream.Recorded,
    # issue 14: the site records (aggregates/site.py)
    "coi:sites.opened": SiteStream.Opened,
    "coi:sites.recorded": SiteStream.Recorded,
}
NAMES: dict[type[Any], str] = {cls: name for name, cls in STORED.items()}
PRINCIPAL_OPENED = NAMES[Principal.Opened]
POLICY_TOPICS = [NAMES[PolicyStream.Opened], NAMES[PolicyStream.Recorded]]
SITE_TOPICS = [NAMES[SiteStream.Opened], NAMES[SiteStream.Recorded]]

for _name, _cls in STORED.items():
    register_topic(_name, _cls)


class LedgerMapper(Mapper[Any]):
    """eventsourcing's mapper, filing each event under its name in `STORED`."""

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        stored = super().to_stored_event(domain_event)
        return StoredEvent(
            originator_id=stored.originator_id,
            originator_version=stored.originator_version,
            topic=NAMES[type(domain_event)],
            state=stored.state,
        )
