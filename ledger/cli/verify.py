"""`coi checkpoint`, `coi prove`, `coi verify`: the Merkle log, its proofs, and re-checking it all."""

from __future__ import annotations

import argparse
import sys

from ledger.cli.common import EXIT_FAILED, EXIT_OK, TYPE_CHECKING, UsageError, open_app, opened, say
from ledger.cli.witness import add_witness_arguments, witnessing_of

if TYPE_CHECKING:
    from collections.abc import Callable

    from ledger.audit.remembered import Remembered
    from ledger.audit.roots import Roots
    from ledger.audit.source import StoredCheckpoint
    from ledger.audit.verification import Report
    from ledger.audit.witnessing import Witnessing
    from ledger.cli.common import Subparsers
    from ledger.store.sources import SqlSource
    from ledger.transparency.checkpoint import NoteSigner


def add_parser(subparsers: Subparsers) -> None:
    s = subparsers.add_parser("checkpoint", help="integrate new records; print the latest signed checkpoint")
    s.add_argument("--sign", action="store_true", help="sign a new checkpoint now, whatever the policy")
    step = s.add_mutually_exclusive_group()
    step.add_argument(
        "--rotate-key",
        action="store_true",
        help="make a new ledger key; the old and the new one sign every checkpoint until --retire-old-key",
    )
    step.add_argument(
        "--retire-old-key",
        action="store_true",
        help="end a rotation: stop signing with the old key (once the witnesses have the new .vkey)",
    )

    s = subparsers.add_parser("prove", help="RFC 9162 inclusion or consistency proof as JSON")
    s.add_argument("sequence", nargs="?", type=int, help="the record's global sequence number")
    s.add_argument("--checkpoint", type=int, help="tree size of the checkpoint (default: latest)")
    s.add_argument("--consistency", nargs=2, type=int, metavar=("OLD", "NEW"), help="two checkpoint sizes")

    s = subparsers.add_parser("verify", help="re-check every signature, chain link, leaf and checkpoint")
    s.add_argument("--incremental", action="store_true", help="start from the last verified checkpoint")
    s.add_argument(
        "--trusted-key",
        action="append",
        default=[],
        help="the ledger's verifier key file (.vkey); repeatable",
    )
    s.add_argument(
        "--trust-on-first-use",
        action="store_true",
        help="with no trusted key for the log, trust the keys that sign its first checkpoint now",
    )
    s.add_argument(
        "--checkpoints",
        action="append",
        default=[],
        metavar="DIR|FILE",
        help="checkpoints saved outside the ledger (a note file, or a directory of *.note, e.g. the "
        "monitor's): the ledger must give the same root at each one's size",
    )
    add_witness_arguments(s)
    s.add_argument(
        "--no-replay",
        action="store_true",
        help="skip replaying the domain rules (signatures, chains, log only)",
    )


def run(args: argparse.Namespace) -> int:
    return {"checkpoint": _checkpoint, "prove": _prove, "verify": _verify}[args.command](args)


def _checkpoint(args: argparse.Namespace) -> int:
    from ledger.app import ledgerkey
    from ledger.app.log import LogError, MerkleLog, settle, sign

    app = open_app()
    log = MerkleLog(app)
    if args.rotate_key:
        _say_rotated(ledgerkey.rotate(log.store))
    if args.retire_old_key:
        old = ledgerkey.retire_old_key(log.store)
        say(
            f"coi: retired the old ledger key {old.key_id.hex()}: the new key alone signs from now on",
            sys.stderr,
        )
    before = log.store.latest_checkpoint()
    try:
        if args.rotate_key or args.sign:
            signed = sign(log)
            if before is not None and signed.size == before.size:
                _say_nothing_new(signed.size, ledgerkey.rotating(ledgerkey.origin(log.store)))
        else:
            try:
                settle(app)
            except ledgerkey.NoLedgerKeyError as exc:
                print(f"coi: {exc}; the log is integrated", file=sys.stderr)
    except LogError as exc:
        say(f"coi: no checkpoint signed: {exc}", sys.stderr)
        return EXIT_FAILED
    latest = log.store.latest_checkpoint()
    if latest is None:
        raise UsageError("the ledger has no signed checkpoint yet")
    sys.stdout.write(latest.note)
    return EXIT_OK


