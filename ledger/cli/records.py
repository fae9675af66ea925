"""`coi init`, `coi sign`, `coi submit`: creating the ledger, signing a body, appending envelopes."""

from __future__ import annotations

import argparse
import os
import sys

from ledger.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    TYPE_CHECKING,
    UsageError,
    add_format,
    add_passphrase_fd,
    header,
    lines,
    new_key_path,
    new_passphrase,
    now,
    open_app,
    print_outcomes,
    settle_stored,
)
from ledger.cli.cosigning import add_cosigner

if TYPE_CHECKING:
    from pathlib import Path

    from ledger.app.application import LedgerApplication, Outcome
    from ledger.cli.common import Subparsers
    from ledger.wire.keys import LoadedKey


def add_parser(subparsers: Subparsers) -> None:
    s = subparsers.add_parser("init", help="create the ledger and its first administrator")
    s.add_argument("--admin", required=True, help="principal id, e.g. admin.jane")
    s.add_argument("--name", required=True, help="printed name, shown with every signature")
    s.add_argument("--site", help="site where the administrator acts, e.g. US-SSF (or COI_SITE)")
    # The ledger's own site, registered first and the administrator bound to it (README: Sites).
    s.add_argument("--site-name", help="the site's name (default: its code)")
    s.add_argument("--site-country", help="ISO 3166-1 alpha-2 (default: the code's prefix, e.g. US)")
    s.add_argument(
        "--site-time-zone", default="UTC", help="IANA name, e.g. America/Los_Angeles (default: UTC)"
    )
    s.add_argument("--key-out", help="where to write the key (default: coi-data/keys/ID.key)")
    s.add_argument("--second-admin", metavar="ID", help="a second administrator: dual control from the start")
    s.add_argument("--second-name", help="the second administrator's printed name")
    s.add_argument("--second-key-out", help="where to write the second key (default: coi-data/keys/ID.key)")
    add_passphrase_fd(s)

    s = subparsers.add_parser("sign", help="wrap a JSON body into a signed DSSE envelope")
    s.add_argument(
        "--key", action="append",
        help="repeat for two-person steps; with a signing session (COI_SIGNING_AGENT) its key signs first",
    )  # fmt: skip
    s.add_argument("--meaning", help="signature meaning for people (default by event type)")
    add_cosigner(s)
    s.add_argument("body", help="JSON file, or - for standard input")
    add_passphrase_fd(s)

    s = subparsers.add_parser("cosign", help="add your signature to a draft prepared with --cosigner")
    s.add_argument("--key", help="your key file (default: your signing session's, COI_SIGNING_AGENT)")
    s.add_argument("--out", help="write the envelope to this file (default: standard output)")
    s.add_argument("draft", help="the draft envelope, or - for standard input")
    add_passphrase_fd(s)

    s = subparsers.add_parser("submit", help="append signed envelopes (one JSON per line)")
    s.add_argument("source", help="file of envelopes, or - for standard input")
    add_format(s, json_alias=True)


def run(args: argparse.Namespace) -> int:
    from ledger.cli.cosigning import cosign

    return {"init": _init, "sign": _sign, "cosign": cosign, "submit": _submit}[args.command](args)


def _init(args: argparse.Namespace) -> int:
    from aggregates.site import known_zone
    from ledger.cli.policy import first_boundary
    from ledger.cli.security import service_registration
    from ledger.cli.sites import site_fields
    from ledger.site.signing import sign_json

    boundary = first_boundary()  # a bad COI_SKEW ... stops init before anything is written
    site = args.site or os.environ.get("COI_SITE")
    if not site:
        raise UsageError("say at which site the administrator acts: --site US-SSF (or set COI_SITE)")
    country = args.site_country or site.split("-", 1)[0]
    if len(country) != 2:
        raise UsageError(f"say in which country {site} is: --site-country XX (ISO 3166-1 alpha-2)")
    if not known_zone(args.site_time_zone):
        raise UsageError(f"--site-time-zone {args.site_time_zone!r} is not an IANA time zone name")
    own_site = site_fields(site, args.site_name or site, country, args.site_time_zone, "administration")
    if (args.second_admin is None) != (args.second_name is None):
        raise UsageError("a second administrator needs both --second-admin ID and --second-name NAME")
    if args.second_admin is not None and args.second_admin == args.admin:
        raise UsageError("the second administrator is another person: give another --second-admin")
    # Every key path and passphrase is asked before anything is written: a bad one leaves nothing.
    people = [(args.admin, args.name, new_key_path(args.key_out, args.admin, "--key-out"))]
    if args.second_admin is not None:
        people.append(
            (
                args.second_admin,
                args.second_name,
                new_key_path(args.second_key_out, args.second_admin, "--second-key-out"),
            )
        )
    passphrases = [new_passphrase(pid, "person", args.passphrase_fd) for pid, _, _ in people]
    made = new_sqlite_file()
    try:
        app = open_app()
        if app.recorder.max_notification_id():
            raise UsageError("this ledger is already initialised; add people with coi principals add")
        ledger_key = _new_ledger_key(app)
    except BaseException:
        _remove(made)  # stopped before storing anything: a retry starts from nothing
        raise
    admins: list[LoadedKey] = []
    outcomes: list[Outcome] = []
    for (pid, name, path), passphrase in zip(people, passphrases, strict=True):
        # The first registers itself; the second is registered by the first alone (dual
        # control's bootstrap, aggregates/principal.py) and signs the boundary with it. Both
        # are bound to the site init registers.
        fields, key = _new_administrator(pid, name, path, passphrase, site)
        signer = admins[0] if admins else key
        outcomes.append(app.submit(sign_json(header(fields, signer, site), [signer], now())))
        if outcomes[-1].status != "accepted":
            break
        admins.append(key)
    # then its own site and the first boundary (this code's rules from the start, signed by
    # every administrator), each while the one before was accepted
    for then, signers in ((own_site, admins[:1]), (boundary, admins)):
        if outcomes[-1].status == "accepted":
            outcomes.append(app.submit(sign_json(header(then, admins[0], site), signers, now())))
    service = None
    if outcomes[-1].status == "accepted":  # then the service principal that signs lock records
        service, fields = service_registration(app, site)
        outcomes.append(app.submit(sign_json(header(fields, admins[0], site), admins[:1], now())))
    print_outcomes(outcomes, "table")
    accepted = outcomes[-1].status == "accepted"
    if accepted:  # the first checkpoint: a verifier has a key to trust at once
        settle_stored(app)
    print(f"ledger:            {app.env.get('SQLITE_DBNAME') or app.env.get('POSTGRES_DBNAME')}")
    for (_, _, path), label in zip(people, ("administrator key:", "second admin key: "), strict=False):
        print(f"{label} {path} (encrypted)")
    if len(people) == 1:
        print(
            "dual control:      starts when a second administrator is registered "
            "(coi principals add --role admin); until then you grant authority alone"
        )
    print(ledger_key)
    if service is not None:
        print(f"service key:       {service} (signs key locks; not in the data folder)")
    return EXIT_OK if accepted else EXIT_FAILED


