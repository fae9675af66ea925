"""`coi witness keygen` and `coi run witness`: a C2SP tlog-witness for ledgers (and any log
whose checkpoints are Ed25519 signed notes)."""

from __future__ import annotations

import argparse
import sys

from ledger.cli.common import EXIT_OK, TYPE_CHECKING, UsageError

if TYPE_CHECKING:
    from ledger.audit.witnessing import Witnessing
    from ledger.cli.common import Subparsers
    from ledger.transparency.checkpoint import NoteVerifier


def add_parser(subparsers: Subparsers) -> None:
    group = subparsers.add_parser("witness", help="witness keys (run one with `coi run witness`)")
    commands = group.add_subparsers(dest="witness_command", required=True)
    s = commands.add_parser("keygen", help="make a witness's cosignature key; prints its verifier key")
    s.add_argument("--name", required=True, help="the witness's name, e.g. witness.example.org/w1")
    s.add_argument(
        "--out",
        required=True,
        help="private key file (0600); the verifier key goes beside it, suffix .vkey (w1.key: w1.vkey)",
    )


def add_run_arguments(s: argparse.ArgumentParser) -> None:
    """`coi run witness`'s own options; its --state DIR (where it keeps the latest checkpoint it
    cosigned per log) is coi run's, shared with the monitor."""
    w = s.add_argument_group("witness (coi run witness)")
    w.add_argument("--key", help="the witness's private key file (coi witness keygen)")
    w.add_argument("--listen", help="HOST:PORT to serve on (port 0: any free port)")
    w.add_argument(
        "--log", action="append", default=[], metavar="ORIGIN=VKEY_FILE",
        help="a log to witness and a verifier key of its (repeatable; a log may have several keys)",
    )  # fmt: skip


def add_witness_arguments(s: argparse.ArgumentParser) -> None:
    """`--witness-key FILE ... --quorum N`, for coi verify and coi verify-bundle."""
    s.add_argument(
        "--witness-key", action="append", default=[], metavar="FILE",
        help="a witness's verifier key file (repeatable): its cosignatures date the records",
    )  # fmt: skip
    s.add_argument(
        "--quorum", type=int, metavar="N",
        help="require N cosignatures by distinct --witness-key witnesses on the latest checkpoint "
        "(default 1 with --witness-key)",
    )  # fmt: skip


def witnessing_of(args: argparse.Namespace) -> Witnessing | None:
    """The witness keys and quorum of `add_witness_arguments`' options (None: none given)."""
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
        raise UsageError(
            f"--quorum {quorum}: give a number from 1 to {len(keys)} (the number of --witness-key files)"
        )
    if not keys:
        return None
    return Witnessing(keys, 1 if quorum is None else quorum)  # witness keys alone: one must have cosigned


def run(args: argparse.Namespace) -> int:
    # `witness keygen` is the group's one command.
    from pathlib import Path

    from ledger.transparency.checkpoint import NoteError
    from ledger.transparency.cosignature import Cosigner
    from ledger.wire.files import write_private

    out = Path(args.out)
    vkey = out.with_suffix(".vkey")
    if out.exists() or vkey.exists():
        raise UsageError(f"{out} or {vkey} exists: keep the key a witness has, or pick another --out")
    try:
        cosigner = Cosigner.generate(args.name)
    except NoteError as exc:
        raise UsageError(f"--name: {exc}") from None
    write_private(out, (cosigner.encode() + "\n").encode())
    vkey.write_text(cosigner.verifier.encode() + "\n")
    print(f"private key: {out} (mode 0600)", file=sys.stderr)
    print(
        f"verifier key: {vkey}  <- give it to the logs and verifiers that rely on this witness",
        file=sys.stderr,
    )
    print(cosigner.verifier.encode())
    return EXIT_OK


def run_witness(args: argparse.Namespace) -> int:
    """`coi run witness`: serve until SIGINT/SIGTERM."""
    from pathlib import Path

    from consumers.service import configure_logging, stop_on_signals
    from consumers.witness import Witness, serve
    from ledger.transparency.checkpoint import NoteError
    from ledger.transparency.cosignature import Cosigner
    from ledger.wire.files import ExposedFileError, read_private

    missing = [flag for flag in ("key", "listen", "state") if not getattr(args, flag)]
    if missing or not args.log:
        raise UsageError(
            "coi run witness needs --key FILE --listen HOST:PORT --state DIR and at least one "
            "--log ORIGIN=VKEY_FILE"
        )
    key = Path(args.key)
    try:  # what the file is first: a public key file is not "a private key others can access"
        cosigner = Cosigner.decode(key.read_text())
    except (OSError, NoteError, UnicodeDecodeError) as exc:
        raise UsageError(f"--key {args.key}: {exc} (make one with coi witness keygen)") from None
    try:
        read_private(key)
    except (OSError, ExposedFileError) as exc:
        raise UsageError(f"--key {args.key}: {exc}") from None
    listen_host, _, listen_port = args.listen.rpartition(":")
    if not listen_host or not listen_port.isdigit():
        raise UsageError(f"--listen {args.listen!r}: give HOST:PORT, e.g. 127.0.0.1:7380")
    logs = _logs(args.log)
    for origin, keys in logs.items():
        if any(k.public == cosigner.verifier.public for k in keys):
            raise UsageError(
                f"--key {args.key}: its public key is the one --log {origin} trusts for the ledger; "
                "a witness signs with its own key (coi witness keygen), never the ledger's"
            )
    configure_logging()
    try:
        witness = Witness(cosigner, logs, Path(args.state))
    except OSError as exc:
        raise UsageError(
            f"--state {args.state}: {exc.strerror or exc}; give a directory it can write"
        ) from None
    try:
        server = serve(witness, listen_host.strip("[]"), int(listen_port))
    except OSError as exc:  # taken, not this host's address, a privileged port, ...
        why = (exc.strerror or str(exc)).lower()
        raise UsageError(
            f"--listen {args.listen}: {why}; pick another HOST:PORT or stop what uses it"
        ) from None
    host, port = server.server_address[:2]
    url = f"http://{host!s}:{port}"
    print(f"witness {cosigner.name} on {url}/add-checkpoint", file=sys.stderr, flush=True)
    print(f"verifier key: {cosigner.verifier.encode()}", file=sys.stderr, flush=True)
    stop_on_signals().wait()
    server.shutdown()
    return EXIT_OK


def _logs(specs: list[str]) -> dict[str, list[NoteVerifier]]:
    from pathlib import Path

    from ledger.audit.trust import TrustError, read_keys

    logs: dict[str, list[NoteVerifier]] = {}
    for spec in specs:
        origin, sep, file = spec.partition("=")
        if not sep or not origin or not file:
            raise UsageError(f"--log {spec!r}: give ORIGIN=VKEY_FILE (the log's origin line and its .vkey)")
        try:  # read as every .vkey is (ledger/audit/trust.py): comment lines, every key in it
            keys = read_keys(Path(file))
        except TrustError as exc:
            raise UsageError(f"--log {spec}: {exc}") from None
        named = sorted({k.name for k in keys if k.name != origin})
        if named:  # a ledger names its key after its origin: a key named otherwise is another log's
            raise UsageError(
                f"--log {spec}: {file} holds a key named {', '.join(named)}, not {origin}: give the "
                "origin the key is named after, or that log's own .vkey"
            )
        logs.setdefault(origin, []).extend(keys)
    return logs
