"""Whom `coi verify` believes: the trust roots for one log, and what it may learn beyond them.

Roots come from `--trusted-key FILE` (repeatable), else COI_TRUSTED_KEYS (files joined by
`:`), else the trust store's entries for the log's origin (ledger/audit/trust.py); never from
the data folder being checked. Beyond its roots a verifier learns a key only when that key
cosigns a checkpoint a trusted key signs (a ledger key rotation signs its first checkpoint
with both keys). Trust on first use takes the keys that sign the log's first checkpoint, and
says so: it proves only that the log has not changed keys since, not who signed it first.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ledger.audit.trust import TrustStore, read_keys
from ledger.transparency import checkpoint as notes
from ledger.transparency.checkpoint import NoteVerifier


@dataclass
class Roots:
    origin: str
    keys: list[NoteVerifier]
    described: str  # where they came from, as verify prints it
    store: TrustStore | None = None  # the trust store they came from: what is learned is kept there
    learned: list[tuple[NoteVerifier, int]] = field(default_factory=list)  # (key, checkpoint size)
    first_use: list[NoteVerifier] = field(default_factory=list)  # trusted on first use this run


def choose(files: list[Path], store: TrustStore, origin: Callable[[], str]) -> Roots:
    """The roots for the log named by `origin()`, from the first place that gives any (key
    files are read before the log is asked its name, so a bad file is said first)."""
    listed = [Path(p) for p in os.environ.get("COI_TRUSTED_KEYS", "").split(":") if p]
    how = "--trusted-key" if files else "COI_TRUSTED_KEYS"
    if files or listed:
        keys = [k for path in files or listed for k in read_keys(path)]
        return Roots(origin(), keys, f"{how}: {', '.join(str(p) for p in files or listed)}")
    name = origin()
    keys = store.keys(name)
    ids = ", ".join(k.key_id.hex() for k in keys) or "none"
    return Roots(name, keys, f"trust store {store.path}, origin {name}: key ids {ids}", store)


def first_use(origin: str, first_note: str, published: list[str]) -> list[NoteVerifier]:
    """The keys named for `origin`, among those the ledger publishes, that sign its first
    checkpoint: what trust on first use records."""
    return [k for k in _candidates(origin, published) if _signs(first_note, k)]


def learn(roots: Roots, checkpoint_notes: list[tuple[int, str]], published: list[str]) -> None:
    """Adds to `roots` each published key that cosigns, with a key already trusted, a checkpoint
    (size, note), oldest first, so a chain of rotations is followed."""
    candidates = [k for k in _candidates(roots.origin, published) if k not in roots.keys]
    for size, note in checkpoint_notes:
        if not candidates:
            return  # nothing left to learn: no signature to check (a log has a checkpoint per 1000 records)
        if not any(_signs(note, k) for k in roots.keys):
            continue
        for key in [k for k in candidates if _signs(note, k)]:
            roots.keys.append(key)
            roots.learned.append((key, size))
            candidates.remove(key)


def _candidates(origin: str, published: list[str]) -> list[NoteVerifier]:
    found = []
    for vkey in published:
        try:
            key = NoteVerifier.decode(vkey)
        except notes.NoteError:
            continue  # a published key that cannot be read is nothing to learn
        if key.name == origin:
            found.append(key)
    return found


def _signs(note: str, key: NoteVerifier) -> bool:
    try:
        notes.verify(note, [key])
    except notes.NoteError:
        return False
    return True
