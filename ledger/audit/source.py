"""What the verifier reads, and from where: a record source.

The verifier knows nothing of databases. A source gives the records in global sequence
order, the Merkle log's leaves and stored nodes that commit to them, and the signed
checkpoints. Read-only SQL sources live in ledger/store (sources.py); a bundle can be one too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from ledger.transparency.records import Record


@dataclass(frozen=True)
class StoredCheckpoint:
    size: int
    root: bytes
    note: str
    signed_at: str


class Chunk(NamedTuple):
    """The next records and what commits to them, read at one point in time."""

    rows: list[Any]  # the source's own rows, in sequence order; `RecordSource.sequence(row)` numbers one
    leaves: dict[int, int]  # leaf index -> the sequence it commits to, for the rows' leaves
    nodes: list[dict[int, bytes]]  # by level: index -> hash, the stored nodes those leaves complete


class SchemaError(Exception):
    """The store is not one this program can read (older, or missing tables); the message
    says what to do."""


class RecordSource(Protocol):
    def checkpoints(self) -> list[StoredCheckpoint]:
        """Every stored checkpoint, smallest tree first."""
        ...

    def chunk(self, after: int, start: int, limit: int) -> Chunk:
        """Up to `limit` records after sequence `after`, with the leaves from leaf index
        `start` that commit to them and the stored nodes those leaves complete."""
        ...

    @staticmethod
    def sequence(row: Any) -> int:
        """A row's global sequence."""
        ...

    @staticmethod
    def record(row: Any) -> Record:
        """A row's record; raises msgspec's errors, ValueError or KeyError when the row cannot
        be read as one (the verifier then names it)."""
        ...

    def size(self) -> int:
        """How many leaves the log holds."""
        ...

    def leaf_sequence(self, leaf_index: int) -> int | None:
        """The sequence a leaf commits to, None beyond the log."""
        ...
