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

ED25519_SIGNATURE = 64

SUFFIX = ".note"  # in a directory, the files read as notes; a file given by name is read whatever its name


@dataclass(frozen=True)
class SavedNote:
    where: str  # the file it was read from, to name it in a finding
    checkpoint: notes.Checkpoint
    trusted: bool = True  # False: a note of another log, read but not verified (no evidence)


@dataclass(frozen=True)
class Finding:
    leaf: int | None  # the first leaf that differs, when the saved notes tell it; None: no one leaf to name
    reason: str
    among: tuple[int, int] | None = None  # else the leaves (first, last) among which one differs


def read_saved(
    paths: Iterable[Path], trusted: list[notes.NoteVerifier], origin: str | None = None
) -> list[SavedNote]:
    """The notes in these files and directories (a directory: its *.note files), smallest tree
    first, those of the log `origin` (None: all) each verified with the trusted keys; raises
    NoteError naming the file that is not a note, or is of that log and carries no valid
    signature by a trusted key. Notes of other logs (a monitor's directory may keep several)
    are read, not verified: `of_log` passes them over."""
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
                text = file.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise notes.NoteError(f"{file}: not a checkpoint note (not UTF-8 text)") from None
            try:
                checkpoint = notes.parse(text)[0]
                mine = origin is None or checkpoint.origin == origin
                if mine:
                    notes.verify(text, trusted)
            except notes.NoteError as exc:
                raise notes.NoteError(
                    f"{file}: {exc}{signed_by(text)}: a saved checkpoint of this log must be a note "
                    "signed by a trusted ledger key"
                ) from None
            saved.append(SavedNote(str(file), checkpoint, trusted=mine))
    return sorted(saved, key=lambda s: s.checkpoint.size)


def signed_by(note: str) -> str:
    """The key ids of a note's signatures that could be the ledger's, as a clause (empty when
    there are none or it cannot be read): what tells a verifier which key it would need, e.g.
    after a rotation. Witnesses' cosignatures are left out: no ledger key made them."""
    ids = [kid.hex() for kid in ledger_key_ids(note)]
    return f" (it is signed by key id{'s' if len(ids) > 1 else ''} {', '.join(ids)})" if ids else ""


def ledger_key_ids(note: str) -> list[bytes]:
    """The key ids of the signature lines named by the note's origin and of an Ed25519 note
    signature's length (a cosignature carries a timestamp too); none when it cannot be read."""
    try:
        checkpoint, _, signatures = notes.parse(note)
    except notes.NoteError:
        return []
    return [
        kid for name, kid, sig in signatures if name == checkpoint.origin and len(sig) == ED25519_SIGNATURE
    ]


def of_log(saved: list[SavedNote], origin: str | None) -> list[SavedNote]:
    """The notes of the log `origin` (None, when the ledger names none: all of them). A
    directory may keep the notes of several logs, e.g. a demo ledger made anew."""
    return [s for s in saved if s.trusted and (origin is None or s.checkpoint.origin == origin)]


def check(saved: list[SavedNote], size: int, records: int, root_at: Callable[[int], bytes]) -> Finding | None:
    """The ledger, of `size` leaves and `records` records, whose recomputed root at a saved size
    is `root_at(size)`, against the saved notes of its log (smallest first): the first
    disagreement, or None."""
    found = fork(saved)
    if found is not None:
        return found
    good = 0  # the largest saved size whose root the records still give
    for note in saved:
        at = note.checkpoint.size
        if at > size:
            return Finding(
                size,
                f"the ledger holds {records} record{'' if records == 1 else 's'} and {size} "
                f"lea{'f' if size == 1 else 'ves'} but the checkpoint saved outside it ({note.where}) "
                f"commits to {at} leaves: records or their leaves were removed from its tail",
            )
        if root_at(at) != note.checkpoint.root:
            matching = f"the one at {good} still matches" if good else "none smaller matches"
            if at - good == 1:
                return Finding(good, f"{_differs(at, note, matching)}: the record at leaf {good} was changed")
            # The roots tell only that some leaf in between differs, not which one.
            return Finding(
                None,
                f"{_differs(at, note, matching)}: a record among leaves {good} to {at - 1} was "
                "changed, removed or added",
                among=(good, at - 1),
            )
        good = at
    return None


def _differs(at: int, note: SavedNote, matching: str) -> str:
    return (
        f"the records give a different root at tree size {at} than the checkpoint saved outside the "
        f"ledger ({note.where}; {matching})"
    )


def fork(saved: list[SavedNote]) -> Finding | None:
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
