"""Dual control from the command line (issue 14, item 3): a draft one administrator signs with
the second's manifestation already in its body (`coi sign --cosigner`, `coi principals add|rotate
--cosigner`), the second's signature added by `coi cosign`, and what the holder of a key is told
when the ledger says someone else replaced or revoked it. Not a command group: records.py and
principals.py call it."""

from __future__ import annotations

import sys

from ledger.cli.common import EXIT_OK, TYPE_CHECKING, UsageError, now, say

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from datetime import datetime, timedelta

    from aggregates.principal import KeyState, PrincipalState
    from ledger.app.application import LedgerApplication
    from ledger.site.signing import Cosigner
    from ledger.wire.keys import LoadedKey


def add_cosigner(parser: argparse.ArgumentParser) -> None:
    """The flags of a command that can prepare a draft for a second signer."""
    parser.add_argument(
        "--cosigner",
        metavar="ID",
        help="a second person signs later (coi cosign): their manifestation goes in the body now; "
        "write the draft with --out",
    )
    parser.add_argument(
        "--cosigner-name",
        metavar="NAME",
        help="the cosigner's printed name, where the ledger is not reachable to say it",
    )
    parser.add_argument("--out", help="write the envelope to this file (default: standard output)")


def reachable() -> LedgerApplication | None:
    """The ledger, to read the registry and the policy from, or None where there is none to
    read (a signing station without the database): finding out creates nothing."""
    from ledger.app.application import LedgerApplication
    from ledger.app.config import ConfigError
    from ledger.audit.source import SchemaError
    from ledger.cli.common import opened
    from ledger.cli.records import new_sqlite_file

    try:
        if new_sqlite_file() is not None:
            return None
        return opened(lambda: LedgerApplication(writer=False))
    except (ConfigError, SchemaError):
        return None


def cosigner(args: argparse.Namespace, app: LedgerApplication | None) -> list[Cosigner]:
    """The person named by --cosigner, with the printed name the registry holds (else
    --cosigner-name); none without --cosigner."""
    from ledger.site.signing import Cosigner

    if args.cosigner is None:
        if args.cosigner_name is not None:
            raise UsageError("--cosigner-name goes with --cosigner ID")
        return []
    if args.out is None:
        raise UsageError("a draft for a cosigner is a file they sign next: write it with --out FILE")
    state = None if app is None else _state(app, args.cosigner)
    if state is not None:
        if state.kind != "person":
            raise UsageError(f"{args.cosigner} is a {state.kind}: only a person cosigns")
        if args.cosigner_name is not None and args.cosigner_name != state.printed_name:
            raise UsageError(
                f"{args.cosigner} is registered as {state.printed_name!r}, not {args.cosigner_name!r}"
            )
        return [Cosigner(args.cosigner, state.printed_name)]
    if app is not None:
        raise UsageError(f"{args.cosigner} is not registered on this ledger (coi principals list)")
    if args.cosigner_name is None:
        raise UsageError(
            "the ledger is not reachable here to say the cosigner's printed name: "
            "give it with --cosigner-name"
        )
    return [Cosigner(args.cosigner, args.cosigner_name)]


def write_envelope(raw: bytes, out: str | None) -> None:
    """An envelope to standard output, or atomically to `out`."""
    from pathlib import Path

    from ledger.wire.files import write_atomic

    if out is None:
        sys.stdout.write(raw.decode() + "\n")
        return
    try:
        write_atomic(Path(out), raw + b"\n")
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror}") from None
    say(f"coi: wrote {out}", sys.stderr)


def tell_holders(keys: Sequence[LoadedKey], app: LedgerApplication | None) -> None:
    """Tell the holder of each key, on standard error, when the ledger says the key was
    replaced or revoked by a record they did not sign: so a person learns at their next
    signature that an administrator changed their key (Part 11.300: keys are the person's)."""
    if app is None:
        return  # nothing to read it from here
    for key in keys:
        state = _state(app, key.principal_id)
        held = None if state is None else state.keys.get(key.signer.keyid)
        if held is None or (held.valid_until is None and held.revoked_at is None):
            continue
        for line in _changes(app, key, held):
            say(f"coi: NOTE {line}", sys.stderr)


