"""The `coi` command. Exit codes: 0 ok, 1 a check failed (verification, or an outcome that
was not the expected one), 2 usage or input error (including rejected submissions)."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consumers.broker import BrokerError
from consumers.pipeline import SERVICES, broker_foreground, configured_bootstrap, projections_url, run_one, up
from ledger.app import ledgerkey
from ledger.app.application import LedgerApplication, Outcome
from ledger.app.config import ConfigError, data_dir, database_url, redact
from ledger.app.log import LogError, MerkleLog, settle
from ledger.audit.source import SchemaError
from ledger.audit.verification import LedgerVerifier, Report, StateMismatchError
from ledger.demo.run import DemoError, run_demo
from ledger.site.publisher import SitePublisher
from ledger.site.signing import sign_json
from ledger.store.sources import open_source
from ledger.transparency.checkpoint import NoteError
from ledger.wire.events import json_schema
from ledger.wire.files import ExposedFileError
from ledger.wire.identifiers import PRINCIPAL_ID_PATTERN
from ledger.wire.kafka_topics import Topics
from ledger.wire.keys import (
    PASSPHRASE_ENV,
    KeyFileError,
    LoadedKey,
    ask_passphrase,
    check_passphrase,
    key_file_for,
    load_key,
    read_public,
    write_key_file,
)
from ledger.wire.rejection import Rejected
from ledger.wire.strictjson import first_repeated_key
from projections.display import MINUTE, utc
from projections.history import history
from projections.principals import principals
from projections.rebuild import rebuild
from projections.store import ProjectionStore

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# What a terminal would act on rather than show: C0 and C1 controls (line breaks, escape
# sequences), line and paragraph separators, and the bidi marks and overrides that reorder text.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` for a terminal, with what it would act on written as a visible escape: text the
    ledger holds was written by others and must not forge lines or rewrite the screen."""
    return _UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], text)


def _say(line: str, out: TextIO) -> None:
    print(printable(line), file=out)


class UsageError(Exception):
    """Bad command-line input; the message says what to do."""


def _time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone; write it like 2026-01-31T09:00:00Z")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{text!r} lies before year 1 in UTC") from None


def _open_app(writer: bool = True) -> LedgerApplication:
    """The ledger; a writer migrates it on start, a reader (writer=False) changes nothing."""
    try:
        return LedgerApplication(writer=writer)
    except (ConfigError, SchemaError):
        raise
    except Exception as exc:  # the driver's own message says which server and why
        raise ConfigError(f"cannot open the ledger store ({exc}); check COI_DATABASE_URL") from None


def _lines(source: str) -> Iterator[bytes]:
    try:
        stream = sys.stdin.buffer if source == "-" else open(source, "rb")  # noqa: SIM115
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror}") from None
    with stream:
        for line in stream:
            if line.strip():
                yield line.strip()


def _new_passphrase(principal_id: str) -> bytes:
    first = ask_passphrase(f"New passphrase for {principal_id}: ")
    check_passphrase(first, principal_id)
    if not os.environ.get(PASSPHRASE_ENV) and ask_passphrase("Repeat it: ") != first:
        raise UsageError("the passphrases differ")
    return first


def _print_outcome(line: int, o: Outcome, out: TextIO) -> None:
    if o.status == "rejected":
        where = f" [{o.field}]" if o.field else ""
        _say(f"{line}: rejected  {o.code}: {o.message}{where}", out)
    elif o.status == "duplicate":
        _say(f"{line}: duplicate {o.type} {o.event_id} (already stored; nothing added)", out)
    else:
        _say(f"{line}: accepted  seq={o.sequence} {o.type} {o.event_id}", out)


def _admin_submit(args: argparse.Namespace, fields: dict[str, Any], out: TextIO) -> int:
    """Sign a registry change with the administrator's key and append it."""
    site = args.site or os.environ.get("COI_SITE")
    if not site:
        raise UsageError("say at which site the administrator acts: --site US-SSF (or set COI_SITE)")
    admin = load_key(Path(args.admin_key))
    body = _header(fields, admin, site)
    outcome = _open_app().submit(sign_json(body, [admin], datetime.now(UTC)))
    _print_outcome(1, outcome, out)
    return EXIT_OK if outcome.status != "rejected" else EXIT_USAGE


