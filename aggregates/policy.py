"""The acceptance policy: which version of the rules and which settings judge a record.

Versions are boundaries in the log: a signed policy record says from where on a version and
its settings are in force, and each record is judged by the policy in force at its place.
Records before the first boundary are judged by version 0, the rules before issue 10. A
writer always judges new records by the newest version it knows (`RULES_VERSION`) with the
settings in force, and refuses to write to a log whose version in force is newer than that.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING

from ledger.wire.rejection import ReasonCode, Rejected

if TYPE_CHECKING:  # only annotations: `coi policy`'s flags read SETTINGS without the wire Structs
    from ledger.wire.events import PolicyAdopted

# The newest version of the rules this code enforces. Raise it, and gate the new rule with
# `policy.version >= N`, whenever a rule tightens: records accepted before stay valid.
RULES_VERSION = 3
# Rules that hold only where the log itself adopted them, not by the writer's version alone:
# each needs records (sites, bindings) that an existing ledger writes first (README: Sites).
SITES_ADOPTED = 3


@dataclass(frozen=True)
class Setting:
    """A setting that changes what is accepted: its bounds are fixed here, not by a writer."""

    name: str
    env: str  # the environment variable that seeds `coi init`
    default: timedelta | int
    lowest: timedelta | int
    highest: timedelta | int


SETTINGS: tuple[Setting, ...] = (
    # how far a signed time may lie ahead of the ledger's clock
    Setting("skew", "COI_SKEW", timedelta(minutes=5), timedelta(0), timedelta(minutes=15)),
    # how long a key replaced by a routine rotation may still sign what was in flight
    Setting("rotation_grace", "COI_ROTATION_GRACE", timedelta(minutes=10), timedelta(0), timedelta(hours=1)),
    # past this delay between occurred_at and recorded_at, a record reads as entered late
    Setting(
        "late_entry_after",
        "COI_LATE_ENTRY_AFTER",
        timedelta(hours=24),
        timedelta(minutes=1),
        timedelta(days=30),
    ),
    # authenticated failures in a row that lock a key
    Setting("lock_threshold", "COI_LOCK_THRESHOLD", 5, 1, 20),
)


@dataclass(frozen=True)
class Policy:
    version: int = 0
    # The version the log's policy record adopted: `version` less what a newer writer judges
    # by (judging below). Rules that an existing ledger must prepare for key off this one.
    adopted: int = 0
    skew: timedelta = timedelta(minutes=5)
    rotation_grace: timedelta = timedelta(minutes=10)
    late_entry_after: timedelta = timedelta(hours=24)
    lock_threshold: int = 5


# Before any boundary: the rules and settings ledgers were first written under.
LEGACY = Policy()


# --- the settings as a policy record spells them ---------------------------------------


def field_name(setting: Setting) -> str:
    """The body field of a setting: durations in whole seconds, named with their unit."""
    return f"{setting.name}_seconds" if isinstance(setting.default, timedelta) else setting.name


def written(value: timedelta | int) -> str:
    """A setting's value as the duration syntax writes it (`5m`, `24h`, `90s`), or the count."""
    if not isinstance(value, timedelta):
        return str(value)
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        # days from two on: a day reads as 24h, as the defaults are written
        if seconds and seconds % size == 0 and (unit != "d" or seconds >= 2 * size):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def bounds_problem(setting: Setting, value: timedelta | int) -> str | None:
    """Why `value` is out of the setting's bounds, or None."""
    # (value and bounds are of the setting's one type: both durations or both counts)
    if setting.lowest <= value <= setting.highest:  # type: ignore[operator]
        return None
    return (
        f"{setting.name} {written(value)} is outside its bounds "
        f"{written(setting.lowest)}..{written(setting.highest)} (fixed in aggregates/policy.py)"
    )


def fields_of(policy: Policy) -> dict[str, int]:
    """The settings of `policy` as the body fields of a policy record."""
    out = {}
    for s in SETTINGS:
        value = getattr(policy, s.name)
        out[field_name(s)] = int(value.total_seconds()) if isinstance(value, timedelta) else value
    return out


def policy_of(body: PolicyAdopted) -> Policy:
    """The policy a policy record adopts."""
    values: dict[str, timedelta | int] = {}
    for s in SETTINGS:
        raw = getattr(body, field_name(s))
        values[s.name] = timedelta(seconds=raw) if isinstance(s.default, timedelta) else raw
    return with_settings(Policy(body.version, body.version), values)


