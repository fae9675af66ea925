"""The monitor's archive: every checkpoint note it saw, kept outside the ledger, append-only.

One file per note, named by the log's origin and the tree size, written once and never
overwritten. Each new note must be signed by a trusted ledger key and extend the last one
kept for its log: a consistency proof from that size to its size, verified against both
roots. Two roots for one size, a proof that fails, or a size smaller than one kept is the
log forked or rolled back: `ForkError`, naming both notes' files. A note that contradicts the
archive is kept too (under a name of its own), as evidence. A note of the watched log that no
trusted key signed is `UntrustedError`: a monitor that trusts nothing it sees is failing. The
directory is what `coi verify --checkpoints DIR` reads.

The trust roots are coi verify's (ledger/audit/roots.py), and the archive learns a rotated key
as it does: a key that cosigns a checkpoint with a trusted key. Keys learned are kept in the
directory (LEARNED) for later runs, and trusted again only while a kept note shows that cosignature.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ledger.audit.roots import Roots, learn
from ledger.audit.saved import SUFFIX, signed_by
from ledger.transparency import checkpoint as notes
from ledger.transparency import merkle
from ledger.wire.files import write_atomic, write_new

log = logging.getLogger("coi.monitor")

# The proof from a kept size to the new note's size, or None when the caller has none;
# LookupError when the tree it needs is gone.
Prove = Callable[[int], list[bytes] | None]
LEARNED = "learned-keys.vkey"  # not a *.note: coi verify --checkpoints passes it over


class ForkError(Exception):
    """The log forked or was rolled back (a rollback is a fork of its own history); the
    message names the notes that show it."""


class UntrustedError(Exception):
    """A checkpoint of the watched log that no trusted key signed; says which keys did."""


class ArchiveError(Exception):
    """The archive cannot be read as one (a file that is not a trusted note); says which."""


@dataclass(frozen=True)
class Kept:
    checkpoint: notes.Checkpoint
    path: Path


class Archive:
    def __init__(self, folder: Path, roots: Roots) -> None:
        self.folder = folder
        self.roots = roots
        self.logs: dict[str, dict[int, Kept]] = {}  # origin -> size -> the note kept first
        folder.mkdir(parents=True, exist_ok=True)
        texts = {}
        for path in sorted(folder.glob(f"*{SUFFIX}")):
            try:
                texts[path] = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise ArchiveError(f"{path}: not a checkpoint note (not UTF-8 text)") from None
        self.learn(_sized(texts.values()), self._learned_before(), before=True)
        for path, text in texts.items():
            try:
                checkpoint, _ = notes.verify(text, roots.keys)
            except notes.NoteError as exc:
                raise ArchiveError(
                    f"{path}: {exc}{signed_by(text)}: give the keys that signed the notes kept here "
                    "(--trusted-key)"
                ) from None
            self._remember(Kept(checkpoint, path))

    def learn(
        self, checkpoint_notes: list[tuple[int, str]], published: list[str], before: bool = False
    ) -> None:
        """Trusts each of the `published` keys that cosigns one of these (size, note), oldest
        first, with a trusted key; keeps it in LEARNED (`before`: it came from there) and says so."""
        known = len(self.roots.learned)
        learn(self.roots, checkpoint_notes, published)
        new = self.roots.learned[known:]
        if new and not before:
            lines = "".join(f"{key.encode()}\n" for key, _ in self.roots.learned)
            write_atomic(self.folder / LEARNED, lines.encode())
        for key, size in new:
            log.info(
                "monitor: %s key %s for %s: it cosigns the checkpoint at tree size %d with a trusted key "
                "(kept in %s)",
                "trusting the learned" if before else "learned", key.key_id.hex(), self.roots.origin, size,
                self.folder / LEARNED,
            )  # fmt: skip

    def _learned_before(self) -> list[str]:
        """The keys a run before learned: candidates, as the ledger's published keys are."""
        try:
            return (self.folder / LEARNED).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise ArchiveError(f"{self.folder / LEARNED}: cannot read it ({exc})") from None

    def latest(self, origin: str) -> Kept | None:
        kept = self.logs.get(origin)
        return kept[max(kept)] if kept else None

    def keep(self, note: str, prove: Prove) -> Kept | None:
        """Keep `note` if it is new and extends what is kept; None if it is not a trusted note
        (logged, not kept: anyone may write to a topic). Raises ForkError on a fork or a rollback."""
        try:
            checkpoint, _ = notes.verify(note, self.roots.keys)
        except notes.NoteError as exc:
            self._untrusted(note, exc)
            return None
        same = self.logs.get(checkpoint.origin, {}).get(checkpoint.size)
        if same is not None:
            if same.checkpoint.root == checkpoint.root:
                return same  # seen before (the relay publishes again after a broker reset)
            other = self._write(note, checkpoint, evidence=True)
            raise ForkError(
                f"fork: two checkpoints of {checkpoint.origin} for tree size {checkpoint.size} with "
                f"different roots: {same.path} and {other.path}"
            )
        latest = self.latest(checkpoint.origin)
        if latest is not None and checkpoint.size < latest.checkpoint.size:
            smaller = self._write(note, checkpoint)
            raise ForkError(
                f"rollback: {checkpoint.origin} signed a checkpoint at tree size {checkpoint.size} "
                f"({smaller.path}) after one at {latest.checkpoint.size} ({latest.path})"
            )
        how = "the first of its log"
        if latest is not None:
            old = latest.checkpoint
            try:
                proof = prove(old.size)
            except LookupError:  # the tree between the two sizes is gone: nothing proves it
                proof = []
            if proof is None:
                how = f"NOT checked against size {old.size}: no consistency proof from it"
            elif merkle.verify_consistency(old.size, checkpoint.size, old.root, checkpoint.root, proof):
                how = f"consistent with size {old.size}"
            else:
                bad = self._write(note, checkpoint)
                raise ForkError(
                    f"fork: the checkpoint at tree size {checkpoint.size} ({bad.path}) is not "
                    f"consistent with the one kept at {old.size} ({latest.path})"
                )
        kept = self._write(note, checkpoint)
        log.log(
            logging.WARNING if how.startswith("NOT") else logging.INFO,
            "monitor: kept %s at tree size %d in %s, %s", checkpoint.origin, checkpoint.size, kept.path, how,
        )  # fmt: skip
        return kept

    def _untrusted(self, note: str, exc: notes.NoteError) -> None:
        """A note of another log (or no note at all) is passed over: anyone may write to a
        topic. One of the watched log that no trusted key signed is a failure."""
        try:
            checkpoint = notes.parse(note)[0]
        except notes.NoteError:
            log.warning("monitor: passed over what is not a checkpoint note: %s", exc)
            return
        if checkpoint.origin != self.roots.origin:
            log.warning(
                "monitor: passed over a checkpoint note of another log (%s): %s", checkpoint.origin, exc
            )
            return
        trusted = ", ".join(k.key_id.hex() for k in self.roots.keys) or "none"
        raise UntrustedError(
            f"the checkpoint of {checkpoint.origin} at tree size {checkpoint.size}: {exc}{signed_by(note)}; "
            f"trusted: key ids {trusted} ({self.roots.described}). If the ledger's key was rotated before "
            "this monitor saw a checkpoint signed by both keys, get the new verifier key (.vkey) from its "
            "operator and give it too"
        )

    def check_root(self, origin: str, root_at: Callable[[int], bytes], where: str) -> None:
        """The log's tree now must give, at the largest size kept, the kept note's root: else
        its history was rewritten, even with no new checkpoint (its signer would refuse one)."""
        latest = self.latest(origin)
        if latest is None:
            return
        size = latest.checkpoint.size
        try:
            root = root_at(size)
        except LookupError:  # the nodes under that size are gone
            root = None
        if root != latest.checkpoint.root:
            gives = "gives another root" if root is not None else "gives no root (its tree nodes are gone)"
            raise ForkError(
                f"rewritten: at tree size {size} the tree of {where} {gives}, not the root of the "
                f"checkpoint kept in {latest.path}: records under it were changed, removed or added"
            )

    def check_size(self, origin: str, size: int, where: str, current: Kept | None) -> None:
        """A log now `size` leaves long (its latest checkpoint kept as `current`) must not be
        shorter than a note kept for it."""
        latest = self.latest(origin)
        if latest is not None and size < latest.checkpoint.size:
            now = f" (its latest checkpoint: {current.path})" if current is not None else ""
            raise ForkError(
                f"rollback: {where} holds {size} leaves of {origin}{now} but the checkpoint kept in "
                f"{latest.path} commits to {latest.checkpoint.size}"
            )

    def _remember(self, kept: Kept) -> None:
        by_size = self.logs.setdefault(kept.checkpoint.origin, {})
        first = by_size.setdefault(kept.checkpoint.size, kept)
        if first.checkpoint.root != kept.checkpoint.root:
            raise ForkError(
                f"fork: two checkpoints of {kept.checkpoint.origin} for tree size "
                f"{kept.checkpoint.size} with different roots: {first.path} and {kept.path}"
            )

    def _write(self, note: str, checkpoint: notes.Checkpoint, evidence: bool = False) -> Kept:
        """The note in a file of its own, created, never replaced (a link fails if the name is
        taken), and durable before it counts as kept."""
        name = f"{_safe(checkpoint.origin)}.{checkpoint.size:012d}"
        if evidence:
            name += f".fork-{hashlib.sha256(note.encode()).hexdigest()[:12]}"
        path = self.folder / f"{name}{SUFFIX}"
        if not write_new(path, note.encode()) and path.read_text(encoding="utf-8") != note:
            raise ArchiveError(f"{path} exists with other content: the archive was changed by hand")
        kept = Kept(checkpoint, path)
        if not evidence:
            self.logs.setdefault(checkpoint.origin, {}).setdefault(checkpoint.size, kept)
        return kept


def _safe(origin: str) -> str:
    """The origin as part of a file name, with a digest of it: two origins that read alike
    once their other characters are replaced still get names of their own."""
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", origin)
    return f"{readable}-{hashlib.sha256(origin.encode()).hexdigest()[:8]}"


def _sized(texts: Iterable[str]) -> list[tuple[int, str]]:
    """(size, note) of the notes that can be read, smallest first: what `learn` walks."""
    sized = []
    for text in texts:
        with contextlib.suppress(notes.NoteError):
            sized.append((notes.parse(text)[0].size, text))
    return sorted(sized, key=lambda pair: pair[0])