def _changes(app: LedgerApplication, key: LoadedKey, held: KeyState) -> list[str]:
    """What replaced or revoked `key` (`held`, its state) without its holder's signature, one
    line each: the rotation whose valid_from ended it, the revocation that revoked it."""
    from aggregates.base import body_of
    from ledger.wire import events as ev
    from ledger.wire.dsse import open_envelope

    said = []
    for recorded_at, envelope in app.registry_records(key.principal_id):
        body = body_of(envelope)
        signers = [keyid.split(":", 1)[0] for keyid, _ in open_envelope(envelope).signatures]
        if key.principal_id in signers:
            continue
        by = ", ".join(signers)
        if isinstance(body, ev.PrincipalKeyRotated) and body.valid_from == held.valid_until:
            said.append(
                f"{key.principal_id}: your key {key.signer.keyid} was replaced by a new key at "
                f"{_when(recorded_at)}, by {by}, without your signature"
                f"{' after a reported loss' if not body.routine else ''}; if you did not ask for "
                "this, tell your quality unit"
            )
        elif isinstance(body, ev.PrincipalRevoked) and body.effective_at == held.revoked_at:
            said.append(
                f"{key.principal_id}: your key {key.signer.keyid} was revoked at {_when(recorded_at)} "
                f"by {by} ({body.reason})"
            )
    return said


def _when(at: datetime) -> str:
    return at.isoformat(timespec="seconds")


def _state(app: LedgerApplication, principal_id: str) -> PrincipalState | None:
    from eventsourcing.application import AggregateNotFoundError

    from aggregates.principal import principal_uuid

    try:
        state: PrincipalState = app.repository.get(principal_uuid(principal_id)).state
    except AggregateNotFoundError:
        return None
    return state


def warn_duplicate_name(app: LedgerApplication, principal_id: str, printed_name: str) -> None:
    """Printed names need not be unique (two people may share one), but a registration that
    repeats one is said: every display shows the principal id beside the name."""
    same = [p.principal_id for p in app.registered() if p.printed_name == printed_name]
    others = [pid for pid in same if pid != principal_id]
    if others:
        say(
            f"coi: WARNING the printed name {printed_name!r} is already registered for "
            f"{', '.join(others)}; displays tell them apart by principal id",
            sys.stderr,
        )


def cosign(args: argparse.Namespace) -> int:
    """`coi cosign`: add this key's signature to a draft whose body already holds its
    manifestation, signed within the policy's skew of now."""
    from pathlib import Path

    from aggregates.policy import LEGACY
    from ledger.cli.signers import signing_keys
    from ledger.wire.decoding import decode_body
    from ledger.wire.dsse import add_signature, open_envelope
    from ledger.wire.rejection import ReasonCode, Rejected

    try:
        raw = sys.stdin.buffer.read() if args.draft == "-" else Path(args.draft).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.draft}: {exc.strerror}") from None
    opened = open_envelope(raw.strip())
    at = now()
    app = reachable()
    skew = LEGACY.skew if app is None else app.policy_in_force().policy.skew
    body = decode_body(opened.body, at, skew)
    keys = signing_keys([args.key] if args.key else None, args.passphrase_fd, "coi cosign")
    if len(keys) != 1:
        raise UsageError("one signature per coi cosign: give --key FILE or use a signing session, not both")
    key = keys[0]
    if any(keyid.split(":", 1)[0] == key.principal_id for keyid, _ in opened.signatures):
        raise UsageError(f"{key.principal_id} has signed this envelope already")
    mine = [m for m in body.manifestations if m.principal == key.principal_id]
    if not mine:
        raise Rejected(
            ReasonCode.MISSING_MANIFESTATION,
            f"the body has no manifestation for {key.principal_id}: the first signer names you with "
            f"--cosigner {key.principal_id}",
            "manifestations",
        )
    (m,) = mine
    if m.printed_name != key.printed_name:
        raise Rejected(
            ReasonCode.MANIFESTATION_MISMATCH,
            f"the body names {key.principal_id} {m.printed_name!r}; the key file says {key.printed_name!r}",
            "manifestations",
        )
    if abs(at - m.signed_at) > skew:
        raise Rejected(
            ReasonCode.SIGNED_AT_OUT_OF_RANGE,
            f"your manifestation says signed_at {_when(m.signed_at)}, {_minutes(at - m.signed_at)} from "
            f"now; a signature states when it is made, within the policy's skew "
            f"({_minutes(skew)}): ask the first signer to prepare the draft again",
            "manifestations",
        )
    tell_holders([key], app)
    tag = type(body).__struct_config__.tag
    first = ", ".join(keyid.split(":", 1)[0] for keyid, _ in opened.signatures)
    say(f"coi: {key.principal_id} signs {tag} {body.event_id} by {first}, meaning {m.meaning}", sys.stderr)
    write_envelope(add_signature(opened, key.signer), args.out)
    return EXIT_OK


def _minutes(span: timedelta) -> str:
    return f"{abs(span.total_seconds()) / 60:.1f} minutes"
