"""Aggregates whose every stored event is one verbatim signed envelope.

State is derived only from the envelope bytes, so what the ledger stores is exactly what
the site signed: replaying the store re-derives the state an auditor sees.
"""

from __future__ import annotations

import msgspec
from eventsourcing.domain import Aggregate, event

from ledger.dsse import b64decode
from ledger.events import Event

_envelope = msgspec.json.Decoder(dict[str, object])
_body = msgspec.json.Decoder(Event)


def body_of(envelope: str) -> Event:
    """The body of an envelope already accepted by the ledger (no re-verification)."""
    payload = _envelope.decode(envelope)["payload"]
    assert isinstance(payload, str)
    return _body.decode(b64decode(payload, "payload"))


class Ledgered(Aggregate):
    """Base of the ledger's aggregates: `check` decides, `mutate` applies."""

    @event("Opened")
    def __init__(self, envelope: str) -> None:
        self.mutate(body_of(envelope))

    @event("Recorded")
    def _recorded(self, envelope: str) -> None:
        # When recording, the caller has just decoded this very envelope; replay decodes.
        body = self.__dict__.pop("_decoded", None)
        self.mutate(body if body is not None else body_of(envelope))

    @classmethod
    def open(cls, aggregate_id: object, envelope: str) -> Ledgered:
        return cls._create(cls.Opened, id=aggregate_id, envelope=envelope)  # type: ignore[attr-defined]

    def record(self, envelope: str, body: Event) -> None:
        """Record an accepted envelope whose decoded body is `body`."""
        self._decoded = body
        self._recorded(envelope=envelope)

    def mutate(self, body: Event) -> None:
        raise NotImplementedError
