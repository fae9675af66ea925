"""Principals (people, devices, site systems), their keys and roles: "who was allowed to sign
what, when", replayable from the registry records alone.

Plain rules over plain state: `decide` judges a registry change, `evolve` applies one, and
`key_problem`, `genesis_key` and `authorize` judge the signers of any record. The ledger and
the verifier both use them, so key state and the genesis rule exist once.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import assert_never
from uuid import NAMESPACE_URL, UUID, uuid5

from aggregates import site
from aggregates.base import Claims, Context
from aggregates.policy import SITES_ADOPTED, Policy
from aggregates.roles import (
    CUSTODIAN_ROLES,
    OPEN_TO_AUTHORS,
    PEOPLE_ONLY_EVENTS,
    PEOPLE_ONLY_ROLES,
    REASON_REQUIRED,
    WITNESSED,
    allowed,
    meanings,
)
from aggregates.security import LOCKOUT_VERSION
from ledger.wire.events import (
    BedsideIdentityVerified,
    CustodyTransferred,
    Disposition,
    Event,
    Manifestation,
    PrincipalKeyLocked,
    PrincipalKeyRotated,
    PrincipalKeyUnlocked,
    PrincipalRegistered,
    PrincipalRevoked,
    PrincipalSitesBound,
    RegistryEvent,
)
from ledger.wire.keys import keyid_for
from ledger.wire.rejection import ReasonCode, Rejected

NAMESPACE = uuid5(NAMESPACE_URL, "https://coi-ledger.example/principals")

# The claim the first administrator makes: while it is free, a self-signed registration of an
# administrator is the one record the registry cannot vouch for.
GENESIS = ("genesis", "administrator")


_NO_GRACE = timedelta(0)  # a key replaced other than by a routine rotation


@lru_cache(maxsize=65536)
def principal_uuid(principal_id: str) -> UUID:
    return uuid5(NAMESPACE, principal_id)


def public_key_raw(text: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise Rejected(ReasonCode.INVALID_VALUE, "public_key must be base64 of 32 raw bytes", "public_key")
    return raw


@dataclass
class KeyState:
    public_raw: bytes
    valid_from: datetime
    valid_until: datetime | None = None  # superseded by rotation
    revoked_at: datetime | None = None
    # Replaced by a routine rotation: it may still sign for the policy's rotation grace after
    # valid_until. Never after a revocation or a loss.
    routine: bool = False
    # Locked after repeated authenticated failures (aggregates/security.py) until unlocked;
    # `lock_changed_at`: the last lock or unlock, from when failures count again.
    locked: bool = False
    lock_changed_at: datetime | None = None


@dataclass
class PrincipalState:
    """A person, device or site system: its roles and every key it ever had."""

    principal_id: str
    kind: str
    printed_name: str
    roles: frozenset[str]
    registered_from: datetime
    keys: dict[str, KeyState] = field(default_factory=dict)
    revoked_at: datetime | None = None  # the principal as a whole
    sites: frozenset[str] = frozenset()  # the sites it is bound to (aggregates/site.py)
    registered_site: str = ""  # where it was registered (the ledger's service signs there)


# ------------------------------------------------------------------ registry changes


def decide(state: PrincipalState | None, body: RegistryEvent, ctx: Context) -> Rejected | None:
    """Why this change to the principal `state` (None: not registered) may not be recorded."""
    match body:
        case PrincipalRegistered():
            if state is not None:
                return _valid_from_problem(body.valid_from, ctx) or Rejected(
                    ReasonCode.PRINCIPAL_EXISTS,
                    f"principal {body.principal_id} is already registered",
                    "principal_id",
                )
            return (
                _valid_from_problem(body.valid_from, ctx)
                or registration_problem(body)
                or _binding_problem(body.sites, ctx)
                or dual_control_problem(body, ctx)
            )
        case PrincipalKeyRotated():
            problem = _valid_from_problem(body.valid_from, ctx)
            if problem is not None or state is None:
                return problem or _unknown(body.principal_id)
            raw = public_key_raw(body.public_key)
            if keyid_for(state.principal_id, raw) in state.keys:
                return Rejected(ReasonCode.INVALID_VALUE, "that key was already registered", "public_key")
            return dual_control_problem(body, ctx)
        case PrincipalRevoked():
            if state is None:
                return _unknown(body.principal_id)
            if body.keyid and body.keyid not in state.keys:
                return Rejected(
                    ReasonCode.UNKNOWN_KEY, f"{body.keyid} is not a key of {state.principal_id}", "keyid"
                )
            return revocation_problem(
                body,
                state,
                ctx.registry.administrators(),
                ctx.received_at,
                ctx.policy.version >= DUAL_CONTROL_VERSION,
            )
        case PrincipalSitesBound():
            if state is None:
                return _unknown(body.principal_id)
            return _binding_problem(body.sites, ctx)
        case PrincipalKeyLocked() | PrincipalKeyUnlocked():
            if state is None:
                return _unknown(body.principal_id)
            key = state.keys.get(body.keyid)
            if key is None:
                return Rejected(
                    ReasonCode.UNKNOWN_KEY, f"{body.keyid} is not a key of {state.principal_id}", "keyid"
                )
            locking = isinstance(body, PrincipalKeyLocked)
            if key.locked == locking:
                return Rejected(
                    ReasonCode.INVALID_VALUE,
                    f"{body.keyid} is {'already' if locking else 'not'} locked",
                    "keyid",
                )
            return None
        case _:
            assert_never(body)


def evolve(state: PrincipalState | None, body: RegistryEvent) -> PrincipalState:
    """The principal after `body`. Changes `state` in place (and returns it): the ledger keeps
    one state per principal and copies would cost more than the rules."""
    match body:
        case PrincipalRegistered():
            raw = public_key_raw(body.public_key)
            return PrincipalState(
                body.principal_id,
                body.kind,
                body.printed_name,
                frozenset(body.roles),
                body.valid_from,
                {keyid_for(body.principal_id, raw): KeyState(raw, body.valid_from)},
                sites=frozenset(body.sites),
                registered_site=body.site,
            )
        case PrincipalKeyRotated():
            assert state is not None, "a rotation of a principal never registered"
            for key in state.keys.values():
                if key.valid_until is None:
                    key.valid_until, key.routine = body.valid_from, body.routine
            raw = public_key_raw(body.public_key)
            state.keys[keyid_for(state.principal_id, raw)] = KeyState(raw, body.valid_from)
            return state
        case PrincipalRevoked():
            assert state is not None, "a revocation of a principal never registered"
            if body.keyid is None and state.revoked_at is None:
                state.revoked_at = body.effective_at
            for keyid, key in state.keys.items():
                if body.keyid in (None, keyid) and key.revoked_at is None:
                    key.revoked_at, key.routine = body.effective_at, False
            return state
        case PrincipalSitesBound():
            assert state is not None, "sites bound to a principal never registered"
            state.sites = state.sites | frozenset(body.sites)
            return state
        case PrincipalKeyLocked() | PrincipalKeyUnlocked():
            assert state is not None, "a lock of a principal never registered"
            key = state.keys[body.keyid]
            key.locked, key.lock_changed_at = isinstance(body, PrincipalKeyLocked), body.occurred_at
            return state
        case _:
            assert_never(body)


def _unknown(principal_id: str) -> Rejected:
    return Rejected(
        ReasonCode.UNKNOWN_PRINCIPAL, f"principal {principal_id} is not registered", "principal_id"
    )


def _binding_problem(sites: list[str], ctx: Context) -> Rejected | None:
    """Where the log adopted the site rules, a principal is bound to registered sites only;
    before, bindings are as free as the sites events named (the adoption waits until every
    signer has one registered site: aggregates/policy.py decide)."""
    return site.unknown_sites(sites, ctx.sites, "sites") if ctx.policy.adopted >= SITES_ADOPTED else None


def _valid_from_problem(valid_from: datetime, ctx: Context) -> Rejected | None:
    """A key may not claim validity from before the ledger heard of it (beyond the clock
    skew): back-dating a key would let it sign what happened before it existed. A rule of
    version 1: ledgers under version 0 accepted such keys."""
    skew = ctx.policy.skew
    if ctx.policy.version >= 1 and valid_from < ctx.received_at - skew:
        return Rejected(
            ReasonCode.VALID_FROM_TOO_EARLY,
            f"valid_from {valid_from.isoformat()} is more than {int(skew.total_seconds() // 60)} "
            f"minutes before the ledger received it ({ctx.received_at.isoformat()}); a key is valid "
            "from when it is registered: leave valid_from out or set it to now or later",
            "valid_from",
        )
    return None


def registration_problem(body: PrincipalRegistered) -> Rejected | None:
    """Rules for a new principal: the admin and qa roles are a person's."""
    reserved = sorted(PEOPLE_ONLY_ROLES.intersection(body.roles))
    if body.kind != "person" and reserved:
        return Rejected(
            ReasonCode.PERSON_REQUIRED,
            f"a {body.kind} cannot hold the {', '.join(reserved)} role; only a person",
            "kind",
        )
    return None