def _say_rotated(new: NoteSigner) -> None:
    say(f"coi: new ledger key {new.verifier.key_id.hex()}, added to your trust store; its .vkey:", sys.stderr)
    say(new.verifier.encode(), sys.stderr)
    say(
        "coi: from now on the old and the new key sign every checkpoint. Next: give this .vkey "
        "(or coi trust export --out FILE) to the witnesses (an added --log "
        "ORIGIN=NEW.vkey, keeping the old one) and to the auditors (coi trust add FILE); then "
        "coi checkpoint --retire-old-key",
        sys.stderr,
    )


def _say_nothing_new(size: int, rotating: bool) -> None:
    then = (
        "the new key's first checkpoint, signed by both keys, comes with the next record"
        if rotating
        else "nothing new to sign"
    )
    say(f"coi: the latest checkpoint already covers the log (size {size:,}); {then}", sys.stderr)


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

    from ledger.audit.remembered import Remembered, gone
    from ledger.audit.saved import read_saved
    from ledger.audit.trust import config_dir
    from ledger.audit.verification import LedgerVerifier, StateMismatchError
    from ledger.cli.trust import keep_learned, state_file

    witnessing = witnessing_of(args)
    trusted = _trusted(args)
    if trusted is None:
        return EXIT_FAILED
    roots, source = trusted
    saved = read_saved([Path(p) for p in args.checkpoints], roots.keys, roots.origin)
    if args.checkpoints and not saved:
        raise UsageError(f"no saved checkpoints (*.note) in {', '.join(args.checkpoints)}")
    remembered = Remembered(config_dir(), roots.origin)
    kept = remembered.notes(roots.keys)
    if kept:
        say(
            f"coi verify: held to {_count(len(kept), 'checkpoint')} this verifier kept: "
            f"{remembered.folder} (the latest at tree size {kept[-1].checkpoint.size:,})",
            sys.stderr,
        )
    missing = gone(kept, source.checkpoints(), source.size())
    if missing is not None:
        say(f"FAILED: {missing}")
        return EXIT_FAILED
    # An incremental run holds the kept notes by their presence (above) and its state: their
    # roots are below the point it resumes from, which only a full walk recomputes.
    held = saved + ([] if args.incremental else kept)
    held_by_me = 0 if args.incremental else len(kept)
    # The witnesses' cosignatures this verifier kept date records even if the ledger lost its copy.
    cosigned = source.witnessed() + (remembered.cosigned() if remembered.folder.is_dir() else [])
    started = time.perf_counter()
    verifier = LedgerVerifier(
        source,
        roots.keys,
        _progress(started),
        saved=held,
        cosigned=cosigned,
        witnessing=witnessing,
        replay=not args.no_replay,
    )
    try:
        report = verifier.run(state_file(roots.origin) if args.incremental else None)
    except StateMismatchError as exc:
        say(f"FAILED: {exc}; a full coi verify names what changed")
        return EXIT_FAILED
    summary = _summary(report, time.perf_counter() - started, held_by_me)
    if report.failure is not None:
        failure = report.failure
        say(f"FAILED at {failure}" if failure.sequence is not None else f"FAILED: {failure.reason}")
        if report.records:
            print(f"(checked before the failure: {summary})")
        elif failure.sequence is None:
            print("(no record was checked: every checkpoint's signature is checked first)")
        _uncovered(report, ok=False)
        return EXIT_FAILED
    keep_learned(roots)
    if report.latest_note is not None:
        _remember(remembered, report.latest_note, source.witnessed())
    print(f"OK: {summary}")
    print(_replayed(report, args.no_replay))
    _uncovered(report, ok=True)
    if witnessing is not None:
        _say_witnessed(source.checkpoints(), cosigned, witnessing)
    return EXIT_OK


