"""`coi policy show|set`: the policy in force, and a new boundary signed by administrators
(aggregates/policy.py; README: Policy)."""

from __future__ import annotations

import argparse
import bisect
import sys
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, TextIO

import msgspec

from aggregates.policy import (
    SETTINGS,
    Policy,
    Setting,
    fields_of,
    parse_setting,
    policy_of,
    seeded,
    with_settings,
    written,
)


class SettingView(msgspec.Struct):
    name: str
    value: str  # as `coi policy set` writes it: 5m, 24h, 5
    since_sequence: int | None  # the first record of the run of boundaries that kept this value


class PolicyView(msgspec.Struct):
    version: int
    sequence: int | None  # the boundary in force; None: no policy record yet (version 0)
    recorded_at: datetime | None
    signed_by: list[str]
    reason: str | None
    settings: list[SettingView]


def _flag(setting: Setting) -> str:
    return "--" + setting.name.replace("_", "-")


def add_parser(subparsers: Any) -> None:
    group = subparsers.add_parser("policy", help="the rules version and settings in force")
    commands = group.add_subparsers(dest="policy_command", required=True)
    s = commands.add_parser("show", help="the policy in force: version, settings, since when, by whom")
    s.add_argument("--format", choices=["table", "json"], default="table")
    s = commands.add_parser("set", help="adopt a new boundary, signed by one or two administrators")
    s.add_argument("--version", type=int, required=True, help="the rules version: never lower than in force")
    for setting in SETTINGS:
        what = "duration, e.g. 5m, 24h, 30s" if setting.name != "lock_threshold" else "a count"
        bounds = f"{written(setting.lowest)}..{written(setting.highest)}"
        s.add_argument(_flag(setting), help=f"{what}; bounds {bounds} (default: as in force)")
    s.add_argument("--reason", required=True, help="why the policy changes (recorded, signed)")
    s.add_argument(
        "--key", action="append", required=True, help="an administrator's key file; twice once two exist"
    )
    s.add_argument("--site", help="site where the administrators act (or COI_SITE)")
    group.set_defaults(run=lambda args, out: run(args, out))


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if args.policy_command == "show":
        return _show(args, out)
    return _set(args, out)


def view(app: Any) -> PolicyView:
    """The policy in force with, for each setting, the boundary from which its value holds."""
    from aggregates.base import body_of
    from aggregates.policy import PolicyState, evolve
    from ledger.store.topics import POLICY_TOPICS
    from ledger.wire.events import PolicyAdopted

    state, sequence, recorded_at = PolicyState(), None, None
    since: dict[str, int | None] = {s.name: None for s in SETTINGS}
    for seq, at, envelope in app.records(topics=POLICY_TOPICS):
        body = body_of(envelope)
        assert isinstance(body, PolicyAdopted)
        adopted = evolve(state, body)
        for s in SETTINGS:
            if since[s.name] is None or getattr(adopted.policy, s.name) != getattr(state.policy, s.name):
                since[s.name] = seq
        state, sequence, recorded_at = adopted, seq, at
    settings = [SettingView(s.name, written(getattr(state.policy, s.name)), since[s.name]) for s in SETTINGS]
    return PolicyView(
        state.policy.version, sequence, recorded_at, list(state.signed_by), state.reason, settings
    )


def late_entry_after(app: Any) -> Callable[[datetime], timedelta]:
    """The `late_entry_after` in force when the ledger recorded something at a given time."""
    from aggregates.base import body_of
    from aggregates.policy import LEGACY
    from ledger.store.topics import POLICY_TOPICS
    from ledger.wire.events import PolicyAdopted

    times: list[datetime] = []
    values: list[timedelta] = []
    for _, at, envelope in app.records(topics=POLICY_TOPICS):
        body = body_of(envelope)
        assert isinstance(body, PolicyAdopted)
        times.append(at)
        values.append(policy_of(body).late_entry_after)

    def in_force(recorded_at: datetime) -> timedelta:
        i = bisect.bisect_right(times, recorded_at)
        return values[i - 1] if i else LEGACY.late_entry_after

    return in_force


def _show(args: argparse.Namespace, out: TextIO) -> int:
    from ledger.cli import _open_app, _say

    v = view(_open_app())
    if args.format == "json":
        out.write(msgspec.json.encode(v).decode() + "\n")
        return 0
    if v.sequence is None:
        print("version 0 in force: no policy record yet (the rules before issue 10)", file=out)
    else:
        assert v.recorded_at is not None
        _say(f"version {v.version} in force from sequence {v.sequence} ({v.recorded_at.isoformat()})", out)
        _say(f"signed by {', '.join(v.signed_by)}; reason: {v.reason}", out)
    for s in v.settings:
        since = f"since sequence {s.since_sequence}" if s.since_sequence is not None else "default"
        print(f"  {s.name:<18} {s.value:>6}  {since}", file=out)
    return 0


def _set(args: argparse.Namespace, out: TextIO) -> int:
    from ledger.cli import UsageError, _admin_submit, _open_app

    in_force = view(_open_app())
    policy = Policy(args.version)
    values = {}
    for s, shown in zip(SETTINGS, in_force.settings, strict=True):
        given = getattr(args, s.name)
        try:
            values[s.name] = parse_setting(s, shown.value if given is None else given, _flag(s))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    fields = {"type": "policy_adopted", "version": args.version, "reason": args.reason}
    return _admin_submit(args, {**fields, **fields_of(with_settings(policy, values))}, out, args.key)


def first_boundary(environ: Mapping[str, str]) -> dict[str, Any]:
    """The body fields of the boundary `coi init` writes after the genesis administrator: this
    code's rules, with the settings COI_SKEW, COI_ROTATION_GRACE, COI_LATE_ENTRY_AFTER and
    COI_LOCK_THRESHOLD give (defaults otherwise). Raises UsageError naming a bad variable."""
    from ledger.cli import UsageError

    try:
        policy = seeded(environ)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    reason = "coi init: the first boundary"
    return {"type": "policy_adopted", "version": policy.version, "reason": reason, **fields_of(policy)}
