"""`coi principals add|rotate|revoke|bind|list|history`: the registry, changed under an administrator's
signature, and its history as the read models keep it."""

from __future__ import annotations

import argparse
import os
import sys

from ledger.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    TYPE_CHECKING,
    UsageError,
    add_format,
    add_passphrase_fd,
    header,
    now,
    open_app,
    print_outcomes,
    say,
    settle_stored,
    utc_time,
)
from ledger.cli.cosigning import add_cosigner
from ledger.cli.reading import add_output, add_time, check_time, emit, open_audit, through

if TYPE_CHECKING:
    from typing import Any

    from ledger.cli.common import Subparsers


def add_parser(subparsers: Subparsers) -> None:
    prn = subparsers.add_parser("principals", help="register, rotate, revoke, bind, list, history")
    prs = prn.add_subparsers(dest="principals_command", required=True)
    for name in ("add", "rotate", "revoke", "bind"):
        s = prs.add_parser(name)
        s.add_argument("--admin-key", required=True, help="the administrator's key file")
        s.add_argument("--site", help="site where the administrator acts (or COI_SITE)")
        add_passphrase_fd(s)
        if name in ("add", "rotate"):
            s.add_argument("--public-key", required=True, help="the .pub file from coi keys new")
            s.add_argument("--valid-from", type=utc_time, help="default: now")
        if name == "add":
            s.add_argument("--role", action="append", required=True, help="repeat for several roles")
        if name in ("add", "bind"):
            s.add_argument(
                "--bind-site",
                action="append",
                required=name == "bind",
                metavar="SITE",
                help="a registered site the principal acts for (repeat for several; coi sites add)",
            )
        if name == "bind":
            s.add_argument("--id", required=True, help="principal id")
        if name == "rotate":
            s.add_argument(
                "--routine",
                action="store_true",
                help="a planned replacement, not a loss: the old key may still sign for a short "
                "grace (the policy's rotation_grace, 10 minutes by default) after --valid-from, for "
                "envelopes already in flight",
            )
            s.add_argument(
                "--old-key",
                help="the person's current key file: a routine rotation is signed with it too",
            )
        if name in ("add", "rotate"):  # dual control: a second administrator signs with coi cosign
            add_cosigner(s)
        if name == "revoke":
            s.add_argument("--id", required=True, help="principal id")
            s.add_argument("--keyid", help="revoke one key only (default: every key)")
            s.add_argument("--effective-at", type=utc_time, help="default: now")
            s.add_argument("--reason", required=True)
    add_format(prs.add_parser("list"))
    history = prs.add_parser(
        "history", help="who registered, rotated or revoked which key, on whose authority"
    )
    history.add_argument("id", nargs="?", help="one principal (default: every one)")
    add_time(history, "--as-of", "the changes that had happened by then")
    add_output(history, paged=False)


def run(args: argparse.Namespace) -> int:
    if args.principals_command == "list":
        return _list(args)
    if args.principals_command == "history":
        return _history(args)
    fields = {"add": _add, "rotate": _rotate, "revoke": _revoke, "bind": _bind}[args.principals_command](args)
    return admin_submit(args, fields, [args.admin_key, *filter(None, [getattr(args, "old_key", None)])])


def _add(args: argparse.Namespace) -> dict[str, Any]:
    from pathlib import Path

    from ledger.wire.keys import read_public

    pub = read_public(Path(args.public_key))
    valid_from = args.valid_from or now()
    return {
        "type": "principal_registered", "principal_id": pub.principal_id, "kind": pub.kind,
        "printed_name": pub.printed_name, "roles": args.role, "public_key": pub.public_key,
        "valid_from": valid_from.isoformat(), "sites": args.bind_site or [],
    }  # fmt: skip


def _bind(args: argparse.Namespace) -> dict[str, Any]:
    return {"type": "principal_sites_bound", "principal_id": args.id, "sites": args.bind_site}