def _header(fields: dict[str, Any], actor: LoadedKey, site: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "event_id": str(uuid.uuid4()),
        "occurred_at": now.isoformat(),
        "site": site,
        "actor": actor.principal_id,
        **fields,
    }


# ---------------------------------------------------------------- commands


def _new_key_path(out: str | None, principal: str, flag: str) -> Path:
    """Where a new key file goes; never over an existing one, which may be a registered key
    (for a rotation, write the new key beside it)."""
    path = Path(out or data_dir() / "keys" / f"{principal}.key")
    if path.exists():
        raise UsageError(f"{path} exists and is never overwritten; write the new key with {flag} FILE")
    return path


def cmd_keys_new(args: argparse.Namespace, out: TextIO) -> int:
    if not PRINCIPAL_ID_PATTERN.fullmatch(args.principal):
        raise UsageError(
            f"--principal {args.principal!r}: a principal id is 2-64 of a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit (e.g. nurse.kim)"
        )
    if args.kind == "person" and args.no_passphrase:
        raise UsageError("a person's key must be encrypted (Part 11.200: key file + passphrase)")
    passphrase = None if args.no_passphrase else _new_passphrase(args.principal)
    path = _new_key_path(args.out, args.principal, "--out")
    key_file = key_file_for(Ed25519PrivateKey.generate(), args.principal, args.name, args.kind, passphrase)
    pub = write_key_file(path, key_file)
    print(f"private key: {path} (mode 0600{', encrypted' if passphrase else ''})", file=out)
    print(f"public key:  {pub}  <- give this file to an administrator", file=out)
    print(f"keyid:       {key_file.keyid}", file=out)
    return EXIT_OK


def cmd_init(args: argparse.Namespace, out: TextIO) -> int:
    app = _open_app()
    if app.recorder.max_notification_id():
        raise UsageError("this ledger is already initialised; add people with coi principals add")
    path = _new_key_path(args.key_out, args.admin, "--key-out")
    passphrase = _new_passphrase(args.admin)
    key_file = key_file_for(Ed25519PrivateKey.generate(), args.admin, args.name, "person", passphrase)
    write_key_file(path, key_file)
    admin = load_key(path, passphrase)
    now = datetime.now(UTC)
    fields = {
        "type": "principal_registered", "principal_id": args.admin, "kind": "person",
        "printed_name": args.name, "roles": ["admin"], "public_key": key_file.public_key,
        "valid_from": now.isoformat(),
    }  # fmt: skip
    outcome = app.submit(sign_json(_header(fields, admin, args.site), [admin], now))
    _print_outcome(1, outcome, out)
    print(f"ledger:            {app.env.get('SQLITE_DBNAME') or app.env.get('POSTGRES_DBNAME')}", file=out)
    print(f"administrator key: {path} (encrypted)", file=out)
    return EXIT_OK if outcome.status == "accepted" else EXIT_FAILED


def cmd_principals_add(args: argparse.Namespace, out: TextIO) -> int:
    pub = read_public(Path(args.public_key))
    valid_from = args.valid_from or datetime.now(UTC)
    fields = {
        "type": "principal_registered", "principal_id": pub.principal_id, "kind": pub.kind,
        "printed_name": pub.printed_name, "roles": args.role, "public_key": pub.public_key,
        "valid_from": valid_from.isoformat(),
    }  # fmt: skip
    return _admin_submit(args, fields, out)


def cmd_principals_rotate(args: argparse.Namespace, out: TextIO) -> int:
    pub = read_public(Path(args.public_key))
    valid_from = args.valid_from or datetime.now(UTC)
    fields = {
        "type": "principal_key_rotated", "principal_id": pub.principal_id,
        "public_key": pub.public_key, "valid_from": valid_from.isoformat(), "routine": args.routine,
    }  # fmt: skip
    return _admin_submit(args, fields, out)


def cmd_principals_revoke(args: argparse.Namespace, out: TextIO) -> int:
    effective_at = args.effective_at or datetime.now(UTC)
    fields = {
        "type": "principal_revoked", "principal_id": args.id, "effective_at": effective_at.isoformat(),
        "keyid": args.keyid, "reason": args.reason,
    }  # fmt: skip
    return _admin_submit(args, fields, out)


