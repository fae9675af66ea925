"""Aggregates whose every stored event is one verbatim signed envelope, chained.

State is derived only from the envelope bytes, so what the ledger stores is exactly what
the site signed: replaying the store re-derives the state an auditor sees. Each event also
carries `prev`, the hash of the aggregate's previous record, so an omitted, reordered or
inserted event in one patient's history is evident from that history alone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from eventsourcing.domain import Aggregate

from ledger.transparency.records import FIRST_PREV, record_hash
from ledger.wire.dsse import b64decode
from ledger.wire.events import Event, StoredEvent

_envelope = msgspec.json.Decoder(dict[str, object])
_body = msgspec.json.Decoder(StoredEvent)


def body_of(envelope: str) -> Event:
    """The body of an envelope already accepted by the ledger (no re-verification), read
    under the constraints it was accepted with."""
    payload = _envelope.decode(envelope)["payload"]
    assert isinstance(payload, str)
    return _body.decode(b64decode(payload, "payload"))


class Ledgered(Aggregate):
    """Base of the ledger's aggregates: `check` decides, `mutate` applies."""

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
        self.mutate(body_of(envelope))

    @classmethod
    def open(cls, aggregate_id: object, envelope: str, recorded_at: datetime) -> Ledgered:
        return cls._create(
            cls.Opened, id=aggregate_id, envelope=envelope, prev=FIRST_PREV, timestamp=recorded_at
        )

    def record(self, envelope: str, body: Event, recorded_at: datetime) -> None:
        """Record an accepted envelope whose decoded body is `body`, received at `recorded_at`
        (the time the ledger judged it by, so a verifier replays the same judgement)."""
        self._decoded = body
        self.trigger_event(self.Recorded, envelope=envelope, prev=self.head, timestamp=recorded_at)

    def mutate(self, body: Event) -> None:
        raise NotImplementedError
