"""Principals (people, devices, site systems), their keys and roles, event-sourced so that
"who was allowed to sign what, when" can be replayed."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from uuid import NAMESPACE_URL, UUID, uuid5

from aggregates.base import Ledgered
from aggregates.roles import (
    CUSTODIAN_ROLES,
    OPEN_TO_AUTHORS,
    PEOPLE_ONLY_EVENTS,
    PEOPLE_ONLY_ROLES,
    REASON_REQUIRED,
    allowed,
)
from ledger.wire.decoding import CLOCK_SKEW
from ledger.wire.events import (
    BedsideIdentityVerified,
    CustodyTransferred,
    Event,
    PrincipalKeyRotated,
    PrincipalRegistered,
    PrincipalRevoked,
    RegistryEvent,
)
from ledger.wire.keys import keyid_for
from ledger.wire.rejection import Rejected

# How long after a routine rotation the replaced key may still sign what was in flight when
# it was replaced, judged at the ledger's receipt time. Never after a revocation or a loss.
# A constant, not a setting: a verifier replaying key state must know the value in force.
ROTATION_GRACE = timedelta(minutes=10)

NAMESPACE = uuid5(NAMESPACE_URL, "https://coi-ledger.example/principals")


@lru_cache(maxsize=65536)
def principal_uuid(principal_id: str) -> UUID:
    return uuid5(NAMESPACE, principal_id)


def public_key_raw(text: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise Rejected("invalid_value", "public_key must be base64 of 32 raw bytes", "public_key")
    return raw


@dataclass
class KeyState:
    public_raw: bytes
    valid_from: datetime
    valid_until: datetime | None = None  # superseded by rotation
    revoked_at: datetime | None = None
    grace: timedelta = timedelta(0)  # after valid_until, for a routine rotation


def valid_from_problem(valid_from: datetime, received_at: datetime) -> Rejected | None:
    """A key may not claim validity from before the ledger heard of it (beyond the clock
    skew): back-dating a key would let it sign what happened before it existed."""
    if valid_from < received_at - CLOCK_SKEW:
        return Rejected(
            "valid_from_too_early",
            f"valid_from {valid_from.isoformat()} is more than {int(CLOCK_SKEW.total_seconds() // 60)} "
            f"minutes before the ledger received it ({received_at.isoformat()}); a key is valid "
            "from when it is registered: leave valid_from out or set it to now or later",
            "valid_from",
        )
    return None


class Principal(Ledgered):
    """A person, device or site system: its roles and every key it ever had."""

    def mutate(self, body: Event) -> None:
        if isinstance(body, PrincipalRegistered):
            raw = public_key_raw(body.public_key)
            self.principal_id: str = body.principal_id
            self.kind: str = body.kind
            self.printed_name: str = body.printed_name
            self.roles: frozenset[str] = frozenset(body.roles)
            self.registered_from: datetime = body.valid_from
            self.revoked_at: datetime | None = None  # the principal as a whole
            self.keys: dict[str, KeyState] = {
                keyid_for(body.principal_id, raw): KeyState(raw, body.valid_from)
            }
        elif isinstance(body, PrincipalKeyRotated):
            grace = ROTATION_GRACE if body.routine else timedelta(0)
            for state in self.keys.values():
                if state.valid_until is None:
                    state.valid_until, state.grace = body.valid_from, grace
            raw = public_key_raw(body.public_key)
            self.keys[keyid_for(self.principal_id, raw)] = KeyState(raw, body.valid_from)
        elif isinstance(body, PrincipalRevoked):
            if body.keyid is None and self.revoked_at is None:
                self.revoked_at = body.effective_at
            for keyid, state in self.keys.items():
                if body.keyid in (None, keyid) and state.revoked_at is None:
                    state.revoked_at = body.effective_at
                    state.grace = timedelta(0)

    def check(self, body: RegistryEvent) -> None:
        """Rules for a change to this (existing) principal."""
        if isinstance(body, PrincipalRegistered):
            raise Rejected(
                "principal_exists", f"principal {body.principal_id} is already registered",
                "principal_id",
            )  # fmt: skip
        if isinstance(body, PrincipalKeyRotated):
            raw = public_key_raw(body.public_key)
            if keyid_for(self.principal_id, raw) in self.keys:
                raise Rejected("invalid_value", "that key was already registered", "public_key")
        if isinstance(body, PrincipalRevoked) and body.keyid and body.keyid not in self.keys:
            raise Rejected("unknown_key", f"{body.keyid} is not a key of {self.principal_id}", "keyid")

    def key_problem(
        self,
        keyid: str,
        occurred_at: datetime,
        received_at: datetime,
        rotation_grace: timedelta | None = None,
    ) -> Rejected | None:
        """Why this key may not sign an event that occurred at `occurred_at` and reached the
        ledger at `received_at`, or None. The key must be valid when the ledger receives the
        envelope (the ledger is the clock of record: a signer cannot back-date its way past a
        revocation), while the principal's registration and non-revocation are judged at
        occurred_at (a late entry across a routine rotation is signed with the current key).
        `rotation_grace`: the grace of the policy in force for a key replaced by a routine
        rotation (None: ROTATION_GRACE, the grace before policy records)."""
        if occurred_at < self.registered_from:
            return Rejected(
                "key_not_yet_valid",
                f"{self.principal_id} is registered from {self.registered_from.isoformat()}, "
                f"after occurred_at {occurred_at.isoformat()}",
                "signatures",
            )
        if self.revoked_at is not None and occurred_at >= self.revoked_at:
            return Rejected(
                "key_revoked",
                f"{self.principal_id} was revoked at {self.revoked_at.isoformat()}, "
                f"before occurred_at {occurred_at.isoformat()}",
                "signatures",
            )
        state = self.keys[keyid]
        if state.revoked_at is not None and received_at >= state.revoked_at:
            return Rejected(
                "key_revoked",
                f"key {keyid} was revoked at {state.revoked_at.isoformat()}; "
                f"the ledger received this at {received_at.isoformat()}",
                "signatures",
            )
        if received_at < state.valid_from:
            return Rejected(
                "key_not_yet_valid",
                f"key {keyid} is valid from {state.valid_from.isoformat()}; "
                f"the ledger received this at {received_at.isoformat()}",
                "signatures",
            )
        grace = rotation_grace if state.grace and rotation_grace is not None else state.grace
        if state.valid_until is not None and received_at >= state.valid_until + grace:
            return Rejected(
                "key_expired",
                f"key {keyid} was replaced by rotation at {state.valid_until.isoformat()}; "
                "sign with the current key (a late entry keeps its own occurred_at)",
                "signatures",
            )
        return None

    def can_administer(self, at: datetime, revoking: PrincipalRevoked | None = None) -> bool:
        """An administrator with a key that can sign at `at`, counting a key that `revoking`
        would revoke as gone (a key valid only from later does not count: until then
        nobody could use it)."""
        if "admin" not in self.roles or (self.revoked_at is not None and self.revoked_at <= at):
            return False
        return any(
            state.valid_from <= at
            and (state.valid_until is None or at < state.valid_until)
            and (state.revoked_at is None or at < state.revoked_at)
            and not (revoking is not None and revoking.keyid in (None, keyid))
            for keyid, state in self.keys.items()
        )


def revocation_problem(
    body: PrincipalRevoked, target: Principal, administrators: Iterable[Principal], at: datetime
) -> Rejected | None:
    """No revocation received at `at` may leave the ledger without an administrator who can
    sign then: nobody could register, rotate or revoke anything ever again."""
    if not target.can_administer(at) or target.can_administer(at, body):
        return None
    if any(a.principal_id != target.principal_id and a.can_administer(at) for a in administrators):
        return None
    return Rejected(
        "last_administrator",
        f"{target.principal_id} is the last administrator; register another one first",
        "principal_id",
    )


def check_registration(body: PrincipalRegistered) -> None:
    """Rules for a new principal: the admin and qa roles are a person's."""
    reserved = sorted(PEOPLE_ONLY_ROLES.intersection(body.roles))
    if body.kind != "person" and reserved:
        raise Rejected(
            "person_required", f"a {body.kind} cannot hold the {', '.join(reserved)} role; only a person",
            "kind",
        )  # fmt: skip


