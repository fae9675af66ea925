"""The signer's own memory of the last checkpoint it signed, one file per log origin.

It sits beside the signing key, not in the ledger's database: whoever restores the database
from a backup, or truncates it, cannot make the signer forget what it signed, so the ledger
never signs two different checkpoints for one tree size (MerkleLog.checkpoint checks every
head against it). Every signer of the log (the relay, `coi checkpoint`, `coi submit`)
reads and writes it holding one exclusive lock, a flock on a file beside it, and it is
replaced atomically, so it is always a checkpoint that was signed.
"""

from __future__ import annotations

import base64
import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import msgspec

from ledger.wire.files import PRIVATE, write_atomic

log = logging.getLogger("coi.signer")


class SignerMemoryError(Exception):
    """The memory cannot be read or written; the message says which file and what to do."""


class SignedHead(msgspec.Struct, frozen=True):
    """The last checkpoint signed for `origin`: its tree size and root, the note itself, and when."""

    origin: str
    size: int
    root: str  # base64, as in the note
    note: str
    signed_at: str  # ISO 8601, UTC

    def __post_init__(self) -> None:  # a damaged file fails to decode, rather than mislead
        if self.size < 0 or len(self.root_hash) != 32:
            raise ValueError("not a tree size and a SHA-256 root")
        datetime.fromisoformat(self.signed_at)

    @property
    def root_hash(self) -> bytes:
        return base64.b64decode(self.root, validate=True)


class SignerMemory:
    def __init__(self, folder: Path, origin: str, waiting: Callable[[], None] | None = None) -> None:
        self.origin = origin
        name = quote(origin, safe="")  # an origin is a URL-like name: "host/log"
        self.path = folder / f"{name}.signed.json"
        self.lock_path = folder / f"{name}.lock"
        self.waiting = waiting or self._say_waiting

    @contextmanager
    def holding(self) -> Iterator[SignedHead | None]:
        """The last head signed (None: nothing yet), holding the memory's lock: no other
        signer of this origin signs until the block ends. Whoever waits for it is told."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, PRIVATE)
        except OSError as exc:
            raise SignerMemoryError(
                f"cannot open the signer's lock {self.lock_path}: {exc.strerror}"
            ) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.waiting()
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield self._read()
        finally:
            os.close(fd)  # releases the lock

    def remember(self, head: SignedHead) -> None:
        """Records `head` as the last signed; call it holding the lock (`holding`)."""
        try:
            write_atomic(self.path, msgspec.json.format(msgspec.json.encode(head)) + b"\n", PRIVATE)
        except OSError as exc:
            raise SignerMemoryError(
                f"cannot record the checkpoint about to be signed in {self.path}: {exc.strerror}; "
                "nothing was signed"
            ) from None

    def _read(self) -> SignedHead | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SignerMemoryError(f"cannot read the signer's memory {self.path}: {exc.strerror}") from None
        try:
            head = msgspec.json.decode(data, type=SignedHead)
        except msgspec.DecodeError as exc:
            raise SignerMemoryError(
                f"the signer's memory {self.path} is damaged ({exc}): it records the last checkpoint "
                "this key signed, and without it the ledger could sign a second one for a size it "
                "signed; restore it from a backup of that folder, or move it aside only after "
                "comparing the ledger with its published checkpoints (coi verify)"
            ) from None
        if head.origin != self.origin:
            raise SignerMemoryError(
                f"the signer's memory {self.path} is for the log {head.origin!r}, not {self.origin!r}; "
                "put it back where it came from"
            )
        return head

    def _say_waiting(self) -> None:
        log.warning(
            "another signer of %s holds %s (the relay, or another coi command); waiting for it",
            self.origin, self.lock_path,
        )  # fmt: skip
