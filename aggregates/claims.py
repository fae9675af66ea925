"""Global uniqueness (event ids, DINs, cartridges) as one tiny aggregate per claimed value.

The aggregate id is derived from the value, so a second claim of the same value fails at
the store's unique key even if two writers race.
"""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

NAMESPACE = uuid5(NAMESPACE_URL, "https://coi-ledger.example/claims")


def claim_id(kind: str, value: str) -> UUID:
    return uuid5(NAMESPACE, f"{kind}:{value}")


class Claim(Aggregate):
    """`value` of `kind` belongs to `owner`; `digest` pins the bytes that claimed it."""

    @event("Claimed")
    def __init__(self, kind: str, value: str, owner: str, digest: str) -> None:
        self.kind = kind
        self.value = value
        self.owner = owner
        self.digest = digest

    @classmethod
    def make(cls, kind: str, value: str, owner: str, digest: str = "") -> Claim:
        return cls._create(
            cls.Claimed,  # type: ignore[attr-defined]
            id=claim_id(kind, value),
            kind=kind,
            value=value,
            owner=owner,
            digest=digest,
        )
