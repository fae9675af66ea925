"""One read-only snapshot of a ledger's log, for an export: records by condition, the leaves
that commit to them, the stored nodes and the latest checkpoint, all in one read transaction
over a read-only source's connection (sources.py). No event store and nothing written: a
SELECT-only role, or a read-only copy of an SQLite file, can export too."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from ledger.audit.source import StoredCheckpoint
from ledger.store.sources import Row, SqlSource
from ledger.store.sql import (
    CHECKPOINTS,
    LEAF_SEQUENCE,
    POSTGRES_EVENTS,
    SQLITE_EVENTS,
    nodes_among,
    placeholders,
    reading,
    records_where,
    stored_checkpoints,
)

# The names the stored events are filed under (ledger/store/topics.py STORED, which imports
# the event store: tests/unit/test_bundle_search.py checks these against it).
THERAPY_TOPICS = ("aggregates.therapy:Therapy.Opened", "aggregates.therapy:Therapy.Recorded")
REGISTRY_TOPICS = (
    "aggregates.principal:Principal.Opened",
    "aggregates.principal:Principal.Recorded",
    "coi:policy.opened",
    "coi:policy.recorded",
    "coi:sites.opened",
    "coi:sites.recorded",
)
# The registry's records, written out (not bound) so that the partial index the migration
# "registry-records-index" makes answers it: a planner uses a partial index only where the
# query's own text implies the index's condition.
REGISTRY_RECORDS = f"topic IN ({', '.join(repr(t) for t in REGISTRY_TOPICS)})"


class Snapshot:
    def __init__(self, c: Any, postgres: bool, tables: frozenset[str] = frozenset()) -> None:
        self.c = c
        self.postgres = postgres
        self.tables = tables
        self.events = POSTGRES_EVENTS if postgres else SQLITE_EVENTS

    def _rows(self, query: str, params: Sequence[object] = ()) -> list[Any]:
        self.c.execute(placeholders(query, self.postgres), params)
        return list(self.c.fetchall())

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        found = stored_checkpoints(self._rows(f"{CHECKPOINTS} ORDER BY tree_size DESC LIMIT 1"))
        return found[0] if found else None

    def cosigned(self, size: int) -> str | None:
        """The checkpoint of `size` with the witnesses' cosignatures, if they cosigned it."""
        if "coi_witnessed" not in self.tables:  # a ledger from before witnesses, not migrated
            return None
        rows = self._rows("SELECT note FROM coi_witnessed WHERE tree_size = ?", (size,))
        return str(rows[0][0]) if rows else None

    def leaf_sequence(self, leaf_index: int) -> int | None:
        rows = self._rows(LEAF_SEQUENCE, (leaf_index,))
        return int(rows[0][0]) if rows else None

    def records(self, condition: str, params: Sequence[object]) -> list[Row]:
        """The stored events matching `condition` (see sql.records_where), in sequence order."""
        return self._rows(records_where(self.events, self.postgres, condition), params)

    def stream_id(self, stream: UUID) -> object:
        """A stream's id as the events table holds it: SQLite 32 hex digits, PostgreSQL a UUID."""
        return stream if self.postgres else stream.hex

    def leaf_indexes(self, sequences: list[int]) -> dict[int, int]:
        """sequence -> leaf index, for those of `sequences` in the log."""
        found: dict[int, int] = {}
        for start in range(0, len(sequences), 500):
            part = sequences[start : start + 500]
            marks = ", ".join("?" * len(part))
            query = f"SELECT sequence, leaf_index FROM coi_leaves WHERE sequence IN ({marks})"  # noqa: S608 - placeholders only
            found.update((int(s), int(leaf)) for s, leaf in self._rows(query, part))
        return found

    def nodes(self, keys: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """The stored nodes among `keys` (level, index), in one query."""
        if not keys:
            return {}
        rows = self._rows(nodes_among(len(keys)), [x for k in keys for x in k])
        return {(int(level), int(idx)): bytes(h) for level, idx, h in rows}


@contextmanager
def snapshot(source: SqlSource) -> Iterator[Snapshot]:
    with reading(source.conn, source.postgres) as c:
        yield Snapshot(c, source.postgres, frozenset(source.tables))
