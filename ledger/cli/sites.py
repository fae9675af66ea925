"""`coi sites add|list`: the sites events may happen at, registered under an administrator's
signature (aggregates/site.py; README: Sites)."""

from __future__ import annotations

import argparse

from ledger.cli.common import EXIT_OK, TYPE_CHECKING, add_passphrase_fd, open_app
from ledger.cli.reading import add_output, emit

if TYPE_CHECKING:
    from ledger.cli.common import Subparsers

KINDS = ("collection", "manufacturing", "treatment", "courier_hub", "administration")


def add_parser(subparsers: Subparsers) -> None:
    group = subparsers.add_parser("sites", help="register and list the sites events happen at")
    commands = group.add_subparsers(dest="sites_command", required=True)
    s = commands.add_parser("add", help="register a site, signed by an administrator")
    s.add_argument("--admin-key", required=True, help="the administrator's key file")
    s.add_argument("--site", help="site where the administrator acts (or COI_SITE)")
    s.add_argument("--code", required=True, help="the site's code, e.g. US-BDW")
    s.add_argument("--name", required=True, help="e.g. Bridgewater NJ")
    s.add_argument("--country", required=True, help="ISO 3166-1 alpha-2, e.g. US")
    s.add_argument("--time-zone", required=True, help="IANA name, e.g. America/New_York")
    s.add_argument("--kind", required=True, choices=KINDS)
    add_passphrase_fd(s)
    add_output(commands.add_parser("list", help="every registered site"), paged=False)


def run(args: argparse.Namespace) -> int:
    from ledger.cli.principals import admin_submit

    if args.sites_command == "list":
        return _list(args)
    fields = site_fields(args.code, args.name, args.country, args.time_zone, args.kind)
    return admin_submit(args, fields, [args.admin_key])


def site_fields(code: str, name: str, country: str, time_zone: str, kind: str) -> dict[str, str]:
    """The body of a site record (coi init registers its own site with it too)."""
    return {
        "type": "site_registered", "code": code, "name": name, "country": country,
        "time_zone": time_zone, "kind": kind,
    }  # fmt: skip


def _list(args: argparse.Namespace) -> int:
    sites = sorted(open_app(writer=False).sites().values(), key=lambda s: s.code)
    emit(
        sites,
        [("code", lambda s: s.code), ("name", lambda s: s.name), ("country", lambda s: s.country),
         ("time_zone", lambda s: s.time_zone), ("kind", lambda s: s.kind),
         ("registered_at", lambda s: s.registered_at)],
        args.format,
    )  # fmt: skip
    return EXIT_OK