def cmd_principals_list(args: argparse.Namespace, out: TextIO) -> int:
    for p in principals(_open_app(writer=False)):
        _say(f"{p.principal_id:<20} {p.kind:<11} {','.join(p.roles):<24} {p.printed_name}", out)
        for k in p.keys:
            _say(f"    {k}", out)
    return EXIT_OK


def cmd_sign(args: argparse.Namespace, out: TextIO) -> int:
    try:
        source = sys.stdin.buffer.read() if args.body == "-" else Path(args.body).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.body}: {exc.strerror}") from None
    try:
        body = msgspec.json.decode(source)
    except msgspec.DecodeError as exc:
        raise Rejected("malformed_json", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise Rejected("malformed_json", "the body is nested too deeply to be an event") from None
    if not isinstance(body, dict):
        raise Rejected("malformed_json", "the body must be a JSON object")
    repeated = first_repeated_key(source)  # a dict keeps the last value: sign nothing ambiguous
    if repeated is not None:
        raise Rejected("duplicate_key", f"the body gives the key {repeated!r} twice in one object", repeated)
    now = datetime.now(UTC)
    body.setdefault("event_id", str(uuid.uuid4()))
    body.setdefault("occurred_at", now.isoformat())
    keys = [load_key(Path(k)) for k in args.key]
    out.write(sign_json(body, keys, now, args.meaning).decode() + "\n")
    return EXIT_OK


def cmd_submit(args: argparse.Namespace, out: TextIO) -> int:
    app = _open_app()
    counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
    for line, outcome in enumerate(app.submit_many(_lines(args.source)), start=1):
        counts[outcome.status] += 1
        if args.json:
            out.write(msgspec.json.encode(outcome).decode() + "\n")
        else:
            _print_outcome(line, outcome, out)
    print(", ".join(f"{n} {status}" for status, n in counts.items()), file=sys.stderr)
    if not any(counts.values()):
        raise UsageError(f"no envelope in {args.source}: coi submit reads one JSON envelope per line")
    _settle_stored(app)
    return EXIT_USAGE if counts["rejected"] else EXIT_OK


def _settle_stored(app: LedgerApplication) -> None:
    """Apply the checkpoint policy after storing records. What was accepted is stored: a
    checkpoint that cannot be signed is said, and must not turn the exit status to failure."""
    try:
        settle(app)
    except (ExposedFileError, KeyFileError, LogError, OSError) as exc:
        _say(f"coi: the records are stored, but no checkpoint was signed: {exc}", sys.stderr)


def cmd_schema(args: argparse.Namespace, out: TextIO) -> int:
    out.write(msgspec.json.format(msgspec.json.encode(json_schema())).decode() + "\n")
    return EXIT_OK


def cmd_history(args: argparse.Namespace, out: TextIO) -> int:
    rows = history(_open_app(writer=False), args.coi)
    if not rows:
        raise UsageError(f"{args.coi} has no records in this ledger")
    if args.json:
        out.write(msgspec.json.encode(rows).decode() + "\n")
        return EXIT_OK
    for r in rows:
        late = "  (entered late)" if (r.recorded_at - r.occurred_at).total_seconds() > 86400 else ""
        when = utc(r.occurred_at, MINUTE)
        _say(f"v{r.version:<3} {when} {r.site:<7} {r.type:<28} {r.actor}{late}", out)
        _say(f"      {r.details}", out)
        for s in r.signatures:
            _say(f"      signed: {s}", out)
        if r.reason:
            _say(f"      reason: {r.reason}", out)
        for c in r.corrections:
            _say(f"      CORRECTED {c}", out)
        for n in r.notes:
            _say(f"      FLAG: {n}", out)
    return EXIT_OK


def cmd_checkpoint(args: argparse.Namespace, out: TextIO) -> int:
    app = _open_app()
    log = MerkleLog(app)
    if args.rotate_key:
        new = ledgerkey.rotate()
        print(f"new ledger key {new.verifier.encode()}; earlier checkpoints stay verifiable", file=sys.stderr)
    if args.rotate_key or args.sign:
        log.checkpoint(ledgerkey.signer(), ledgerkey.origin())
    else:
        settle(app)
    latest = log.store.latest_checkpoint()
    if latest is None:
        raise UsageError("the ledger has no records yet, so no checkpoint")
    out.write(latest.note)
    return EXIT_OK


def cmd_prove(args: argparse.Namespace, out: TextIO) -> int:
    log = MerkleLog(_open_app(writer=False))
    try:
        if args.consistency:
            old, new = args.consistency
            proof = log.consistency(old, new)
        elif args.sequence is not None:
            proof = log.inclusion(args.sequence, args.checkpoint)
        else:
            raise UsageError("give a sequence number, or --consistency OLD NEW")
    except LogError as exc:
        raise UsageError(str(exc)) from None
    out.write(msgspec.json.format(msgspec.json.encode(proof)).decode() + "\n")
    return EXIT_OK


def _open_source() -> Any:
    """The ledger's records, read-only: verifying never creates or alters anything."""
    try:
        return open_source(database_url())
    except SchemaError:
        raise
    except Exception as exc:  # the driver's own message says which server and why
        raise ConfigError(f"cannot open the ledger store ({exc}); check COI_DATABASE_URL") from None


def cmd_verify(args: argparse.Namespace, out: TextIO) -> int:
    trusted = ledgerkey.trusted([Path(p) for p in args.trusted_key])
    if not trusted:
        raise UsageError("no trusted ledger keys: pass --trusted-key FILE (a .vkey file from the ledger)")
    source = _open_source()
    started = time.perf_counter()
    last = [started]

    def progress(report: Report) -> None:
        # Every second on a terminal, every ten in a log file.
        now = time.perf_counter()
        if now - last[0] >= (1 if sys.stderr.isatty() else 10):
            last[0] = now
            rate = report.records / max(now - started, 1e-9)
            print(f"verified {report.records:,} records ({rate:,.0f}/s)", file=sys.stderr)

    state = data_dir() / "verify-state.json" if args.incremental else None
    try:
        report = LedgerVerifier(source, trusted, progress).run(state)
    except StateMismatchError as exc:
        raise UsageError(str(exc)) from None
    seconds = time.perf_counter() - started
    resumed = f", resumed after {report.resumed_from:,} verified leaves" if report.resumed_from else ""
    summary = (
        f"{report.records:,} records, {report.leaves:,} leaves, {report.checkpoints} checkpoints, "
        f"{report.streams:,} aggregates{resumed}, in {seconds:.1f} s"
    )
    if report.failure is not None:
        _say(f"FAILED at {report.failure}", out)
        print(f"(checked before the failure: {summary})", file=out)
        return EXIT_FAILED
    print(f"OK: {summary}", file=out)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    if args.patients < 1:
        raise UsageError("--patients must be at least 1")
    # Say the commands the way this user can type them: `coi` only when it is on PATH.
    prog = "coi" if shutil.which("coi") else os.path.relpath(sys.argv[0])
    app = _open_app()
    bootstrap = configured_bootstrap()
    if bootstrap is None:
        code = run_demo(app, args.patients, data_dir() / "demo-keys", out, prog)
        _settle_stored(app)
        return code
    print(f"coi demo: sending the journeys through Kafka at {bootstrap}", file=sys.stderr)
    publisher = _publisher(bootstrap)
    try:
        return run_demo(
            app,
            args.patients,
            data_dir() / "demo-keys",
            out,
            prog,
            lambda raws: _through(publisher, raws, 120),
        )
    finally:
        publisher.close()


def _publisher(bootstrap: str) -> SitePublisher:
    return SitePublisher(bootstrap, Topics.from_env(), data_dir() / "site-outbox.sqlite", resend_after=15)


def _through(publisher: SitePublisher, raws: list[bytes], timeout: float) -> list[Outcome]:
    """Publish, wait for the ledger's receipts and rejections, and report them as outcomes."""
    ids = publisher.publish_many(raws)
    outcomes = []
    for entry in publisher.wait(ids, timeout):
        if entry.status == "accepted":
            outcomes.append(Outcome("accepted", entry.event_id, entry.type, sequence=entry.sequence))
        elif entry.status == "rejected":
            outcomes.append(
                Outcome("rejected", entry.event_id, entry.type, code=entry.code, message=entry.message,
                        field=entry.field)
            )  # fmt: skip
        else:
            message = f"no receipt within {timeout:.0f} s; it stays in the outbox and is sent again"
            outcomes.append(
                Outcome("rejected", entry.event_id, entry.type, code="not_acknowledged", message=message)
            )
    return outcomes


def cmd_publish(args: argparse.Namespace, out: TextIO) -> int:
    bootstrap = configured_bootstrap()
    if bootstrap is None:
        raise UsageError("no Kafka: set COI_KAFKA_BOOTSTRAP, or run `coi up` in another terminal")
    publisher = _publisher(bootstrap)
    try:
        outcomes = _through(publisher, list(_lines(args.source)), args.wait)
    finally:
        publisher.close()
    for line, outcome in enumerate(outcomes, start=1):
        _print_outcome(line, outcome, out)
    if any(o.code == "not_acknowledged" for o in outcomes):
        return EXIT_FAILED
    return EXIT_USAGE if any(o.status == "rejected" for o in outcomes) else EXIT_OK


def cmd_up(args: argparse.Namespace, out: TextIO) -> int:
    if args.ingests < 1:
        raise UsageError("--ingests must be at least 1")
    return up(args.ingests)


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    return run_one(args.service)


def cmd_broker(args: argparse.Namespace, out: TextIO) -> int:
    return broker_foreground(args.port)


def cmd_projections_rebuild(args: argparse.Namespace, out: TextIO) -> int:
    store = ProjectionStore(projections_url())
    done = rebuild(_open_app(writer=False), store)
    print(f"rebuilt the projections from {done.records:,} records into {redact(projections_url())}", file=out)
    for sequence, why in done.set_aside:
        _say(f"coi: sequence {sequence} could not be projected and was set aside: {why}", sys.stderr)
    if done.set_aside:
        raise UsageError(
            f"{len(done.set_aside)} records are missing from the projections; the ledger holds them "
            "as stored: see coi history for their patients"
        )
    return EXIT_OK


# ---------------------------------------------------------------- parser


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="coi", description="Chain-of-identity and custody ledger.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("init", help="create the ledger and its first administrator")
    s.add_argument("--admin", required=True, help="principal id, e.g. admin.jane")
    s.add_argument("--name", required=True, help="printed name, shown with every signature")
    s.add_argument("--site", default="US-SSF", help="site code of the administrator")
    s.add_argument("--key-out", help="where to write the key (default: coi-data/keys/ID.key)")
    s.set_defaults(run=cmd_init)

    keys = sub.add_parser("keys", help="key files").add_subparsers(dest="keys_command", required=True)
    s = keys.add_parser("new", help="make an Ed25519 key pair")
    s.add_argument("--principal", required=True)
    s.add_argument("--name", required=True, help="printed name (for a device: its label)")
    s.add_argument("--kind", choices=["person", "device", "site_system"], default="person")
    s.add_argument("--out", help="private key file (default: coi-data/keys/ID.key)")
    s.add_argument("--no-passphrase", action="store_true", help="devices and site systems only")
    s.set_defaults(run=cmd_keys_new)

    prn = sub.add_parser("principals", help="register, rotate, revoke, list")
    prs = prn.add_subparsers(dest="principals_command", required=True)
    for name, run in (
        ("add", cmd_principals_add),
        ("rotate", cmd_principals_rotate),
        ("revoke", cmd_principals_revoke),
    ):
        s = prs.add_parser(name)
        s.add_argument("--admin-key", required=True, help="the administrator's key file")
        s.add_argument("--site", help="site where the administrator acts (or COI_SITE)")
        s.set_defaults(run=run)
        if name in ("add", "rotate"):
            s.add_argument("--public-key", required=True, help="the .pub file from coi keys new")
            s.add_argument("--valid-from", type=_time, help="default: now")
        if name == "add":
            s.add_argument("--role", action="append", required=True, help="repeat for several roles")
        if name == "rotate":
            s.add_argument(
                "--routine",
                action="store_true",
                help="a planned replacement, not a loss: the old key may still sign for a short "
                "grace (10 minutes) after --valid-from, for envelopes already in flight",
            )
        if name == "revoke":
            s.add_argument("--id", required=True, help="principal id")
            s.add_argument("--keyid", help="revoke one key only (default: every key)")
            s.add_argument("--effective-at", type=_time, help="default: now")
            s.add_argument("--reason", required=True)
    prs.add_parser("list").set_defaults(run=cmd_principals_list)

    s = sub.add_parser("sign", help="wrap a JSON body into a signed DSSE envelope")
    s.add_argument("--key", action="append", required=True, help="repeat for two-person steps")
    s.add_argument("--meaning", help="signature meaning for people (default by event type)")
    s.add_argument("body", help="JSON file, or - for standard input")
    s.set_defaults(run=cmd_sign)

    s = sub.add_parser("submit", help="append signed envelopes (one JSON per line)")
    s.add_argument("source", help="file of envelopes, or - for standard input")
    s.add_argument("--json", action="store_true", help="one JSON outcome per line")
    s.set_defaults(run=cmd_submit)

    sub.add_parser("schema", help="print the JSON Schema of an event body").set_defaults(run=cmd_schema)

    s = sub.add_parser("checkpoint", help="integrate new records; print the latest signed checkpoint")
    s.add_argument("--sign", action="store_true", help="sign a new checkpoint now, whatever the policy")
    s.add_argument("--rotate-key", action="store_true", help="sign from now on with a new ledger key")
    s.set_defaults(run=cmd_checkpoint)

    s = sub.add_parser("prove", help="RFC 9162 inclusion or consistency proof as JSON")
    s.add_argument("sequence", nargs="?", type=int, help="the record's global sequence number")
    s.add_argument("--checkpoint", type=int, help="tree size of the checkpoint (default: latest)")
    s.add_argument("--consistency", nargs=2, type=int, metavar=("OLD", "NEW"), help="two checkpoint sizes")
    s.set_defaults(run=cmd_prove)

    s = sub.add_parser("verify", help="re-check every signature, chain link, leaf and checkpoint")
    s.add_argument("--incremental", action="store_true", help="start from the last verified checkpoint")
    s.add_argument("--trusted-key", action="append", default=[], help="extra ledger verifier key file")
    s.set_defaults(run=cmd_verify)

    s = sub.add_parser("history", help="one patient's signed history")
    s.add_argument("coi")
    s.add_argument("--json", action="store_true")
    s.set_defaults(run=cmd_history)

    s = sub.add_parser("publish", help="publish signed envelopes to Kafka via the site outbox")
    s.add_argument("source", help="file of envelopes (JSON lines), or - for standard input")
    s.add_argument("--wait", type=float, default=60, help="seconds to wait for receipts (default 60)")
    s.set_defaults(run=cmd_publish)

    s = sub.add_parser("up", help="broker (if none configured), ingest, relay, projector")
    s.add_argument(
        "--ingests", type=int, default=2, help="ingest processes in the consumer group (default 2)"
    )
    s.set_defaults(run=cmd_up)
    s = sub.add_parser("run", help="run one service in the foreground (production)")
    s.add_argument("service", choices=SERVICES)
    s.set_defaults(run=cmd_run)
    s = sub.add_parser("broker", help="run the local Tansu broker in the foreground")
    s.add_argument("--port", type=int, default=9092)
    s.set_defaults(run=cmd_broker)
    prj = sub.add_parser("projections", help="auditors' read models").add_subparsers(
        dest="projections_command", required=True
    )
    prj.add_parser("rebuild", help="rebuild the projection tables from the ledger").set_defaults(
        run=cmd_projections_rebuild
    )

    from ledger.cli import migrate

    migrate.add_parser(sub)

    s = sub.add_parser("demo", help="run realistic journeys across the four sites")
    s.add_argument("--patients", type=int, default=8)
    s.set_defaults(run=cmd_demo)
    return p


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args, out or sys.stdout))
    except Rejected as exc:
        where = f" [{exc.field}]" if exc.field else ""
        _say(f"coi: rejected {exc.code}: {exc.message}{where}", sys.stderr)
    except (
        UsageError,
        ConfigError,
        SchemaError,
        KeyFileError,
        DemoError,
        NoteError,
        BrokerError,
        ExposedFileError,
    ) as exc:
        _say(f"coi: {redact(str(exc))}", sys.stderr)
    except KeyboardInterrupt:
        print("coi: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `coi history X | head`: the reader has all it wanted
        sys.stderr.close()
        return EXIT_OK
    return EXIT_USAGE