def _rotate(args: argparse.Namespace) -> dict[str, Any]:
    from pathlib import Path

    from ledger.wire.keys import read_public

    pub = read_public(Path(args.public_key))
    valid_from = args.valid_from or now()
    return {
        "type": "principal_key_rotated", "principal_id": pub.principal_id,
        "public_key": pub.public_key, "valid_from": valid_from.isoformat(), "routine": args.routine,
    }  # fmt: skip


def _revoke(args: argparse.Namespace) -> dict[str, Any]:
    effective_at = args.effective_at or now()
    return {
        "type": "principal_revoked", "principal_id": args.id, "effective_at": effective_at.isoformat(),
        "keyid": args.keyid, "reason": args.reason,
    }  # fmt: skip


def admin_submit(args: argparse.Namespace, fields: dict[str, Any], keys: list[str]) -> int:
    """Sign a registry or policy change with `keys` (the first, an administrator's, is the
    actor) and append it; or, with --cosigner, write it as a draft for a second administrator
    (`coi cosign`), who then submits it."""
    from pathlib import Path

    from ledger.cli.cosigning import cosigner, reachable, tell_holders, warn_duplicate_name, write_envelope
    from ledger.cli.signers import opened_key
    from ledger.site.signing import sign_json

    site = args.site or os.environ.get("COI_SITE")
    if not site:
        raise UsageError("say at which site the administrator acts: --site US-SSF (or set COI_SITE)")
    where = f"coi {args.command}"  # principals, policy, sites or security
    signers = [opened_key(Path(k), args.passphrase_fd, where) for k in keys]
    body = header(fields, signers[0], site)
    drafting = getattr(args, "cosigner", None) is not None
    app = reachable() if drafting else open_app()
    if app is not None:
        tell_holders(signers, app)
        if fields["type"] == "principal_registered":
            warn_duplicate_name(app, fields["principal_id"], fields["printed_name"])
    if drafting:
        write_envelope(sign_json(body, signers, now(), cosigners=cosigner(args, app)), args.out)
        say(f"coi: {args.cosigner} signs it next: coi cosign --key FILE {args.out}", sys.stderr)
        return EXIT_OK
    assert app is not None
    outcome = app.submit(sign_json(body, signers, now()))
    print_outcomes([outcome], "table")
    if outcome.status == "accepted":  # into the Merkle log, as coi submit does
        settle_stored(app)
    return EXIT_OK if outcome.status != "rejected" else EXIT_USAGE


def _list(args: argparse.Namespace) -> int:
    import msgspec

    from projections.principals import principals

    views = principals(open_app(writer=False))
    if args.format == "json":
        sys.stdout.write(msgspec.json.encode(views).decode() + "\n")
        return EXIT_OK
    for p in views:
        sites = ",".join(p.sites) or "(no site)"
        say(f"{p.principal_id:<20} {p.kind:<11} {','.join(p.roles):<24} {sites:<16} {p.printed_name}")
        for k in p.keys:
            say(f"    {k}")
    return EXIT_OK


def _history(args: argparse.Namespace) -> int:

    audit = open_audit()
    check_time(audit, "--as-of", args.as_of, "occurred_at")  # as Audit.registry filters
    rows = audit.registry(args.id, through(args.as_of))
    if args.id is not None and not rows and not audit.principal_known(args.id):
        raise UsageError(f"{args.id}: no such principal was ever registered (coi principals list)")
    emit(
        rows,
        [("sequence", lambda r: r.sequence), ("recorded_at", lambda r: r.recorded_at),
         ("principal", lambda r: r.principal_id), ("change", lambda r: r.change),
         ("printed_name", lambda r: r.printed_name), ("kind", lambda r: r.kind), ("roles", lambda r: r.roles),
         ("sites", lambda r: r.sites), ("keyid", lambda r: r.keyid),
         ("effective_at", lambda r: r.effective_at), ("by", lambda r: r.actor),
         ("authority", lambda r: r.authority), ("reason", lambda r: r.reason)],
        args.format,
    )  # fmt: skip
    return EXIT_OK