# Roles whose grant needs two administrators: they decide who may sign anything, and
# whether a product is released.
DUAL_CONTROL_ROLES = frozenset({"admin", "qa"})
# The rules version from which dual control holds (aggregates/policy.py).
DUAL_CONTROL_VERSION = 3


def dual_control_problem(body: PrincipalRegistered | PrincipalKeyRotated, ctx: Context) -> Rejected | None:
    """From rules version 3, one administrator alone can neither grant authority nor replace
    a person's key (issue 14, item 3): granting admin or qa and a key after a loss need two
    administrators among the signers (`ctx.roles`); a routine rotation needs the principal's
    old key and an administrator other than the principal. Until the ledger has two
    administrators who can sign there is no second to ask: one signs an admin grant (that is
    how the second arrives) and a rotation alone; never a qa grant."""
    if ctx.policy.version < DUAL_CONTROL_VERSION:
        return None
    admins = sorted(pid for pid, roles in ctx.roles.items() if "admin" in roles)
    if isinstance(body, PrincipalKeyRotated) and body.routine and body.principal_id not in ctx.roles:
        return Rejected(
            ReasonCode.MISSING_COSIGNATURE,
            f"a routine rotation is signed with {body.principal_id}'s current key too "
            "(coi principals rotate --old-key FILE); after a loss, leave out --routine and have two "
            "administrators sign",
            "signatures",
        )
    if isinstance(body, PrincipalKeyRotated):
        others = set(admins) - {body.principal_id} if body.routine else set(admins)
        if len(others) >= (1 if body.routine else 2) or _bootstrap(ctx):
            return None
        if body.routine:
            return _second_administrator(
                f"a routine rotation of {body.principal_id}'s key needs an administrator other than its owner"
            )
        return _second_administrator(
            f"registering a key for {body.principal_id} after a loss (not --routine) needs two "
            f"administrators' signatures; {len(admins)} signed"
        )
    granted = sorted(DUAL_CONTROL_ROLES.intersection(body.roles))
    if not granted or len(admins) >= 2 or (granted == ["admin"] and _bootstrap(ctx)):
        return None
    return _second_administrator(
        f"granting {' and '.join(granted)} to {body.principal_id} needs two administrators' "
        f"signatures; {len(admins)} signed"
    )


