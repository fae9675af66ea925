"""`coi policy show|set`: the policy in force, and a new boundary signed by administrators
(aggregates/policy.py; README: Policy)."""

from __future__ import annotations

import argparse
import os
import sys

from ledger.cli.common import EXIT_OK, TYPE_CHECKING, UsageError, add_passphrase_fd, open_app, say

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from aggregates.policy import Setting
    from ledger.cli.common import Subparsers


def _flag(setting: Setting) -> str:
    return "--" + setting.name.replace("_", "-")


def add_parser(subparsers: Subparsers) -> None:
    from aggregates.policy import SETTINGS, written

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
    add_passphrase_fd(s)


def run(args: argparse.Namespace) -> int:
    return _show(args) if args.policy_command == "show" else _set(args)


def _show(args: argparse.Namespace) -> int:
    import msgspec

    from projections.policy import view

    v = view(open_app(writer=False))
    if args.format == "json":
        sys.stdout.write(msgspec.json.encode(v).decode() + "\n")
        return EXIT_OK
    if v.sequence is None:
        print("version 0 in force: no policy record yet (the rules before issue 10)")
    else:
        assert v.recorded_at is not None
        say(f"version {v.version} in force from sequence {v.sequence} ({v.recorded_at.isoformat()})")
        say(f"signed by {', '.join(v.signed_by)}; reason: {v.reason}")
    for s in v.settings:
        since = f"since sequence {s.since_sequence}" if s.since_sequence is not None else "default"
        print(f"  {s.name:<18} {s.value:>6}  {since}")
    return EXIT_OK


def _set(args: argparse.Namespace) -> int:
    from aggregates.policy import SETTINGS, Policy, fields_of, parse_setting, with_settings
    from ledger.cli.principals import admin_submit
    from projections.policy import view

    in_force = view(open_app(writer=False))
    values = {}
    for s, shown in zip(SETTINGS, in_force.settings, strict=True):
        given = getattr(args, s.name)
        try:
            values[s.name] = parse_setting(s, shown.value if given is None else given, _flag(s))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    fields = {"type": "policy_adopted", "version": args.version, "reason": args.reason}
    return admin_submit(args, {**fields, **fields_of(with_settings(Policy(args.version), values))}, args.key)


def first_boundary(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The body fields of the boundary `coi init` writes after the genesis administrator: this
    code's rules, with the settings COI_SKEW, COI_ROTATION_GRACE, COI_LATE_ENTRY_AFTER and
    COI_LOCK_THRESHOLD give (defaults otherwise). Raises UsageError naming a bad variable."""
    from aggregates.policy import fields_of, seeded

    try:
        policy = seeded(environ)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    reason = "coi init: the first boundary"
    return {"type": "policy_adopted", "version": policy.version, "reason": reason, **fields_of(policy)}
