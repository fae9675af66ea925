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

if TYPE_CHECKING:
    from pathlib import Path

    from ledger.app.application import LedgerApplication
    from ledger.cli.common import Subparsers


def add_parser(subparsers: Subparsers) -> None:
    s = subparsers.add_parser("init", help="create the ledger and its first administrator")
    s.add_argument("--admin", required=True, help="principal id, e.g. admin.jane")
    s.add_argument("--name", required=True, help="printed name, shown with every signature")
    s.add_argument("--site", help="site where the administrator acts, e.g. US-SSF (or COI_SITE)")
    s.add_argument("--key-out", help="where to write the key (default: coi-data/keys/ID.key)")
    add_passphrase_fd(s)

    s = subparsers.add_parser("sign", help="wrap a JSON body into a signed DSSE envelope")
    s.add_argument(
        "--key", action="append",
        help="repeat for two-person steps; with a signing session (COI_SIGNING_AGENT) its key signs first",
    )  # fmt: skip
    s.add_argument("--meaning", help="signature meaning for people (default by event type)")
    s.add_argument("body", help="JSON file, or - for standard input")
    add_passphrase_fd(s)

    s = subparsers.add_parser("submit", help="append signed envelopes (one JSON per line)")
    s.add_argument("source", help="file of envelopes, or - for standard input")
    add_format(s, json_alias=True)


def run(args: argparse.Namespace) -> int:
    return {"init": _init, "sign": _sign, "submit": _submit}[args.command](args)


def _init(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ledger.cli.policy import first_boundary
    from ledger.site.signing import sign_json
    from ledger.wire.keys import key_file_for, load_key, write_key_file

    boundary = first_boundary()  # a bad COI_SKEW ... stops init before anything is written
    site = args.site or os.environ.get("COI_SITE")
    if not site:
        raise UsageError("say at which site the administrator acts: --site US-SSF (or set COI_SITE)")
    path = new_key_path(args.key_out, args.admin, "--key-out")
    # Asked before anything is written: a bad one leaves nothing.
    passphrase = new_passphrase(args.admin, "person", args.passphrase_fd)
    made = _new_sqlite_file()
    try:
        app = open_app()
        if app.recorder.max_notification_id():
            raise UsageError("this ledger is already initialised; add people with coi principals add")
        ledger_key = _new_ledger_key(app)
    except BaseException:
        _remove(made)  # stopped before storing anything: a retry starts from nothing
        raise
    key_file = key_file_for(Ed25519PrivateKey.generate(), args.admin, args.name, "person", passphrase)
    write_key_file(path, key_file)
    admin = load_key(path, passphrase)
    signed_at = now()
    fields = {
        "type": "principal_registered", "principal_id": args.admin, "kind": "person",
        "printed_name": args.name, "roles": ["admin"], "public_key": key_file.public_key,
        "valid_from": signed_at.isoformat(),
    }  # fmt: skip
    outcome = app.submit(sign_json(header(fields, admin, site), [admin], signed_at))
    outcomes = [outcome]
    if outcome.status == "accepted":  # then the first boundary: this code's rules from the start
        outcome = app.submit(sign_json(header(boundary, admin, site), [admin], now()))
        outcomes.append(outcome)
    print_outcomes(outcomes, "table")
    if outcome.status == "accepted":  # the first checkpoint: a verifier has a key to trust at once
        settle_stored(app)
    print(f"ledger:            {app.env.get('SQLITE_DBNAME') or app.env.get('POSTGRES_DBNAME')}")
    print(f"administrator key: {path} (encrypted)")
    print(ledger_key)
    return EXIT_OK if outcome.status == "accepted" else EXIT_FAILED


def _new_sqlite_file() -> Path | None:
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
    keys = signing_keys(args.key, args.passphrase_fd, "coi sign")
    sys.stdout.write(sign_json(body, keys, signed_at, args.meaning).decode() + "\n")
    return EXIT_OK


def _submit(args: argparse.Namespace) -> int:
    app = open_app()
    counts = print_outcomes(app.submit_many(lines(args.source)), args.format)
    print(", ".join(f"{n} {status}" for status, n in counts.items()), file=sys.stderr)
    if not any(counts.values()):
        raise UsageError(f"no envelope in {args.source}: coi submit reads one JSON envelope per line")
    settle_stored(app)
    return EXIT_USAGE if counts["rejected"] else EXIT_OK