def _new_administrator(
    principal_id: str, printed_name: str, path: Path, passphrase: bytes, site: str
) -> tuple[dict[str, object], LoadedKey]:
    """A new administrator's key, written to `path`, and the body that registers it, bound to
    `site`."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ledger.wire.keys import key_file_for, load_key, write_key_file

    key_file = key_file_for(Ed25519PrivateKey.generate(), principal_id, printed_name, "person", passphrase)
    write_key_file(path, key_file)
    fields: dict[str, object] = {
        "type": "principal_registered", "principal_id": principal_id, "kind": "person",
        "printed_name": printed_name, "roles": ["admin"], "public_key": key_file.public_key,
        "valid_from": now().isoformat(), "sites": [site],
    }  # fmt: skip
    return fields, load_key(path, passphrase)


def new_sqlite_file() -> Path | None:
    """The SQLite file `coi init` is about to make (None: it exists, or the ledger is on PostgreSQL)."""
    from pathlib import Path

    from ledger.app.config import database_url
    from ledger.store.sql import is_postgres, sqlite_path

    url = database_url()
    path = None if is_postgres(url) else Path(sqlite_path(url))
    return None if path is None or path.exists() else path


def _remove(path: Path | None) -> None:
    for file in (
        [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")] if path else []
    ):
        file.unlink(missing_ok=True)


def _new_ledger_key(app: LedgerApplication) -> str:
    """A new ledger's own origin and checkpoint key, its verifier key in this user's trust
    store; what to print about them."""
    from ledger.app import ledgerkey
    from ledger.audit.trust import TrustStore
    from ledger.store.logstore import LogStore

    store = LogStore(app.recorder)
    made = ledgerkey.create(store)
    return (
        f"log origin:        {made.name}\n"
        f"ledger key:        {ledgerkey.key_path(made.name)} (signs checkpoints; not in the data folder)\n"
        f"trusted by you:    key {made.verifier.key_id.hex()} in {TrustStore().path}\n"
        "for verifiers:     coi trust export --out ledger.vkey (give them that file by a channel they trust)"
    )


def _sign(args: argparse.Namespace) -> int:
    import uuid
    from pathlib import Path

    import msgspec

    from ledger.cli.cosigning import cosigner, reachable, tell_holders, write_envelope
    from ledger.cli.signers import signing_keys
    from ledger.site.signing import sign_json
    from ledger.wire.rejection import ReasonCode, Rejected
    from ledger.wire.strictjson import first_repeated_key

    try:
        source = sys.stdin.buffer.read() if args.body == "-" else Path(args.body).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.body}: {exc.strerror}") from None
    try:
        body = msgspec.json.decode(source)
    except msgspec.DecodeError as exc:
        raise Rejected(ReasonCode.MALFORMED_JSON, f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise Rejected(ReasonCode.MALFORMED_JSON, "the body is nested too deeply to be an event") from None
    if not isinstance(body, dict):
        raise Rejected(ReasonCode.MALFORMED_JSON, "the body must be a JSON object")
    repeated = first_repeated_key(source)  # a dict keeps the last value: sign nothing ambiguous
    if repeated is not None:
        raise Rejected(
            ReasonCode.DUPLICATE_KEY, f"the body gives the key {repeated!r} twice in one object", repeated
        )
    signed_at = now()
    body.setdefault("event_id", str(uuid.uuid4()))
    body.setdefault("occurred_at", signed_at.isoformat())
    if args.cosigner is not None and "manifestations" in body:
        raise UsageError("the body gives its manifestations already: leave them out, --cosigner adds them")
    keys = signing_keys(args.key, args.passphrase_fd, "coi sign")
    app = reachable()
    tell_holders(keys, app)
    write_envelope(sign_json(body, keys, signed_at, args.meaning, cosigner(args, app)), args.out)
    return EXIT_OK


def _submit(args: argparse.Namespace) -> int:
    from ledger.app.application import local_source

    app = open_app()
    app.source = local_source("cli")  # refusals in the security log name who submitted them
    counts = print_outcomes(app.submit_many(lines(args.source)), args.format)
    print(", ".join(f"{n} {status}" for status, n in counts.items()), file=sys.stderr)
    if not any(counts.values()):
        raise UsageError(f"no envelope in {args.source}: coi submit reads one JSON envelope per line")
    settle_stored(app)
    return EXIT_USAGE if counts["rejected"] else EXIT_OK