def authorize(body: Event, signers: dict[str, Principal]) -> None:
    """Authority checks that need only the signers: the actor signed, its role allows the
    event type, two-person steps carry both signatures, and every person's signature has
    its Part 11 manifestation (printed name, time, meaning) inside the signed body."""
    tag = type(body).__struct_config__.tag
    actor = signers.get(body.actor)
    if actor is None:
        raise Rejected("actor_not_signer", f"actor {body.actor} did not sign the envelope", "actor")
    if not allowed(actor.roles, str(tag)) and tag not in OPEN_TO_AUTHORS:
        raise Rejected(
            "role_not_allowed",
            f"{body.actor} has roles {sorted(actor.roles)}, none of which may sign {tag}",
            "type",
        )
    if tag in PEOPLE_ONLY_EVENTS and actor.kind != "person":
        raise Rejected(
            "person_required", f"{tag} is signed by a person, {body.actor} is a {actor.kind}", "actor"
        )
    if tag in REASON_REQUIRED and not body.reason:
        raise Rejected("reason_required", f"{tag} needs a reason", "reason")
    for name, cosigner in _cosigners(body):
        if cosigner not in signers:
            raise Rejected("missing_cosignature", f"{name} {cosigner} did not sign", name)
    _check_parties(body, signers)
    manifested = {m.principal: m for m in body.manifestations}
    for pid, principal in signers.items():
        if principal.kind != "person":
            if pid in manifested:
                raise Rejected(
                    "person_required",
                    f"{pid} is a {principal.kind}: only a person signs with a manifestation",
                    "manifestations",
                )
            continue
        m = manifested.get(pid)
        if m is None:
            raise Rejected(
                "missing_manifestation",
                f"{pid} signed as a person but the body has no manifestation for them",
                "manifestations",
            )
        if m.printed_name != principal.printed_name:
            raise Rejected(
                "manifestation_mismatch",
                f"printed_name {m.printed_name!r} is not the registered name of {pid}",
                "manifestations",
            )
    for pid in manifested.keys() - signers.keys():
        raise Rejected(
            "manifestation_mismatch", f"manifestation for {pid}, who did not sign", "manifestations"
        )