def _trusted(args: argparse.Namespace) -> tuple[Roots, SqlSource] | None:
    """The trust roots for the ledger and its read-only source; None (said) when no key is
    trusted for the log and the user did not ask to trust it on first use."""
    from pathlib import Path

    from ledger.cli.trust import first_use, roots_for

    roots, source = roots_for([Path(p) for p in args.trusted_key], _open_source)
    if not roots.keys:
        if not args.trust_on_first_use:
            say(
                f"FAILED: no trusted key for the log {roots.origin} ({roots.described}). Get its verifier "
                "key (.vkey) from the ledger's operator by a channel you trust, then coi trust add FILE "
                "(or pass --trusted-key FILE); or accept the key it has now with --trust-on-first-use"
            )
            return None
        first_use(source, roots)
    print(f"coi verify: trusted roots: {roots.described}", file=sys.stderr)
    return roots, source


def _progress(started: float) -> Callable[[Report], None]:
    """Progress on stderr: every second on a terminal, every ten in a log file."""
    import time

    last = [started]

    def progress(report: Report) -> None:
        now = time.perf_counter()
        if now - last[0] >= (1 if sys.stderr.isatty() else 10):
            last[0] = now
            rate = report.records / max(now - started, 1e-9)
            print(f"verified {report.records:,} records ({rate:,.0f}/s)", file=sys.stderr)

    return progress


def _remember(remembered: Remembered, note: str, cosigned: list[str]) -> None:
    try:
        remembered.keep(note, cosigned)
    except OSError as exc:  # a read-only home: the check stands, the memory of it does not
        say(
            f"coi verify: WARNING: cannot keep the latest checkpoint in {remembered.folder} "
            f"({exc.strerror}): later runs cannot hold the ledger to it; set COI_CONFIG_DIR "
            "to a folder of yours",
            sys.stderr,
        )


def _summary(report: Report, seconds: float, kept_here: int) -> str:
    """`kept_here` of the report's saved checkpoints are this verifier's memory, the others
    were saved outside it."""
    resumed = f", resumed after {report.resumed_from:,} verified leaves" if report.resumed_from else ""
    outside = report.saved - kept_here if report.saved else 0
    kept = f", {_count(kept_here, 'checkpoint')} kept by this verifier" if report.saved and kept_here else ""
    kept += f", {_count(outside, 'checkpoint')} saved outside it" if outside > 0 else ""
    return (
        f"{_count(report.records, 'record')}, {_count(report.leaves, 'leaf', 'leaves')}, "
        f"{_count(report.checkpoints, 'checkpoint')}{kept}, {_count(report.streams, 'aggregate')}"
        f"{resumed}, in {seconds:.1f} s"
    )


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else many or one + 's'}"


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
    say(
        f"witnessed: the latest checkpoint (tree size {size}) is cosigned by "
        f"{names or 'none of the given witnesses'}"
    )


def _uncovered(report: Report, ok: bool) -> None:
    """Records no checkpoint covers yet, and of those the ones not yet in the Merkle log: not a
    failure by itself (the next signed checkpoint covers them)."""
    count, first = max(report.unsealed, report.unlogged), report.unsealed_from or report.unlogged_from
    if not count:
        return
    unlogged = f" ({report.unlogged:,} of them not yet in the Merkle log)" if report.unlogged else ""
    them = "it" if count == 1 else "them"
    after = f": checked, but no signed checkpoint vouches for {them} yet; the next one will" if ok else ""
    say(
        f"not yet covered: {_count(count, 'record')}, from sequence {first}, "
        f"came after the latest checkpoint{unlogged}{after}"
    )


def _replayed(report: Report, skipped: bool) -> str:
    if report.replayed:
        return "rules: replayed over every record, each under the policy in force at its place"
    if skipped:
        return "rules: NOT replayed (--no-replay)"
    return "rules: NOT replayed (an incremental run has not the patients' states: run a full coi verify)"


def _open_source() -> SqlSource:
    """The ledger's records, read-only: verifying never creates or alters anything."""
    from ledger.app.config import database_url
    from ledger.store.sources import open_source

    return opened(lambda: open_source(database_url()))
