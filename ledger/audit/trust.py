"""The verifier's trust store: which keys sign which log, kept apart from any data folder.

Like SSH's known_hosts, one line per (origin, verifier key) in `$COI_CONFIG_DIR/known_logs`
(COI_CONFIG_DIR defaults to `$XDG_CONFIG_HOME/coi`, else `~/.config/coi`): `ORIGIN VKEY`,
where VKEY is the note verifier key `name+keyid+base64`. Lines starting with `#` are comments.
Nothing here reads the ledger's data folder: a key planted beside the database is never trusted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ledger.transparency.checkpoint import NoteError, NoteVerifier
from ledger.wire.files import PRIVATE, write_atomic

KNOWN_LOGS = "known_logs"


def config_dir() -> Path:
    """The per-user folder for the trust store and the verifier's state."""
    if os.environ.get("COI_CONFIG_DIR"):
        return Path(os.environ["COI_CONFIG_DIR"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "coi"


class TrustError(Exception):
    """The trust store or a key file cannot be read; the message names the file and the line."""


@dataclass(frozen=True)
class Entry:
    origin: str
    verifier: NoteVerifier

    def line(self) -> str:
        return f"{self.origin} {self.verifier.encode()}"


class TrustStore:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_dir() / KNOWN_LOGS

    def entries(self) -> list[Entry]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise TrustError(f"cannot read the trust store {self.path}: {exc.strerror}") from None
        found = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            origin, _, vkey = line.strip().partition(" ")
            try:
                found.append(Entry(origin, NoteVerifier.decode(vkey)))
            except NoteError as exc:
                raise TrustError(f"{self.path}, line {number}: {exc}; fix or delete that line") from None
        return found

    def keys(self, origin: str) -> list[NoteVerifier]:
        return [e.verifier for e in self.entries() if e.origin == origin]

    def add(self, origin: str, verifier: NoteVerifier) -> bool:
        """Trust `verifier` for `origin`; False when it already was."""
        entries = self.entries()
        if Entry(origin, verifier) in entries:
            return False
        self._write([*entries, Entry(origin, verifier)])
        return True

    def remove(self, what: str) -> list[Entry]:
        """Forget the entries of an origin, or of a key id (hex, either case); returns those removed."""
        entries = self.entries()
        gone = [e for e in entries if what == e.origin or what.lower() == e.verifier.key_id.hex()]
        if gone:
            self._write([e for e in entries if e not in gone])
        return gone

    def _write(self, entries: list[Entry]) -> None:
        # Atomically: a verifier reading at the same time sees the old file or the new one.
        header = "# coi trust store: ORIGIN VERIFIER-KEY, one line per key a log signs with\n"
        write_atomic(self.path, (header + "".join(e.line() + "\n" for e in entries)).encode(), PRIVATE)


def read_keys(path: Path) -> list[NoteVerifier]:
    """The verifier keys in a .vkey file (one per line; `#` starts a comment line); a file
    with none is an error (TrustError), wherever a key file is read."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "it is not text"
        raise TrustError(f"cannot read the verifier key file {path}: {why}") from None
    lines = [line.strip() for line in text.splitlines()]
    try:
        keys = [NoteVerifier.decode(line) for line in lines if line and not line.startswith("#")]
    except NoteError as exc:
        raise TrustError(f"{path}: {exc}") from None
    if not keys:
        raise TrustError(
            f"{path}: no verifier key in it (expected NAME+KEYID+BASE64 lines; the log's operator "
            "writes them with coi trust export)"
        )
    return keys


def fingerprint(verifier: NoteVerifier) -> str:
    """What a person compares by voice or on paper: the key's id (its name is the log's
    origin, which the message says already)."""
    return f"key {verifier.key_id.hex()}"
