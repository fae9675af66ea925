"""The aggregates as eventsourcing stores them: one stream per therapy and per principal, and
one of the policy records, each stored event one verbatim signed envelope, chained.

Thin adapters: the state and the rules are the plain ones in `aggregates/`; an adapter only
applies `evolve` to each envelope it records or replays. Each event also carries `prev`, the
hash of the stream's previous record, so an omitted, reordered or inserted event in one
patient's history is evident from that history alone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from aggregates import policy, principal, site, therapy
from aggregates.base import body_of
from ledger.transparency.records import FIRST_PREV, record_hash
from ledger.wire.events import Event, JourneyEvent, PolicyAdopted, RegistryEvent, SiteRegistered


class Ledgered(Aggregate):
    """Base of the stored streams: `state` is the plain aggregate state."""

    class Opened(Aggregate.Created):
        envelope: str
        prev: str

    class Recorded(Aggregate.Event):
        envelope: str
        prev: str

        def apply(self, aggregate: Any) -> None:
            assert isinstance(aggregate, Ledgered)
            aggregate.head = record_hash(
                aggregate.id, self.originator_version, self.prev, self.timestamp, self.envelope
            )
            # When recording, the caller has just decoded this very envelope; replay decodes.
            body = aggregate.__dict__.pop("_decoded", None)
            aggregate.mutate(body if body is not None else body_of(self.envelope))

    def __init__(self, envelope: str, prev: str) -> None:
        self.head = record_hash(self.id, self.version, prev, self.created_on, envelope)
        # Assigned, not annotated on the class: eventsourcing would make a class annotation
        # an argument of __init__.
        self.state: Any = None
        self.mutate(body_of(envelope))

    @classmethod
    def open(cls, aggregate_id: UUID, envelope: str, recorded_at: datetime) -> Ledgered:
        return cls._create(
            cls.Opened, id=aggregate_id, envelope=envelope, prev=FIRST_PREV, timestamp=recorded_at
        )

    def record(self, envelope: str, body: Event, recorded_at: datetime) -> None:
        """Record an accepted envelope whose decoded body is `body`, received at `recorded_at`
        (the time the ledger judged it by, so a verifier replays the same judgement)."""
        self._decoded = body
        self.trigger_event(self.Recorded, envelope=envelope, prev=self.head, timestamp=recorded_at)

    def mutate(self, body: Any) -> None:
        raise NotImplementedError


# Each class carries the name it is stored under (eventsourcing's explicit TOPIC): the names
# the first ledgers were written with, when these classes lived in aggregates/. The stream's
# name is in its first event (`originator_topic`); the events' names are listed again in
# ledger/store/topics.py STORED. Never change one.


class Therapy(Ledgered):
    """One patient's journey (aggregates/therapy.py)."""

    TOPIC = "aggregates.therapy:Therapy"

    class Created(Aggregate.Created):  # eventsourcing's own, never stored by the ledger
        TOPIC = "aggregates.therapy:Therapy.Created"

    class Opened(Ledgered.Opened):
        TOPIC = "aggregates.therapy:Therapy.Opened"

    class Recorded(Ledgered.Recorded):
        TOPIC = "aggregates.therapy:Therapy.Recorded"

    def mutate(self, body: JourneyEvent) -> None:
        self.state = therapy.evolve(self.state, body)


class Principal(Ledgered):
    """A person, device or site system with its keys and roles (aggregates/principal.py)."""

    TOPIC = "aggregates.principal:Principal"

    class Created(Aggregate.Created):  # eventsourcing's own, never stored by the ledger
        TOPIC = "aggregates.principal:Principal.Created"

    class Opened(Ledgered.Opened):
        TOPIC = "aggregates.principal:Principal.Opened"

    class Recorded(Ledgered.Recorded):
        TOPIC = "aggregates.principal:Principal.Recorded"

    def mutate(self, body: RegistryEvent) -> None:
        self.state = principal.evolve(self.state, body)


POLICY_STREAM = uuid5(NAMESPACE_URL, "https://coi-ledger.example/policy")


class PolicyStream(Ledgered):
    """Every policy record of the ledger, in log order; `state` is the policy in force
    (aggregates/policy.py)."""

    TOPIC = "coi:policy"

    class Created(Aggregate.Created):  # eventsourcing's own, never stored by the ledger
        TOPIC = "coi:policy.created"

    class Opened(Ledgered.Opened):
        TOPIC = "coi:policy.opened"

    class Recorded(Ledgered.Recorded):
        TOPIC = "coi:policy.recorded"

    def mutate(self, body: PolicyAdopted) -> None:
        self.state = policy.evolve(self.state or policy.PolicyState(), body)


SITES_STREAM = uuid5(NAMESPACE_URL, "https://coi-ledger.example/sites")


class SiteStream(Ledgered):
    """Every site record of the ledger, in log order; `state` is the registry of sites by
    code (aggregates/site.py): a few dozen, read with every batch."""

    TOPIC = "coi:sites"

    class Created(Aggregate.Created):  # eventsourcing's own, never stored by the ledger
        TOPIC = "coi:sites.created"

    class Opened(Ledgered.Opened):
        TOPIC = "coi:sites.opened"

    class Recorded(Ledgered.Recorded):
        TOPIC = "coi:sites.recorded"

    def mutate(self, body: SiteRegistered) -> None:
        self.state = site.evolve(self.state or {}, body)