def _cosigners(body: Event) -> list[tuple[str, str]]:
    if isinstance(body, CustodyTransferred):
        return [("from_custodian", body.from_custodian), ("to_custodian", body.to_custodian)]
    if isinstance(body, BedsideIdentityVerified):
        if body.witness == body.actor:
            raise Rejected("missing_cosignature", "the witness must be a second person", "witness")
        return [("witness", body.witness)]
    return []


def _check_parties(body: Event, signers: dict[str, Principal]) -> None:
    """The bedside witness is a treating person; custody goes only to a person who holds
    material (the cosignature check has made sure both are signers)."""
    if isinstance(body, BedsideIdentityVerified):
        witness = signers[body.witness]
        if witness.kind != "person":
            raise Rejected("person_required", f"witness {body.witness} is a {witness.kind}", "witness")
        if not allowed(witness.roles, "bedside_identity_verified"):
            raise Rejected(
                "role_not_allowed", f"witness {body.witness} has no role that may witness a bedside check",
                "witness",
            )  # fmt: skip
    if isinstance(body, CustodyTransferred):
        taker = signers[body.to_custodian]
        if taker.kind != "person" or not CUSTODIAN_ROLES & taker.roles:
            raise Rejected(
                "not_a_custodian",
                f"{body.to_custodian} ({taker.kind}, roles {sorted(taker.roles)}) cannot hold material: "
                f"custody goes to a person with one of the roles {sorted(CUSTODIAN_ROLES)}",
                "to_custodian",
            )
