"""Principals with their keys, and signing bodies as they do: the site-system side of the
wire format, used by `coi sign`, the demo and the tests."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Protocol

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aggregates.policy import Policy, fields_of
from aggregates.roles import WITNESSED, meanings
from ledger.wire import events as ev
from ledger.wire.decoding import decode_body
from ledger.wire.dsse import Signer, sign
from ledger.wire.keys import keyid_for, public_raw


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


class Identity(Protocol):
    """Who signs: enough to write a Part 11 manifestation."""

    @property
    def principal_id(self) -> str: ...
    @property
    def printed_name(self) -> str: ...
    @property
    def kind(self) -> str: ...


def manifestations(
    signers: Sequence[Identity],
    tag: str,
    at: datetime,
    witness: str | None = None,
    meaning: str | None = None,
    decision: str | None = None,
) -> list[ev.Manifestation]:
    """Every person who signs states name, time and meaning inside the body: the witness
    `witnessed`, the others `meaning` or else the first their part allows (aggregates/roles.py;
    a disposition's by its `decision`)."""
    return [
        ev.Manifestation(
            principal=m.principal_id,
            printed_name=m.printed_name,
            signed_at=at,
            meaning=WITNESSED[0]  # type: ignore[arg-type]  # the table's values are meanings; mypy sees str
            if m.principal_id == witness
            else meaning or meanings(tag, decision)[0],
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
    fields.setdefault(
        "manifestations",
        manifestations(signers, tag, at, fields.get("witness"), decision=fields.get("decision")),
    )
    body = cls(occurred_at=at, actor=actor.principal_id, **fields)
    return sign(msgspec.json.encode(body), [m.signer for m in signers])


def registration(
    admin: Member,
    member: Member,
    at: datetime,
    cosigners: tuple[Member, ...] = (),
    sites: Sequence[str] | None = None,
) -> bytes:
    """`admin` registers `member` (the first administrator registers itself), bound to
    `sites` (default: its own site), with `cosigners` (a second administrator, for a grant
    under dual control)."""
    return envelope(
        ev.PrincipalRegistered,
        admin,
        at,
        cosigners,
        principal_id=member.principal_id,
        kind=member.kind,
        printed_name=member.printed_name,
        roles=list(member.roles),
        public_key=member.public_key,
        valid_from=at,
        sites=[member.site] if sites is None else list(sites),
    )


@dataclass(frozen=True)
class SiteInfo:
    """A site as `coi sites add` registers it (aggregates/site.py)."""

    code: str
    name: str
    country: str
    time_zone: str
    kind: str


def site_record(admin: Member, site: SiteInfo, at: datetime) -> bytes:
    """`admin` registers `site`."""
    return envelope(ev.SiteRegistered, admin, at, **asdict(site))


def adoption(admins: Sequence[Member], policy: Policy, at: datetime, reason: str) -> bytes:
    """A policy record (a boundary) adopting `policy`, signed by every one of `admins`."""
    first, *others = admins
    return envelope(
        ev.PolicyAdopted, first, at, tuple(others), version=policy.version, reason=reason, **fields_of(policy)
    )


class SigningIdentity(Identity, Protocol):
    @property
    def signer(self) -> Signer: ...


@dataclass(frozen=True)
class Cosigner:
    """A person who signs later (`coi cosign`): named in the body now, no key here."""

    principal_id: str
    printed_name: str
    kind: str = "person"


def sign_json(
    body: dict[str, Any],
    keys: Sequence[SigningIdentity],
    now: datetime,
    meaning: str | None = None,
    cosigners: Sequence[Cosigner] = (),
) -> bytes:
    """Sign a body written by hand or by a site system: each person's manifestation is added
    when the body has none (the `cosigners`' too: their signatures are added to the envelope
    later, over the same body), and the body is checked strictly before anything is signed."""
    if "manifestations" not in body:
        witness, decision = body.get("witness"), body.get("decision")
        tag = str(body.get("type", ""))
        body["manifestations"] = msgspec.to_builtins(
            manifestations(
                [*keys, *cosigners], tag, now, witness if isinstance(witness, str) else None, meaning,
                decision if isinstance(decision, str) else None,
            )
        )  # fmt: skip
    raw = msgspec.json.encode(body)
    decode_body(raw, now)
    return sign(raw, [k.signer for k in keys])