def _bootstrap(ctx: Context) -> bool:
    """Fewer than two administrators can sign now: dual control is not yet possible."""
    return sum(can_administer(a, ctx.received_at) for a in ctx.registry.administrators()) < 2


def _second_administrator(what: str) -> Rejected:
    return Rejected(
        ReasonCode.SECOND_ADMINISTRATOR_REQUIRED,
        f"{what}: prepare it with --cosigner ID --out draft.json and have the other administrator "
        "run coi cosign --key FILE draft.json",
        "signatures",
    )


def can_administer(state: PrincipalState, at: datetime, revoking: PrincipalRevoked | None = None) -> bool:
    """An administrator with a key that can sign at `at` (can_sign)."""
    return "admin" in state.roles and can_sign(state, at, revoking)


def can_sign(state: PrincipalState, at: datetime, revoking: PrincipalRevoked | None = None) -> bool:
    """A principal with a key that can sign at `at`, counting a key that `revoking` would
    revoke as gone (a key valid only from later does not count: until then nobody could
    use it)."""
    if state.revoked_at is not None and state.revoked_at <= at:
        return False
    return any(
        key.valid_from <= at
        and (key.valid_until is None or at < key.valid_until)
        and (key.revoked_at is None or at < key.revoked_at)
        and not (revoking is not None and revoking.keyid in (None, keyid))
        for keyid, key in state.keys.items()
    )


