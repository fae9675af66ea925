"""Checkpoints kept outside the ledger (`coi verify --checkpoints`, a bundle's --checkpoints,
the monitor's archive), brought back as evidence against it.

A note saved elsewhere was signed by a trusted ledger key when it was saved; whoever can
rewrite the ledger and re-sign its own checkpoint rows cannot change it. The ledger must
then recompute, from its records, the same root at every saved size, and hold at least as
many leaves as the largest saved note commits to. `check` is pure: it is given the roots the
verifier recomputed (it walks the tree anyway) and answers with the first leaf that differs,
as precisely as the saved sizes allow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ledger.transparency import checkpoint as notes

SUFFIX = ".note"  # in a directory, the files read as notes; a file given by name is read whatever its name


@dataclass(frozen=True)
class SavedNote:
    where: str  # the file it was read from, to name it in a finding
    checkpoint: notes.Checkpoint


@dataclass(frozen=True)
class Finding:
    leaf: int | None  # the first leaf that differs, as far as the saved notes tell; None: no record to name
    reason: str


def read_saved(paths: Iterable[Path], trusted: list[notes.NoteVerifier]) -> list[SavedNote]:
    """The notes in these files and directories (a directory: its *.note files), each verified
    with the trusted keys, smallest tree first; raises NoteError naming the file that is not a
    note or carries no valid signature by a trusted key."""
    saved = []
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.name.endswith(SUFFIX) and p.is_file())
        elif path.is_file():
            files = [path]
        else:
            raise notes.NoteError(f"{path}: no such file or directory of saved checkpoints")
        for file in files:
            try:
                checkpoint, _ = notes.verify(file.read_text(encoding="utf-8"), trusted)
            except (notes.NoteError, UnicodeDecodeError) as exc:
                raise notes.NoteError(
                    f"{file}: {exc}: a saved checkpoint must be a note signed by a trusted ledger key"
                ) from None
            saved.append(SavedNote(str(file), checkpoint))
    return sorted(saved, key=lambda s: s.checkpoint.size)


def of_log(saved: list[SavedNote], origin: str | None) -> list[SavedNote]:
    """The notes of the log `origin` (None, when the ledger names none: all of them). A
    directory may keep the notes of several logs, e.g. a demo ledger made anew."""
    return [s for s in saved if origin is None or s.checkpoint.origin == origin]


def check(saved: list[SavedNote], size: int, root_at: Callable[[int], bytes]) -> Finding | None:
    """The ledger, of `size` leaves whose recomputed root at a saved size is `root_at(size)`,
    against the saved notes of its log (smallest first): the first disagreement, or None."""
    fork = _two_roots(saved)
    if fork is not None:
        return fork
    good = 0  # the largest saved size whose root the records still give
    for note in saved:
        at = note.checkpoint.size
        if at > size:
            return Finding(
                size,
                f"the ledger holds {size} records but a checkpoint saved outside it ({note.where}) "
                f"commits to {at}: records were removed from its tail",
            )
        if root_at(at) != note.checkpoint.root:
            matching = f"the one at {good} still matches" if good else "none smaller matches"
            return Finding(
                good,
                f"the records give a different root at tree size {at} than the checkpoint saved "
                f"outside the ledger ({note.where}; {matching}): a record among leaves {good} to "
                f"{at - 1} was changed, removed or added, the first of them at the latest",
            )
        good = at
    return None


def _two_roots(saved: list[SavedNote]) -> Finding | None:
    """Two trusted notes with different roots for one size: the signer forked the log."""
    seen: dict[int, SavedNote] = {}
    for note in saved:
        other = seen.setdefault(note.checkpoint.size, note)
        if other.checkpoint.root != note.checkpoint.root:
            return Finding(
                None,
                f"two checkpoints signed by a trusted key for tree size {note.checkpoint.size} with "
                f"different roots ({other.where} and {note.where}): the log was forked",
            )
    return None