_DURATION = re.compile(r"([0-9]{1,7})([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_setting(setting: Setting, text: str, where: str) -> timedelta | int:
    """A setting written as `5m`, `10m`, `24h`, `30s`, `1h30m` (durations) or a whole number
    (counts), within its bounds; ValueError naming `where` (a variable or a flag) otherwise."""
    text = text.strip()
    value: timedelta | int
    if isinstance(setting.default, timedelta):
        parts = _DURATION.findall(text)
        if not text or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"{where}={text!r}: write a duration like 30s, 5m, 24h or 1h30m")
        value = timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in parts))
    elif text.isdigit() and text.isascii():
        value = int(text)
    else:
        raise ValueError(f"{where}={text!r}: write a whole number")
    problem = bounds_problem(setting, value)
    if problem is not None:
        raise ValueError(f"{where}: {problem}")
    return value


def seeded(environ: Mapping[str, str]) -> Policy:
    """The first boundary `coi init` writes: this code's rules with the settings the
    environment gives (COI_SKEW ...), the defaults otherwise."""
    values = {s.name: parse_setting(s, environ[s.env], s.env) for s in SETTINGS if environ.get(s.env)}
    return with_settings(Policy(RULES_VERSION, RULES_VERSION), values)


def with_settings(policy: Policy, values: Mapping[str, timedelta | int]) -> Policy:
    """`policy` with the settings named in `values` replaced."""
    return replace(policy, **values)  # type: ignore[arg-type]  # each value has its setting's type


# --- the policy records: rules ---------------------------------------------------------


@dataclass(frozen=True)
class PolicyState:
    """The policy in force and who adopted it (no record yet: LEGACY, adopted by nobody)."""

    policy: Policy = LEGACY
    signed_by: tuple[str, ...] = ()
    reason: str | None = None


@dataclass(frozen=True)
class PolicyContext:
    """What deciding on a policy record needs beyond the body, as at the ledger's receipt."""

    admin_signers: frozenset[str]  # signers with the admin role and a key valid at receipt
    administrators: int  # administrators in the registry who can sign at receipt
    # principals who can sign at receipt and are bound to no registered site (aggregates/site.py)
    unbound: tuple[str, ...] = ()


def decide(state: PolicyState, body: PolicyAdopted, ctx: PolicyContext) -> Rejected | None:
    """A new boundary: adopted by an administrator (by two once two exist), at a version no
    lower than the one in force and no higher than this code knows, each setting within its
    bounds. The same version may be adopted again to change settings: the rules stay the
    same, and each record is still judged by the settings in force at its place."""
    if body.actor not in ctx.admin_signers:
        return Rejected(ReasonCode.ROLE_NOT_ALLOWED, f"{body.actor} is not an administrator", "actor")
    if ctx.administrators >= 2 and len(ctx.admin_signers) < 2:
        return Rejected(
            ReasonCode.MISSING_COSIGNATURE,
            f"the registry has {ctx.administrators} administrators: a policy record needs the "
            "signatures of two of them (coi policy set --key FILE --key FILE2)",
            "signatures",
        )
    if not body.reason:
        return Rejected(ReasonCode.REASON_REQUIRED, "policy_adopted needs a reason", "reason")
    if body.version < state.policy.version:
        return Rejected(
            ReasonCode.POLICY_DOWNGRADE,
            f"version {body.version} is lower than version {state.policy.version} in force: "
            "versions only increase",
            "version",
        )
    if body.version > RULES_VERSION:
        return Rejected(
            ReasonCode.POLICY_VERSION_UNKNOWN,
            f"version {body.version} is newer than the rules this code knows (version {RULES_VERSION})",
            "version",
        )
    if state.policy.version < SITES_ADOPTED <= body.version and ctx.unbound:
        return Rejected(
            ReasonCode.SITE_NOT_BOUND,
            f"from version {SITES_ADOPTED} every signer is bound to a registered site; "
            f"{', '.join(ctx.unbound)} {'is' if len(ctx.unbound) == 1 else 'are'} bound to none: "
            "coi sites add, then coi principals bind (or revoke them) first",
            "version",
        )
    adopted = policy_of(body)
    for s in SETTINGS:
        problem = bounds_problem(s, getattr(adopted, s.name))
        if problem is not None:
            return Rejected(ReasonCode.INVALID_VALUE, f"{field_name(s)}: {problem}", field_name(s))
    return None


def evolve(state: PolicyState, body: PolicyAdopted) -> PolicyState:
    signed_by = tuple(m.principal for m in body.manifestations) or (body.actor,)
    return PolicyState(policy_of(body), signed_by, body.reason)


def judging(in_force: Policy) -> Policy | Rejected:
    """The policy a writer judges new records by: its own rules with the settings in force;
    refused when the log is already under newer rules than this code knows."""
    if in_force.version > RULES_VERSION:
        return Rejected(
            ReasonCode.POLICY_VERSION_UNKNOWN,
            f"this ledger is under rules version {in_force.version}, newer than this code's "
            f"({RULES_VERSION}): upgrade coi before writing to it",
        )
    return replace(in_force, version=RULES_VERSION, adopted=in_force.version)