def revocation_problem(
    body: PrincipalRevoked,
    target: PrincipalState,
    administrators: Iterable[PrincipalState],
    at: datetime,
    dual: bool = False,
) -> Rejected | None:
    """No revocation received at `at` may leave the ledger without an administrator who can
    sign then: nobody could register, rotate or revoke anything ever again. Under `dual`
    control (rules version 3), once two administrators can sign, none may leave fewer than
    two: one alone could then grant authority."""
    if not can_administer(target, at) or can_administer(target, at, body):
        return None
    others = sum(a.principal_id != target.principal_id and can_administer(a, at) for a in administrators)
    if others >= 2 or (others == 1 and not dual):
        return None
    if others == 0:
        return Rejected(
            ReasonCode.LAST_ADMINISTRATOR,
            f"{target.principal_id} is the last administrator; register another one first",
            "principal_id",
        )
    return Rejected(
        ReasonCode.LAST_ADMINISTRATOR,
        f"revoking {target.principal_id} would leave one administrator, and dual control needs two; "
        "register another one first",
        "principal_id",
    )


def unbound(principals: Iterable[PrincipalState], sites: Collection[str], at: datetime) -> tuple[str, ...]:
    """Principals who can still sign at `at` and are bound to no registered site: adopting
    the site rules would lock them out, so the adoption waits (aggregates/policy.py decide)."""
    return tuple(
        sorted(p.principal_id for p in principals if can_sign(p, at) and not p.sites.intersection(sites))
    )


# ------------------------------------------------------------------ signers of any record


def genesis_key(body: object, keyid: str, claims: Claims) -> bytes | None:
    """The public key of a self-signed first administrator, while no administrator exists:
    the one key the registry cannot vouch for. None for any other body or key."""
    if not isinstance(body, PrincipalRegistered) or body.actor != body.principal_id:
        return None
    if claims.owner(*GENESIS) is not None:
        return None
    try:
        raw = public_key_raw(body.public_key)
    except Rejected:
        return None
    return raw if keyid == keyid_for(body.principal_id, raw) else None


def genesis_problem(body: PrincipalRegistered) -> Rejected | None:
    """The first principal registers itself: a person administrator, valid when it signs."""
    if "admin" not in body.roles or body.kind != "person":
        return Rejected(
            ReasonCode.NO_ADMINISTRATOR, "the first principal must be a person with the admin role", "roles"
        )
    if body.occurred_at < body.valid_from:
        return Rejected(ReasonCode.KEY_NOT_YET_VALID, "valid_from is after occurred_at", "valid_from")
    return None


def signing_key(state: PrincipalState | None, body: object, keyid: str, claims: Claims) -> bytes | None:
    """The public key `keyid` names for this body: one its principal (`state`) holds, or the
    genesis administrator's own; None when the registry holds no such key."""
    if state is None:
        return genesis_key(body, keyid, claims)
    key = state.keys.get(keyid)
    return None if key is None else key.public_raw


