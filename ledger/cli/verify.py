"""`coi checkpoint`, `coi prove`, `coi verify`: the Merkle log, its proofs, and re-checking it all."""

from __future__ import annotations

import argparse
import sys

from ledger.cli.common import EXIT_FAILED, EXIT_OK, TYPE_CHECKING, UsageError, open_app, opened, say

if TYPE_CHECKING:
    from ledger.audit.source import StoredCheckpoint
    from ledger.audit.verification import Report
    from ledger.audit.witnessing import Witnessing
    from ledger.cli.common import Subparsers
    from ledger.store.sources import SqlSource


def add_parser(subparsers: Subparsers) -> None:
    s = subparsers.add_parser("checkpoint", help="integrate new records; print the latest signed checkpoint")
    s.add_argument("--sign", action="store_true", help="sign a new checkpoint now, whatever the policy")
    s.add_argument("--rotate-key", action="store_true", help="sign from now on with a new ledger key")

    s = subparsers.add_parser("prove", help="RFC 9162 inclusion or consistency proof as JSON")
    s.add_argument("sequence", nargs="?", type=int, help="the record's global sequence number")
    s.add_argument("--checkpoint", type=int, help="tree size of the checkpoint (default: latest)")
    s.add_argument("--consistency", nargs=2, type=int, metavar=("OLD", "NEW"), help="two checkpoint sizes")

    s = subparsers.add_parser("verify", help="re-check every signature, chain link, leaf and checkpoint")
    s.add_argument("--incremental", action="store_true", help="start from the last verified checkpoint")
    s.add_argument("--trusted-key", action="append", default=[], help="extra ledger verifier key file")
    s.add_argument(
        "--witness-key", action="append", default=[], metavar="FILE",
        help="a witness's verifier key file (repeatable): its cosignatures date the records",
    )  # fmt: skip
    s.add_argument(
        "--quorum", type=int, metavar="N",
        help="require N cosignatures by distinct --witness-key witnesses on the latest checkpoint",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    return {"checkpoint": _checkpoint, "prove": _prove, "verify": _verify}[args.command](args)


def _checkpoint(args: argparse.Namespace) -> int:
    from ledger.app import ledgerkey
    from ledger.app.log import MerkleLog, settle

    app = open_app()
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
    sys.stdout.write(latest.note)
    return EXIT_OK


def _prove(args: argparse.Namespace) -> int:
    import msgspec

    from ledger.app.log import LogError, MerkleLog

    log = MerkleLog(open_app(writer=False))
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
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(proof)).decode() + "\n")
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from ledger.app import ledgerkey
    from ledger.app.config import data_dir
    from ledger.audit.verification import LedgerVerifier, StateMismatchError

    trusted = ledgerkey.trusted([Path(p) for p in args.trusted_key])
    if not trusted:
        raise UsageError("no trusted ledger keys: pass --trusted-key FILE (a .vkey file from the ledger)")
    witnessing = _witnessing(args)
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
        report = LedgerVerifier(
            source, trusted, progress, cosigned=source.witnessed(), witnessing=witnessing
        ).run(state)
    except StateMismatchError as exc:
        raise UsageError(str(exc)) from None
    seconds = time.perf_counter() - started
    resumed = f", resumed after {report.resumed_from:,} verified leaves" if report.resumed_from else ""
    summary = (
        f"{report.records:,} records, {report.leaves:,} leaves, {report.checkpoints} checkpoints, "
        f"{report.streams:,} aggregates{resumed}, in {seconds:.1f} s"
    )
    if report.failure is not None:
        say(f"FAILED at {report.failure}")
        print(f"(checked before the failure: {summary})")
        return EXIT_FAILED
    print(f"OK: {summary}")
    if witnessing is not None:
        _say_witnessed(source.checkpoints(), source.witnessed(), witnessing)
    return EXIT_OK


def _witnessing(args: argparse.Namespace) -> Witnessing | None:
    from pathlib import Path

    from ledger.audit.witnessing import Witnessing
    from ledger.transparency.checkpoint import NoteError
    from ledger.transparency.cosignature import CosignatureVerifier

    keys = []
    for file in args.witness_key:
        try:
            keys.append(CosignatureVerifier.decode(Path(file).read_text()))
        except (OSError, NoteError, UnicodeDecodeError) as exc:
            raise UsageError(f"--witness-key {file}: {exc}") from None
    if len({(k.name, k.key_id) for k in keys}) != len(keys):
        raise UsageError("--witness-key: the same witness key is given twice; a quorum counts distinct keys")
    quorum = args.quorum
    if quorum is not None and not keys:
        raise UsageError("--quorum counts cosignatures by witnesses: give their --witness-key files")
    if quorum is not None and not 1 <= quorum <= len(keys):
        raise UsageError(f"--quorum {quorum}: give 1 to {len(keys)} (the number of --witness-key files)")
    if not keys:
        return None
    return Witnessing(keys, quorum or 0)


def _say_witnessed(checkpoints: list[StoredCheckpoint], cosigned: list[str], witnessing: Witnessing) -> None:
    from datetime import UTC, datetime

    from ledger.audit.witnessing import cosigners

    if not checkpoints:
        return
    found = cosigners(checkpoints[-1].size, cosigned, witnessing.keys)
    names = ", ".join(
        f"{c.name} at {datetime.fromtimestamp(c.timestamp, UTC):%Y-%m-%d %H:%M:%S} UTC" for c in found
    )
    size = checkpoints[-1].size
    say(f"witnessed: the latest checkpoint (tree size {size}) is cosigned by {names or 'no one'}")


def _open_source() -> SqlSource:
    """The ledger's records, read-only: verifying never creates or alters anything."""
    from ledger.app.config import database_url
    from ledger.store.sources import open_source

    return opened(lambda: open_source(database_url()))
