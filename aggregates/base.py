"""What every aggregate's rules share: the context a decision is made in, the claims port,
and the body of a stored envelope.

The rules are plain functions over plain state (no store, no clock, no signing): the ledger
and a standalone verifier run the same code over the same records and reach the same verdicts.
State is derived only from the envelope bytes, so what the ledger stores is exactly what the
site signed.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

import msgspec

from aggregates.policy import Policy
from ledger.wire.dsse import b64decode
from ledger.wire.events import Event, StoredEvent

if TYPE_CHECKING:
    from aggregates.principal import PrincipalState

_envelope = msgspec.json.Decoder(dict[str, object])
_body = msgspec.json.Decoder(StoredEvent)


def body_of(envelope: str) -> Event:
    """The body of an envelope already accepted by the ledger (no re-verification), read
    under the constraints it was accepted with."""
    payload = _envelope.decode(envelope)["payload"]
    assert isinstance(payload, str)
    return _body.decode(b64decode(payload, "payload"))


class Claims(Protocol):
    """Values that are unique across the whole ledger (a DIN, a cartridge, the genesis
    administrator): who holds each, whatever patient or batch of envelopes claimed it."""

    def owner(self, kind: str, value: str) -> str | None:
        """The owner of a claimed value (a COI, a principal id), None when it is free."""
        ...


class Registry(Protocol):
    """The principal registry as the rules consult it beyond the signers."""

    def administrators(self) -> Iterable[PrincipalState]:
        """Every principal with the admin role (read only when an administrator is revoked)."""
        ...


@dataclass(frozen=True)
class ClaimsTable:
    """Claims held in memory: a verifier's replay, or a test's."""

    owners: Mapping[tuple[str, str], str] = field(default_factory=dict)

    def owner(self, kind: str, value: str) -> str | None:
        return self.owners.get((kind, value))


@dataclass(frozen=True)
class Administrators:
    """A registry given as the list of its administrators."""

    principals: tuple[PrincipalState, ...] = ()

    def administrators(self) -> Iterable[PrincipalState]:
        return self.principals


@dataclass(frozen=True)
class Context:
    """What a decision may consult besides the aggregate's own state."""

    received_at: datetime  # the ledger's clock of record: the record's recorded_at
    policy: Policy  # the rules version and settings in force at the record's place
    claims: Claims = ClaimsTable()
    registry: Registry = Administrators()
    roles: Mapping[str, frozenset[str]] = field(default_factory=dict)  # each signer's roles
    sites: Collection[str] = ()  # the registered site codes (aggregates/site.py)
    bound: Mapping[str, frozenset[str]] = field(default_factory=dict)  # each signer's sites
