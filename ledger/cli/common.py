"""What the command groups share: exit codes, terminal output, argument types, opening the ledger.

Every group module imports this one to build the parser, for `coi --help` and `coi schema`
too, whose start is measured (benchmarks/startup.py): so at module level it, and the group
modules, import only argparse, os, re and sys (which argparse imports anyway); anything else
is imported inside the function that needs it, even datetime, pathlib and typing.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

# typing.TYPE_CHECKING without importing typing (a tenth of `coi --help`); type checkers
# take any constant of this name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from datetime import datetime
    from pathlib import Path
    from typing import Any, Protocol, TextIO, TypeVar

    from ledger.app.application import LedgerApplication, Outcome
    from ledger.wire.keys import LoadedKey

    T = TypeVar("T")

    class Subparsers(Protocol):
        """What a group's `add_parser` is given: argparse's subparsers, or the listing of them."""

        def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# What a terminal would act on rather than show: C0 and C1 controls (line breaks, escape
# sequences), line and paragraph separators, and the bidi marks and overrides that reorder text.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` for a terminal, with what it would act on written as a visible escape: text the
    ledger holds was written by others and must not forge lines or rewrite the screen."""
    return _UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], text)


def say(line: str, out: TextIO | None = None) -> None:
    """Print a line that may hold text from the ledger (default: standard output)."""
    print(printable(line), file=out or sys.stdout)


class UsageError(Exception):
    """Bad command-line input; the message says what to do."""


def now() -> datetime:
    """The current time in UTC."""
    from datetime import UTC, datetime

    return datetime.now(UTC)


def utc_time(text: str) -> datetime:
    """An argparse type: an ISO 8601 time with a zone, in UTC."""
    from datetime import UTC, datetime

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


def add_format(parser: argparse.ArgumentParser, *, json_alias: bool = False) -> None:
    """`--format table|json` (DESIGN.md's CLI conventions); `--json` where it existed before."""
    parser.add_argument("--format", choices=("table", "json"), default="table", help="default: table")
    if json_alias:
        parser.add_argument(
            "--json", dest="format", action="store_const", const="json", help="the same as --format json"
        )


def open_app(writer: bool = True) -> LedgerApplication:
    """The ledger; a writer migrates it on start, a reader (writer=False) changes nothing."""
    from ledger.app.application import LedgerApplication

    app = opened(lambda: LedgerApplication(writer=writer))
    if writer:  # once: a signing key found beside the data goes where it belongs
        from ledger.app.ledgerkey import move_old_keys
        from ledger.store.logstore import LogStore

        move_old_keys(LogStore(app.recorder))
    return app


def opened(opening: Callable[[], T]) -> T:
    """What `opening` opens on the ledger store; a driver's failure said as what to check."""
    from ledger.app.config import ConfigError
    from ledger.audit.source import SchemaError

    try:
        return opening()
    except (ConfigError, SchemaError):
        raise
    except Exception as exc:  # the driver's own message says which server and why
        raise ConfigError(f"cannot open the ledger store ({exc}); check COI_DATABASE_URL") from None


def lines(source: str) -> Iterator[bytes]:
    """The non-blank lines of a file, or of standard input for `-`."""
    try:
        stream = sys.stdin.buffer if source == "-" else open(source, "rb")  # noqa: SIM115
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror}") from None
    with stream:
        for line in stream:
            if line.strip():
                yield line.strip()


def add_passphrase_fd(parser: argparse.ArgumentParser) -> None:
    """`--passphrase-fd N`: passphrases read from a descriptor, one line per key asked for."""
    parser.add_argument(
        "--passphrase-fd", type=int, metavar="N",
        help="read each passphrase asked for as one line from descriptor N (automation; "
        "default: ask on the terminal)",
    )  # fmt: skip


def new_passphrase(principal_id: str, kind: str, fd: int | None) -> bytes:
    """A new key's passphrase, checked; typed twice when asked on the terminal."""
    from ledger.wire.keys import PASSPHRASE_ENV, ask_passphrase, check_passphrase

    first = ask_passphrase(f"New passphrase for {principal_id}: ", kind, fd)
    check_passphrase(first, principal_id)
    typed = fd is None and (kind == "person" or not os.environ.get(PASSPHRASE_ENV))
    if typed and ask_passphrase("Repeat it: ", kind) != first:
        raise UsageError("the passphrases differ")
    return first


def new_key_path(out: str | None, principal: str, flag: str) -> Path:
    """Where a new key file goes; never over an existing one, which may be a registered key
    (for a rotation, write the new key beside it)."""
    from pathlib import Path

    from ledger.app.config import data_dir

    path = Path(out or data_dir() / "keys" / f"{principal}.key")
    if path.exists():
        raise UsageError(f"{path} exists and is never overwritten; write the new key with {flag} FILE")
    return path


def header(fields: dict[str, Any], actor: LoadedKey, site: str) -> dict[str, Any]:
    """A body signed now by `actor` at `site`: a fresh event id and the current time."""
    import uuid

    return {
        "event_id": str(uuid.uuid4()),
        "occurred_at": now().isoformat(),
        "site": site,
        "actor": actor.principal_id,
        **fields,
    }


def print_outcomes(outcomes: list[Outcome] | Iterator[Outcome], output_format: str) -> dict[str, int]:
    """One line per outcome (a JSON object per line for `--format json`); the count of each status."""
    import msgspec

    counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
    for line, o in enumerate(outcomes, start=1):
        counts[o.status] += 1
        if output_format == "json":
            # the outcome as before the security log: its entry is the ledger's, not the submitter's
            sys.stdout.write(msgspec.json.encode(msgspec.structs.replace(o, security=None)).decode() + "\n")
        elif o.status == "rejected":
            where = f" [{o.field}]" if o.field else ""
            say(f"{line}: rejected  {o.code}: {o.message}{where}")
        elif o.status == "duplicate":
            say(f"{line}: duplicate {o.type} {o.event_id} (already stored; nothing added)")
        else:
            say(f"{line}: accepted  seq={o.sequence} {o.type} {o.event_id}")
    return counts


def settle_stored(app: LedgerApplication) -> None:
    """Apply the checkpoint policy after storing records. What was accepted is stored: a
    checkpoint that cannot be signed is said, and must not turn the exit status to failure."""
    from ledger.app.ledgerkey import NoLedgerKeyError
    from ledger.app.log import LogError, settle
    from ledger.transparency.checkpoint import NoteError
    from ledger.wire.files import ExposedFileError
    from ledger.wire.keys import KeyFileError

    try:
        settle(app)
    except NoLedgerKeyError as exc:
        say(
            f"coi: {exc}: the records are stored and in the Merkle log; the host with the key signs",
            sys.stderr,
        )
    except (ExposedFileError, KeyFileError, LogError, NoteError, OSError) as exc:
        say(f"coi: the records are stored, but no checkpoint was signed: {exc}", sys.stderr)
