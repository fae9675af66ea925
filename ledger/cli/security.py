"""`coi security log|watch|unlock`: the security log of refused submissions, alerts on misuse
(Part 11.300(d)), and an administrator's unlock of a locked key (aggregates/security.py)."""

from __future__ import annotations

import argparse
import os

from ledger.cli.common import EXIT_FAILED, EXIT_OK, TYPE_CHECKING, add_passphrase_fd, now, say

if TYPE_CHECKING:
    from datetime import datetime
    from pathlib import Path

    from ledger.app.application import LedgerApplication
    from ledger.cli.common import Subparsers
    from ledger.store.security import SecurityLog


def add_parser(subparsers: Subparsers) -> None:
    from ledger.cli.reading import add_output, add_time

    group = subparsers.add_parser("security", help="the security log of refused submissions, alerts, unlock")
    commands = group.add_subparsers(dest="security_command", required=True)
    s = commands.add_parser("log", help="refused submissions: who and which key they claim, code, source")
    s.add_argument("--principal", help="only those claiming this principal")
    add_time(s, "--from", "from this time on")
    add_time(s, "--to", "before this time")
    add_output(s, paged=False)
    s = commands.add_parser("watch", help="exit 1 when a key is locked or a source sends many forgeries")
    s.add_argument("--once", action="store_true", help="look once: exit 0 when nothing crossed a threshold")
    s.add_argument(
        "--threshold", type=_count, default=10, metavar="N",
        help="unauthenticated failures of one source within the window that alert (default 10)",
    )  # fmt: skip
    s.add_argument("--window", type=_count, default=60, metavar="MINUTES", help="default 60")
    s.add_argument(
        "--every", type=_count, default=10, metavar="SECONDS", help="how often to look (default 10)"
    )
    s = commands.add_parser("unlock", help="lift a key's lock: a registry record an administrator signs")
    s.add_argument("--admin-key", required=True, help="the administrator's key file")
    s.add_argument("--keyid", required=True, help="the locked key, as `coi security watch` names it")
    s.add_argument("--reason", required=True, help="why it may sign again (recorded, signed)")
    s.add_argument("--site", help="site where the administrator acts (or COI_SITE)")
    add_passphrase_fd(s)
    s = commands.add_parser("service", help="register the ledger's service principal, which signs key locks")
    s.add_argument("--admin-key", required=True, help="the administrator's key file")
    s.add_argument("--site", help="site where the administrator acts (or COI_SITE)")
    add_passphrase_fd(s)


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def run(args: argparse.Namespace) -> int:
    return {"log": _log, "watch": _watch, "unlock": _unlock, "service": _service}[args.security_command](args)


def open_log() -> SecurityLog:
    """The security log of the ledger, read only: `coi migrate` makes it on a ledger older than it."""
    from ledger.app.config import database_url
    from ledger.cli.common import open_app, opened
    from ledger.store.security import SecurityLog

    open_app(writer=False).close()  # says "run coi init" or "coi migrate" for a missing or old ledger
    return opened(lambda: SecurityLog(database_url(), writer=False))


def _log(args: argparse.Namespace) -> int:
    from ledger.cli.reading import emit

    log = open_log()
    entries = list(log.entries(args.principal, getattr(args, "from"), args.to))
    columns = [
        ("at", lambda e: e.at),
        ("code", lambda e: e.code),
        ("principal", lambda e: e.principal),
        ("keyid", lambda e: e.keyid),
        ("authenticated", lambda e: "yes" if e.authenticated else "no"),
        ("source", lambda e: e.source),
        ("payload_sha256", lambda e: e.payload_sha256),
    ]
    emit(entries, columns, args.format)
    return EXIT_OK


def service_registration(app: LedgerApplication, site: str | None) -> tuple[Path, dict[str, object]]:
    """A new service key for the ledger (ledger/app/servicekey.py), where it went, and the
    registration of its principal, which the administrator signs at `site`; bound to that site,
    where it signs its locks (the site rules of version 3)."""
    from ledger.app.servicekey import SERVICE_KIND, SERVICE_PRINCIPAL, SERVICE_ROLE, create_service_key
    from ledger.store.logstore import LogStore

    path, key_file = create_service_key(LogStore(app.recorder).origin(), "Ledger service")
    return path, {
        "type": "principal_registered", "principal_id": SERVICE_PRINCIPAL, "kind": SERVICE_KIND,
        "printed_name": key_file.printed_name, "roles": [SERVICE_ROLE], "public_key": key_file.public_key,
        "valid_from": now().isoformat(), **({"sites": [site]} if site else {}),
    }  # fmt: skip


def _service(args: argparse.Namespace) -> int:
    """The service principal for a ledger made before `coi init` registered one."""
    from ledger.app.servicekey import service_key_path
    from ledger.cli.common import UsageError, open_app
    from ledger.cli.principals import admin_submit
    from ledger.store.logstore import LogStore

    app = open_app()
    path = service_key_path(LogStore(app.recorder).origin())
    if path is not None and path.exists():
        raise UsageError(f"{path} exists: this ledger's service key is made already")
    made, fields = service_registration(app, args.site or os.environ.get("COI_SITE"))
    app.close()
    code = EXIT_FAILED
    try:
        code = admin_submit(args, fields, [args.admin_key])
    finally:
        if code == EXIT_OK:
            print(f"service key:       {made} (signs key locks; not in the data folder)")
        else:  # a key no registration vouches for would only be in the way of the next try
            made.unlink(missing_ok=True)
            made.with_name(made.name + ".pub").unlink(missing_ok=True)
    return code


def _unlock(args: argparse.Namespace) -> int:
    import re

    from ledger.cli.common import UsageError
    from ledger.cli.principals import admin_submit

    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,63}:[0-9a-f]{16}", args.keyid):
        raise UsageError(
            f"--keyid {args.keyid!r} is not a key id: PRINCIPAL:16 hex digits, e.g. "
            "nurse.kim:0123456789abcdef (coi security watch --once and coi principals list show them)"
        )
    fields = {
        "type": "principal_key_unlocked", "principal_id": args.keyid.split(":", 1)[0], "keyid": args.keyid,
        "reason": args.reason,
    }  # fmt: skip
    return admin_submit(args, fields, [args.admin_key])


def _watch(args: argparse.Namespace) -> int:
    import time

    from ledger.cli.common import open_app
    from projections.principals import locked_keys

    while True:
        app = open_app(writer=False)
        found = [
            f"ALERT key {k.keyid} of {k.principal_id} is locked"
            + (f" since {k.locked_at.isoformat()}" if k.locked_at else "")
            + f": see coi security log --principal {k.principal_id}; coi security unlock lifts it"
            for k in locked_keys(app)
        ]
        app.close()
        found += _alerts(open_log(), args.threshold, args.window)
        for line in found:
            say(line)
        if found:
            return EXIT_FAILED
        if args.once:
            print("security: no threshold crossed")
            return EXIT_OK
        time.sleep(args.every)


def _alerts(log: SecurityLog, threshold: int, window: int) -> list[str]:
    """What crossed a threshold now: sources over `threshold` unauthenticated failures in the
    last `window` minutes."""
    from datetime import timedelta

    from aggregates.security import noisy_sources

    since: datetime = now() - timedelta(minutes=window)
    recent = list(log.entries(since=since))
    log.close()
    return [
        f"ALERT source {source}: {n} unauthenticated failures in the last {window} minutes"
        for source, n in sorted(noisy_sources(recent, threshold).items())
    ]
