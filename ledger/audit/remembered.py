"""What a verifier remembers of the logs it verified: the checkpoint notes it checked, kept
with the verifier (`$COI_CONFIG_DIR/checkpoints/ORIGIN/`), never in the data folder.

After a clean `coi verify` the latest checkpoint note it verified is kept, one file per note,
written once and never replaced: the witnesses' cosigned note when the ledger has one, so
later runs still date records by the cosignatures if the ledger's copy is deleted. Every
later run of that origin holds the ledger to them as `--checkpoints` does
(ledger/audit/saved.py), and each must still be one of the ledger's own checkpoints:
whoever truncates the log and deletes the checkpoints that covered it, or deletes
checkpoints alone, fails for every auditor who verified it before.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import quote

from ledger.audit.saved import SUFFIX, SavedNote, of_log, read_saved
from ledger.audit.source import StoredCheckpoint
from ledger.transparency import checkpoint as notes
from ledger.wire.files import write_new


class Remembered:
    def __init__(self, config: Path, origin: str) -> None:
        self.origin = origin
        self.folder = config / "checkpoints" / quote(origin, safe="")

    def notes(self, trusted: list[notes.NoteVerifier]) -> list[SavedNote]:
        """The notes kept for this origin, smallest first (NoteError names a file no trusted key signed)."""
        return (
            of_log(read_saved([self.folder], trusted, self.origin), self.origin)
            if self.folder.is_dir()
            else []
        )

    def cosigned(self) -> list[str]:
        """The kept notes' texts, to date records by the witnesses' cosignatures they carry."""
        return [p.read_text(encoding="utf-8") for p in sorted(self.folder.glob(f"*{SUFFIX}"))]

    def keep(self, note: str, cosigned: list[str]) -> Path | None:
        """Keeps a verified note, its cosigned form when `cosigned` holds one, unless a file
        holds it already; a note of a size kept with another root is kept too, under a name
        of its own: the next run reads it as a fork."""
        signed = note.partition("\n\n")[0]
        note = next((c for c in cosigned if c.partition("\n\n")[0] == signed), note)
        checkpoint, _, _ = notes.parse(note)
        path = self.folder / f"{checkpoint.size:012d}{SUFFIX}"
        if path.exists():
            held = path.read_text(encoding="utf-8")
            if held == note or _within(note, held):
                return None
            path = path.with_name(
                f"{checkpoint.size:012d}.{hashlib.sha256(note.encode()).hexdigest()[:12]}{SUFFIX}"
            )
        return path if write_new(path, note.encode()) else None  # never over a kept note


def _within(note: str, held: str) -> bool:
    """`held` is the same checkpoint with every signature `note` has (e.g. it is cosigned too)."""
    text, _, lines = note.partition("\n\n")
    held_text, _, held_lines = held.partition("\n\n")
    return text == held_text and set(lines.splitlines()) <= set(held_lines.splitlines())


def gone(kept: list[SavedNote], stored: list[StoredCheckpoint], leaves: int) -> str | None:
    """Why the ledger, of `leaves` leaves, fails the notes this verifier kept: the first kept
    checkpoint that is no longer among the ledger's own, or is there with another root (None:
    all are)."""
    roots = {c.size: c.root for c in stored}
    good = 0  # the largest kept size the ledger still gives the same root
    for note in kept:
        size = note.checkpoint.size
        verified = f"the checkpoint at tree size {size} this verifier verified before ({note.where})"
        if size not in roots:
            if leaves < size:
                return (
                    f"{verified} is gone from the ledger: the log holds {leaves} leaves, fewer than that, "
                    "so its records were truncated and the checkpoints that covered them deleted"
                )
            return (
                f"{verified} is gone from the ledger: its checkpoint was deleted (the leaves are still there)"
            )
        if roots[size] != note.checkpoint.root:
            return (
                f"{verified} is changed in the ledger: another root for that size, so a record among "
                f"leaves {good} to {size - 1} differs"
            )
        good = size
    return None
