"""Wrong passphrases, kept where they happen: one JSON line each in a file of the user's coi
config folder (0600), until the next `coi publish` reports them.

A guess costs scrypt's work plus a delay that grows with the recent failures for that key, so a
script at the terminal, or at a signing session's socket, cannot try passphrases quickly. The
file is the user's own: it makes guessing slower and visible, it does not stop someone who
copies the key file (scrypt's cost does that).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO

import msgspec

FILE_NAME = "failed-passphrases.jsonl"

# Two typos cost nothing; then 1, 2, 4 ... seconds, up to half a minute per guess.
FREE_FAILURES, LONGEST_DELAY = 2, 30.0
# Failures older than this no longer slow anyone down (they are still reported).
RECENT = timedelta(minutes=15)


class FailedPassphrase(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One wrong passphrase: for which key, when, and where it was typed."""

    principal_id: str
    keyid: str
    at: datetime
    where: str  # "coi sign", "coi session start", "signing session"


def delay_after(failures: int) -> float:
    """Seconds to wait before checking a passphrase for a key that had `failures` recent wrong
    ones."""
    if failures < FREE_FAILURES:
        return 0.0
    return min(LONGEST_DELAY, 2.0 ** (failures - FREE_FAILURES))


def record_failure(folder: Path, failure: FailedPassphrase) -> None:
    """Add one wrong passphrase to the folder's file."""
    with _locked(folder, os.O_WRONLY | os.O_APPEND | os.O_CREAT) as file:
        file.write(msgspec.json.encode(failure) + b"\n")


def pending_passphrase_failures(folder: Path) -> list[FailedPassphrase]:
    """The wrong passphrases not yet reported, oldest first: what `coi publish` prints (and
    what a security topic would carry)."""
    path = folder / FILE_NAME
    if not path.exists():
        return []
    with _locked(folder, os.O_RDONLY) as file:
        return _decoded(file.read())


def clear_passphrase_failures(folder: Path, reported: list[FailedPassphrase]) -> None:
    """Drop the records `reported`; any written since stay for the next report."""
    path = folder / FILE_NAME
    if not reported or not path.exists():
        return
    with _locked(folder, os.O_RDWR) as file:
        left = [f for f in _decoded(file.read()) if f not in reported]
        file.seek(0)
        file.truncate()
        file.write(b"".join(msgspec.json.encode(f) + b"\n" for f in left))


def wait_before_check(
    folder: Path, keyid: str, now: datetime, sleep: Callable[[float], None] = time.sleep
) -> float:
    """Wait as long as the key's recent failures ask before its passphrase is checked; returns
    the seconds waited."""
    recent = sum(1 for f in pending_passphrase_failures(folder) if f.keyid == keyid and now - f.at < RECENT)
    delay = delay_after(recent)
    if delay:
        sleep(delay)
    return delay


def _decoded(data: bytes) -> list[FailedPassphrase]:
    decoder = msgspec.json.Decoder(FailedPassphrase)
    failures = []
    for line in data.splitlines():
        with contextlib.suppress(msgspec.DecodeError):  # a line cut short by a crash
            failures.append(decoder.decode(line))
    return failures


@contextlib.contextmanager
def _locked(folder: Path, flags: int) -> Iterator[IO[bytes]]:
    """The folder's file opened with `flags` (created 0600) under an exclusive lock: a signing
    session and `coi sign` may add while `coi publish` clears."""
    if flags & os.O_CREAT:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(folder / FILE_NAME, flags, 0o600)
    with os.fdopen(fd, "rb+" if flags & os.O_RDWR else "rb" if flags == os.O_RDONLY else "ab") as file:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield file
