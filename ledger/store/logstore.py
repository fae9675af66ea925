"""Tables of the Merkle log, beside the event store (SQLite or PostgreSQL):

- coi_leaves: leaf index -> the record's global sequence (notification id)
- coi_nodes: every perfect subtree root (level 0 = leaf hashes)
- coi_checkpoints: signed tree heads, one per tree size
- coi_relay: how far each relay has published the log to Kafka

They are written by the log integrator after records commit, and can be rebuilt from the
records at any time (drop them and integrate again).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, NamedTuple

from eventsourcing.persistence import ApplicationRecorder
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.rows import tuple_row

from ledger.audit.source import StoredCheckpoint

TABLES = ("coi_leaves", "coi_nodes", "coi_checkpoints", "coi_relay")

_DDL = (
    "CREATE TABLE IF NOT EXISTS coi_leaves (leaf_index {int} PRIMARY KEY, sequence {int} NOT NULL UNIQUE)",
    "CREATE TABLE IF NOT EXISTS coi_nodes (level {int} NOT NULL, idx {int} NOT NULL, hash {blob} NOT NULL, "
    "PRIMARY KEY (level, idx))",
    "CREATE TABLE IF NOT EXISTS coi_checkpoints (tree_size {int} PRIMARY KEY, root {blob} NOT NULL, "
    "note TEXT NOT NULL, signed_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS coi_relay (name TEXT PRIMARY KEY, next_leaf {int} NOT NULL, "
    "probe_partition {int} NOT NULL, probe_offset {int} NOT NULL, probe_sequence {int} NOT NULL)",
)


class RelayPosition(NamedTuple):
    """The next leaf to publish, and where the last published one landed in Kafka (partition,
    offset, its sequence): finding it there later proves the broker still has the log."""

    next_leaf: int
    probe_partition: int
    probe_offset: int
    probe_sequence: int


_SELECT_RECORDS = (
    "SELECT {sequence}, originator_id, originator_version, state FROM {table} "
    "WHERE {sequence} > ? ORDER BY {sequence} LIMIT ?"
)


class LogStore:
    def __init__(self, recorder: ApplicationRecorder) -> None:
        self.datastore: Any = recorder.datastore  # type: ignore[attr-defined]
        self.postgres = isinstance(recorder, PostgresApplicationRecorder)
        types = {"int": "BIGINT", "blob": "BYTEA"} if self.postgres else {"int": "INTEGER", "blob": "BLOB"}
        with self._tx(commit=True) as c:
            for ddl in _DDL:
                c.execute(ddl.format(**types))
        events: str = recorder.events_table_name  # type: ignore[attr-defined]
        if self.postgres:
            table = f'"{self.datastore.schema}"."{events}"'
            self.select_records = self.sql(_SELECT_RECORDS.format(sequence="notification_id", table=table))
        else:
            self.select_records = _SELECT_RECORDS.format(sequence="rowid", table=events)

    def _tx(self, commit: bool) -> AbstractContextManager[Any]:
        return self.datastore.transaction(commit=commit)

    def sql(self, text: str) -> str:
        """`text` with the engine's placeholders (written with `?`)."""
        return text.replace("?", "%s") if self.postgres else text

    @contextmanager
    def reading(self) -> Iterator[Any]:
        """A read transaction whose rows are plain tuples: sqlite3.Row (or a dict per row)
        costs more than reading the row."""
        with self._tx(commit=False) as c:
            if self.postgres:
                c.row_factory = tuple_row
            else:
                c.sqlite_cursor.row_factory = None  # the sqlite3.Cursor in eventsourcing's wrapper
            yield c

    def records(self, after: int, limit: int) -> list[tuple[int, Any, int, bytes]]:
        """Up to `limit` stored events after global sequence `after`, in order: (sequence,
        originator id, version, state). Straight from the events table: eventsourcing's
        select_notifications makes a UUID and a Notification per row, which cost more than
        the query."""
        with self.reading() as c:
            c.execute(self.select_records, (after, limit))
            return list(c.fetchall())

    def _rows(self, query: str, params: Sequence[object] = ()) -> list[Any]:
        with self._tx(commit=False) as c:
            c.execute(self.sql(query), params)
            return list(c.fetchall())

    # --------------------------------------------------------------- leaves

    def size(self) -> int:
        row = self._rows("SELECT MAX(leaf_index) AS m FROM coi_leaves")[0]
        return 0 if row["m"] is None else int(row["m"]) + 1

    def last_sequence(self) -> int:
        row = self._rows("SELECT MAX(sequence) AS m FROM coi_leaves")[0]
        return int(row["m"] or 0)

    def append(self, leaves: list[tuple[int, int]], nodes: list[tuple[int, int, bytes]]) -> None:
        """Leaves (index, sequence) and the perfect nodes they complete, in one transaction."""
        with self._tx(commit=True) as c:
            c.executemany(self.sql("INSERT INTO coi_leaves VALUES (?, ?)"), leaves)
            c.executemany(self.sql("INSERT INTO coi_nodes VALUES (?, ?, ?)"), nodes)

    def leaf_index(self, sequence: int) -> int | None:
        rows = self._rows("SELECT leaf_index FROM coi_leaves WHERE sequence = ?", (sequence,))
        return int(rows[0]["leaf_index"]) if rows else None

    def sequence(self, leaf_index: int) -> int | None:
        rows = self._rows("SELECT sequence FROM coi_leaves WHERE leaf_index = ?", (leaf_index,))
        return int(rows[0]["sequence"]) if rows else None

    def leaves(self, start: int, stop: int) -> list[tuple[int, int]]:
        """(leaf index, sequence) for leaf indexes in [start, stop), in order."""
        rows = self._rows(
            "SELECT leaf_index, sequence FROM coi_leaves WHERE leaf_index >= ? AND leaf_index < ? "
            "ORDER BY leaf_index",
            (start, stop),
        )
        return [(int(r["leaf_index"]), int(r["sequence"])) for r in rows]

    # ---------------------------------------------------------------- nodes

    def nodes(self, keys: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """The stored nodes among `keys` (level, index), in one query."""
        if not keys:
            return {}
        # OR'ed equalities: both engines answer each from the primary key index.
        where = " OR ".join(["(level = ? AND idx = ?)"] * len(keys))
        query = "SELECT level, idx, hash FROM coi_nodes WHERE " + where  # noqa: S608 - placeholders only
        rows = self._rows(query, [x for k in keys for x in k])
        return {(int(r["level"]), int(r["idx"])): bytes(r["hash"]) for r in rows}

    def node_range(self, level: int, first: int, last: int) -> dict[int, bytes]:
        rows = self._rows(
            "SELECT idx, hash FROM coi_nodes WHERE level = ? AND idx >= ? AND idx <= ?", (level, first, last)
        )
        return {int(r["idx"]): bytes(r["hash"]) for r in rows}

    # ----------------------------------------------------------- checkpoints

    def add_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        with self._tx(commit=True) as c:
            c.execute(
                self.sql("INSERT INTO coi_checkpoints VALUES (?, ?, ?, ?)"),
                (checkpoint.size, checkpoint.root, checkpoint.note, checkpoint.signed_at),
            )

    def checkpoints(self, after: int = -1) -> list[StoredCheckpoint]:
        """The checkpoints of trees larger than `after`, smallest first. (The relay asks every
        step for the new ones: one a thousand records adds up over a ledger's life.)"""
        return self._checkpoints("WHERE tree_size > ? ORDER BY tree_size", after)

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        found = self._checkpoints("ORDER BY tree_size DESC LIMIT 1")
        return found[0] if found else None

    def checkpoint(self, size: int) -> StoredCheckpoint | None:
        found = self._checkpoints("WHERE tree_size = ?", size)
        return found[0] if found else None

    def _checkpoints(self, clause: str, *params: object) -> list[StoredCheckpoint]:
        query = f"SELECT tree_size, root, note, signed_at FROM coi_checkpoints {clause}"  # noqa: S608 - our clauses
        rows = self._rows(query, params)
        return [
            StoredCheckpoint(int(r["tree_size"]), bytes(r["root"]), str(r["note"]), str(r["signed_at"]))
            for r in rows
        ]

    # ---------------------------------------------------------------- relay

    def relay_position(self, name: str) -> RelayPosition:
        rows = self._rows(
            "SELECT next_leaf, probe_partition, probe_offset, probe_sequence FROM coi_relay WHERE name = ?",
            (name,),
        )
        if not rows:
            return RelayPosition(0, -1, -1, -1)
        r = rows[0]
        return RelayPosition(
            int(r["next_leaf"]), int(r["probe_partition"]), int(r["probe_offset"]), int(r["probe_sequence"])
        )

    def set_relay_position(self, name: str, position: RelayPosition) -> None:
        with self._tx(commit=True) as c:
            c.execute(self.sql("DELETE FROM coi_relay WHERE name = ?"), (name,))
            c.execute(self.sql("INSERT INTO coi_relay VALUES (?, ?, ?, ?, ?)"), (name, *position))
