"""What verify checks with the witnesses: a quorum of cosignatures on the latest checkpoint,
and the ledger's clock held to the witnesses'.

Clock: no record may be dated (`recorded_at`) more than CLOCK_TOLERANCE before an earlier
record in sequence order, nor more than CLOCK_TOLERANCE before the earliest cosignature time
of a witnessed checkpoint that does not contain it (the relay asks witnesses only about a
checkpoint that covers the whole log, so any record it leaves out committed after it).

Why a tolerance, on both stores: the ledger stamps `recorded_at` when it reads a batch
(LedgerApplication._prepare), before the batch's signatures are checked and before it
commits, and the store numbers records in commit order; writers side by side (`coi up`'s two
ingests, a `coi submit`) commit a little out of stamp order, on SQLite as on PostgreSQL.
benchmarks/clock_order.py measured up to 0.16 s back on SQLite and 0.40 s on PostgreSQL with
three writers on a loaded machine. A witness's time is another clock, in whole seconds
rounded down, taken a request after the checkpoint was signed. 5 s covers these more than
ten times over and is small beside a back-dating that matters.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ledger.transparency import checkpoint as notes
from ledger.transparency.cosignature import CosignatureVerifier, Cosigned, cosignatures

CLOCK_TOLERANCE = timedelta(seconds=5)


@dataclass(frozen=True)
class Witnessing:
    """The witness keys a verifier trusts and how many distinct ones the latest checkpoint needs."""

    keys: list[CosignatureVerifier]
    quorum: int


def witnessed_times(
    cosigned: list[str], roots: dict[int, bytes], keys: list[CosignatureVerifier]
) -> tuple[list[tuple[int, int]], str | None]:
    """[(tree size, earliest cosignature time)] of the cosigned notes, by trusted keys, and
    the first problem: a cosigned note that is not the ledger's checkpoint of its size, or a
    cosignature by a trusted key that does not verify."""
    times: list[tuple[int, int]] = []
    for note in cosigned:
        try:
            checkpoint, _, _ = notes.parse(note)
            found = cosignatures(note, keys)
        except notes.NoteError as exc:
            return times, f"a cosigned checkpoint: {exc}"
        if checkpoint.size not in roots:
            return (
                times,
                f"the cosigned checkpoint at tree size {checkpoint.size} is missing from the ledger's "
                "checkpoints",
            )
        if roots[checkpoint.size] != checkpoint.root:
            return (
                times,
                f"the cosigned checkpoint at tree size {checkpoint.size} is not the ledger's checkpoint",
            )
        if found:
            times.append((checkpoint.size, min(c.timestamp for c in found)))
    return sorted(times), None


def cosigners(size: int, cosigned: list[str], keys: list[CosignatureVerifier]) -> list[Cosigned]:
    """The valid cosignatures by `keys` on the checkpoint of `size`, one per key."""
    note = next((n for n in cosigned if notes.parse(n)[0].size == size), None)
    return cosignatures(note, keys) if note is not None else []


def quorum_problem(
    latest: int | None, cosigned: list[str], witnessing: Witnessing, which: str = "the latest checkpoint"
) -> str | None:
    """Why the latest checkpoint (`which`, as the message names it) lacks `quorum` cosignatures
    by distinct trusted keys, if it does."""
    if latest is None:
        return "the ledger has no checkpoint to be witnessed"
    found = {(c.name, c.key_id) for c in cosigners(latest, cosigned, witnessing.keys)}
    if len(found) >= witnessing.quorum:
        return None
    missing = [witness_label(k) for k in witnessing.keys if (k.name, k.key_id) not in found]
    return (
        f"{which} (tree size {latest}) has {len(found)} of the {witnessing.quorum} "
        f"cosignatures required by distinct given witnesses; none by {', '.join(missing)}"
    )


def witness_label(key: CosignatureVerifier) -> str:
    """A witness key as messages name it: one witness may have had several keys."""
    return f"{key.name} (key {key.key_id.hex()})"


@dataclass
class ClockCheck:
    """Fed the records in sequence order, with the number of records before each."""

    witnessed: list[tuple[int, int]]  # (tree size, cosignature time), by size
    last: datetime | None = None  # the latest recorded_at so far
    _sizes: list[int] = field(default_factory=list)
    _floors: list[int] = field(default_factory=list)  # the latest time of those at or below each size

    def __post_init__(self) -> None:
        self._sizes = [size for size, _ in self.witnessed]
        running = 0
        for _, when in self.witnessed:
            running = max(running, when)
            self._floors.append(running)

    def problem(self, position: int, recorded_at: datetime) -> str | None:
        last = self.last  # the latest before this one: steps back within the tolerance add up to no more
        if last is not None and recorded_at < last - CLOCK_TOLERANCE:
            return (
                f"recorded_at {recorded_at.isoformat()} is before {last.isoformat()}, an earlier record's, "
                f"by more than {CLOCK_TOLERANCE.seconds} s: the ledger's clock went back"
            )
        self.last = recorded_at if last is None else max(last, recorded_at)
        # The witnessed checkpoints that do not contain this record: those of size <= position.
        below = bisect.bisect_right(self._sizes, position)
        if below:
            floor = datetime.fromtimestamp(self._floors[below - 1], recorded_at.tzinfo)
            if recorded_at < floor - CLOCK_TOLERANCE:
                return (
                    f"recorded_at {recorded_at.isoformat()} is before {floor.isoformat()}, when a witness "
                    f"cosigned a checkpoint (tree size {self._sizes[below - 1]} or less) that does not "
                    "contain it: back-dated"
                )
        return None