def key_problem(
    state: PrincipalState, keyid: str, occurred_at: datetime, received_at: datetime, policy: Policy
) -> Rejected | None:
    """Why this key may not sign an event that occurred at `occurred_at` and reached the
    ledger at `received_at`, or None. The key must be valid when the ledger receives the
    envelope (the ledger is the clock of record: a signer cannot back-date its way past a
    revocation), while the principal's registration and non-revocation are judged at
    occurred_at (a late entry across a routine rotation is signed with the current key)."""
    if occurred_at < state.registered_from:
        return Rejected(
            ReasonCode.KEY_NOT_YET_VALID,
            f"{state.principal_id} is registered from {state.registered_from.isoformat()}, "
            f"after occurred_at {occurred_at.isoformat()}",
            "signatures",
        )
    if state.revoked_at is not None and occurred_at >= state.revoked_at:
        return Rejected(
            ReasonCode.KEY_REVOKED,
            f"{state.principal_id} was revoked at {state.revoked_at.isoformat()}, "
            f"before occurred_at {occurred_at.isoformat()}",
            "signatures",
        )
    key = state.keys[keyid]
    if key.locked and policy.version >= LOCKOUT_VERSION:
        return Rejected(
            ReasonCode.KEY_LOCKED,
            f"key {keyid} is locked after repeated refused signatures (see coi security log); "
            "an administrator unlocks it with coi security unlock",
            "signatures",
        )
    if key.revoked_at is not None and received_at >= key.revoked_at:
        return Rejected(
            ReasonCode.KEY_REVOKED,
            f"key {keyid} was revoked at {key.revoked_at.isoformat()}; "
            f"the ledger received this at {received_at.isoformat()}",
            "signatures",
        )
    if received_at < key.valid_from:
        return Rejected(
            ReasonCode.KEY_NOT_YET_VALID,
            f"key {keyid} is valid from {key.valid_from.isoformat()}; "
            f"the ledger received this at {received_at.isoformat()}",
            "signatures",
        )
    if key.valid_until is not None and received_at >= key.valid_until + (
        policy.rotation_grace if key.routine else _NO_GRACE
    ):
        return Rejected(
            ReasonCode.KEY_EXPIRED,
            f"key {keyid} was replaced by rotation at {key.valid_until.isoformat()}; "
            "sign with the current key (a late entry keeps its own occurred_at)",
            "signatures",
        )
    return None


def authorize(
    body: Event,
    signers: Mapping[str, PrincipalState],
    received_at: datetime,
    policy: Policy,
    sites: Collection[str] = (),
) -> Rejected | None:
    """Authority checks on the signers: the actor signed, its role allows the event type,
    two-person steps carry both signatures, and every person's signature has its Part 11
    manifestation (printed name, time, meaning) inside the signed body; from rules version 2,
    a time between occurred_at and the receipt and a meaning allowed for the event; where
    the log adopted the site rules, signers bound to the event's registered site (`sites`:
    the registered codes; aggregates/site.py)."""
    try:
        _authorize(body, signers, received_at, policy)
    except Rejected as rejected:
        return rejected
    return site.site_problem(body, signers, sites, policy)


def _authorize(
    body: Event, signers: Mapping[str, PrincipalState], received_at: datetime, policy: Policy
) -> None:
    tag = type(body).__struct_config__.tag
    actor = signers.get(body.actor)
    if actor is None:
        raise Rejected(ReasonCode.ACTOR_NOT_SIGNER, f"actor {body.actor} did not sign the envelope", "actor")
    if not allowed(actor.roles, str(tag)) and tag not in OPEN_TO_AUTHORS:
        raise Rejected(
            ReasonCode.ROLE_NOT_ALLOWED,
            f"{body.actor} has roles {sorted(actor.roles)}, none of which may sign {tag}",
            "type",
        )
    if tag in PEOPLE_ONLY_EVENTS and actor.kind != "person":
        raise Rejected(
            ReasonCode.PERSON_REQUIRED,
            f"{tag} is signed by a person, {body.actor} is a {actor.kind}",
            "actor",
        )
    if tag in REASON_REQUIRED and not body.reason:
        raise Rejected(ReasonCode.REASON_REQUIRED, f"{tag} needs a reason", "reason")
    for name, cosigner in _cosigners(body):
        if cosigner not in signers:
            raise Rejected(ReasonCode.MISSING_COSIGNATURE, f"{name} {cosigner} did not sign", name)
    _check_parties(body, signers)
    manifested = {m.principal: m for m in body.manifestations}
    for pid, principal in signers.items():
        if principal.kind != "person":
            if pid in manifested:
                raise Rejected(
                    ReasonCode.PERSON_REQUIRED,
                    f"{pid} is a {principal.kind}: only a person signs with a manifestation",
                    "manifestations",
                )
            continue
        m = manifested.get(pid)
        if m is None:
            raise Rejected(
                ReasonCode.MISSING_MANIFESTATION,
                f"{pid} signed as a person but the body has no manifestation for them",
                "manifestations",
            )
        if m.printed_name != principal.printed_name:
            raise Rejected(
                ReasonCode.MANIFESTATION_MISMATCH,
                f"printed_name {m.printed_name!r} is not the registered name of {pid}",
                "manifestations",
            )
        if policy.version >= 2:
            _meant(body, m, received_at, policy)
    for pid in manifested.keys() - signers.keys():
        raise Rejected(
            ReasonCode.MANIFESTATION_MISMATCH,
            f"manifestation for {pid}, who did not sign (a draft for a cosigner waits for coi cosign)",
            "manifestations",
        )


