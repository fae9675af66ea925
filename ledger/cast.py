"""Principals with their keys, and signing bodies as they do: the site-system side of the
wire format, used by `coi sign`, the demo and the tests."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import events as ev
from ledger.dsse import Signer, sign
from ledger.keys import keyid_for, public_raw

# The meaning a person's signature carries, by event type (Part 11.50).
MEANINGS: dict[str, str] = {
    "disposition": "approved",
    "hold_released": "approved",
    "deviation_closed": "approved",
    "record_corrected": "reviewed",
    "bedside_identity_verified": "verified",
    "qc_result_recorded": "reviewed",
}


@dataclass
class Member:
    """One principal and its private key."""

    principal_id: str
    printed_name: str
    kind: str
    roles: tuple[str, ...]
    site: str
    key: Ed25519PrivateKey

    @classmethod
    def new(
        cls, principal_id: str, printed_name: str, kind: str, roles: tuple[str, ...], site: str
    ) -> Member:
        return cls(principal_id, printed_name, kind, roles, site, Ed25519PrivateKey.generate())

    @property
    def signer(self) -> Signer:
        return Signer(keyid_for(self.principal_id, public_raw(self.key)), self.key)

    @property
    def public_key(self) -> str:
        return base64.b64encode(public_raw(self.key)).decode()


def manifestations(
    signers: list[Member], tag: str, at: datetime, witness: str | None = None
) -> list[ev.Manifestation]:
    """Every person who signs states name, time and meaning inside the body."""
    return [
        ev.Manifestation(
            principal=m.principal_id,
            printed_name=m.printed_name,
            signed_at=at,
            meaning="witnessed" if m.principal_id == witness else MEANINGS.get(tag, "performed"),  # type: ignore[arg-type]
        )
        for m in signers
        if m.kind == "person"
    ]


def envelope(
    cls: type[ev.Body], actor: Member, at: datetime, cosigners: tuple[Member, ...] = (), **fields: Any
) -> bytes:
    """Build a body of type `cls` as `actor` (plus cosigners) and sign it into an envelope."""
    signers = [actor, *cosigners]
    tag = str(cls.__struct_config__.tag)
    fields.setdefault("event_id", uuid.uuid4())
    fields.setdefault("site", actor.site)
    fields.setdefault("manifestations", manifestations(signers, tag, at, witness=fields.get("witness")))
    body = cls(occurred_at=at, actor=actor.principal_id, **fields)
    return sign(msgspec.json.encode(body), [m.signer for m in signers])


def registration(admin: Member, member: Member, at: datetime) -> bytes:
    """`admin` registers `member` (the first administrator registers itself)."""
    return envelope(
        ev.PrincipalRegistered,
        admin,
        at,
        principal_id=member.principal_id,
        kind=member.kind,
        printed_name=member.printed_name,
        roles=list(member.roles),
        public_key=member.public_key,
        valid_from=at,
    )