def _meant(body: Event, m: Manifestation, received_at: datetime, policy: Policy) -> None:
    """A manifestation signed between the event (less the skew) and the ledger's receipt (plus
    the skew: a late entry is signed late), meaning what the signer's part allows
    (aggregates/roles.py MEANINGS)."""
    earliest, latest = body.occurred_at - policy.skew, received_at + policy.skew
    if not earliest <= m.signed_at <= latest:
        raise Rejected(
            ReasonCode.SIGNED_AT_OUT_OF_RANGE,
            f"{m.principal} signed at {m.signed_at.isoformat()}, outside occurred_at less the skew "
            f"({earliest.isoformat()}) to the ledger's receipt plus the skew ({latest.isoformat()})",
            "manifestations",
        )
    tag = str(type(body).__struct_config__.tag)
    decision = body.decision if isinstance(body, Disposition) else None
    if isinstance(body, BedsideIdentityVerified) and m.principal == body.witness:
        allowed_here, part = WITNESSED, "the witness"
    else:
        allowed_here, part = meanings(tag, decision), "a signer"
    if m.meaning not in allowed_here:
        what = f"{tag} ({decision})" if decision else tag
        raise Rejected(
            ReasonCode.MEANING_NOT_ALLOWED,
            f"{m.principal} signed {what} meaning {m.meaning!r}; {part} of it may mean "
            f"{' or '.join(allowed_here)}",
            "manifestations",
        )


def _cosigners(body: Event) -> list[tuple[str, str]]:
    if isinstance(body, CustodyTransferred):
        return [("from_custodian", body.from_custodian), ("to_custodian", body.to_custodian)]
    if isinstance(body, BedsideIdentityVerified):
        if body.witness == body.actor:
            raise Rejected(ReasonCode.MISSING_COSIGNATURE, "the witness must be a second person", "witness")
        return [("witness", body.witness)]
    return []


def _check_parties(body: Event, signers: Mapping[str, PrincipalState]) -> None:
    """The bedside witness is a treating person; custody goes only to a person who holds
    material (the cosignature check has made sure both are signers)."""
    if isinstance(body, BedsideIdentityVerified):
        witness = signers[body.witness]
        if witness.kind != "person":
            raise Rejected(
                ReasonCode.PERSON_REQUIRED, f"witness {body.witness} is a {witness.kind}", "witness"
            )
        if not allowed(witness.roles, "bedside_identity_verified"):
            raise Rejected(
                ReasonCode.ROLE_NOT_ALLOWED,
                f"witness {body.witness} has no role that may witness a bedside check",
                "witness",
            )
    if isinstance(body, CustodyTransferred):
        taker = signers[body.to_custodian]
        if taker.kind != "person" or not CUSTODIAN_ROLES & taker.roles:
            raise Rejected(
                ReasonCode.NOT_A_CUSTODIAN,
                f"{body.to_custodian} ({taker.kind}, roles {sorted(taker.roles)}) cannot hold material: "
                f"custody goes to a person with one of the roles {sorted(CUSTODIAN_ROLES)}",
                "to_custodian",
            )
