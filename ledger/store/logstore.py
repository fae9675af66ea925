"""Tables of the Merkle log, beside the event store (SQLite or PostgreSQL):

- coi_leaves: leaf index -> the record's global sequence (notification id)
- coi_nodes: every perfect subtree root (level 0 = leaf hashes)
- coi_checkpoints: signed tree heads, one per tree size
- coi_relay: how far each relay has published the log to Kafka
- coi_origin: the log's name, the origin line of its checkpoints (one row)
- coi_ledger_keys: the verifier keys of every key that signed its checkpoints
- coi_witnessed: checkpoints with the witnesses' cosignatures (consumers/witnessing.py)

The first four are written by the log integrator after records commit, and can be rebuilt from the
records at any time (drop them and integrate again). The migrations make them
(ledger/store/migrations.py). One integrator writes them at a time:
`integrating` is a transaction holding the log's lock (a PostgreSQL advisory lock, SQLite's
write lock), and whoever waits for it is told.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

from eventsourcing.persistence import ApplicationRecorder
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLITE3_DEFAULT_LOCK_TIMEOUT
from psycopg.rows import tuple_row

from ledger.audit.source import StoredCheckpoint
from ledger.store.sql import (
    CHECKPOINTS,
    LEAF_RANGE,
    LEAF_SEQUENCE,
    LEDGER_KEYS,
    LOG_LOCK_KEY,
    LOG_ORIGIN,
    LOG_TOP,
    NODE_RANGE,
    log_size,
    nodes_among,
    placeholders,
    records_after,
    stored_checkpoints,
)

TABLES = (
    "coi_leaves",
    "coi_nodes",
    "coi_checkpoints",
    "coi_relay",
    "coi_origin",
    "coi_ledger_keys",
    "coi_witnessed",
)


class RelayPosition(NamedTuple):
    """The next leaf to publish, and where the last published one landed in Kafka (partition,
    offset, its sequence): finding it there later proves the broker still has the log."""

    next_leaf: int
    probe_partition: int
    probe_offset: int
    probe_sequence: int


class LockTimeoutError(Exception):
    """Another integrator held the log's lock for longer than this one would wait."""


class LogStore:
    def __init__(self, recorder: ApplicationRecorder) -> None:
        # datastore and events_table_name: the SQL recorders' own, not the base class's
        self.datastore: Any = recorder.datastore  # type: ignore[attr-defined]
        self.postgres = isinstance(recorder, PostgresApplicationRecorder)
        events: str = recorder.events_table_name  # type: ignore[attr-defined]
        table = f'"{self.datastore.schema}"."{events}"' if self.postgres else events
        self.select_records = records_after(table, self.postgres)

    def _tx(self, commit: bool) -> AbstractContextManager[Any]:
        return cast(AbstractContextManager[Any], self.datastore.transaction(commit=commit))

    def sql(self, text: str) -> str:
        """`text` with the engine's placeholders (written with `?`)."""
        return placeholders(text, self.postgres)

    @staticmethod
    def _plain(c: Any, postgres: bool) -> Any:
        """`c` with rows as plain tuples: sqlite3.Row (or a dict per row) costs more than
        reading the row."""
        if postgres:
            c.row_factory = tuple_row
        else:
            c.sqlite_cursor.row_factory = None  # the sqlite3.Cursor in eventsourcing's wrapper
        return c

    @contextmanager
    def reading(self) -> Iterator[Any]:
        """A read transaction whose rows are plain tuples."""
        with self._tx(commit=False) as c:
            yield self._plain(c, self.postgres)

    @contextmanager
    def integrating(self, waiting: Callable[[], None]) -> Iterator[Any]:
        """A write transaction holding the log's lock, rows as plain tuples. When another
        integrator holds it, `waiting()` is called and this one waits for it (on SQLite, whose
        lock is its one writer, for the store's lock timeout: LockTimeoutError after)."""
        if self.postgres:
            with self._tx(commit=True) as c:
                c.execute("SELECT pg_try_advisory_xact_lock(%s) AS got", (LOG_LOCK_KEY,))
                if not c.fetchone()["got"]:
                    waiting()
                    c.execute("SELECT pg_advisory_xact_lock(%s)", (LOG_LOCK_KEY,))
                yield self._plain(c, True)
            return
        wait_seconds = self.datastore.pool.lock_timeout or SQLITE3_DEFAULT_LOCK_TIMEOUT
        with self.datastore.get_connection(commit=True) as conn:
            db: sqlite3.Connection = conn._sqlite_conn  # BEGIN IMMEDIATE needs the sqlite3 connection
            try:
                db.execute("PRAGMA busy_timeout = 0")
                try:
                    db.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError:
                    waiting()
                    db.execute(f"PRAGMA busy_timeout = {int(wait_seconds * 1000)}")
                    try:
                        db.execute("BEGIN IMMEDIATE")
                    except sqlite3.OperationalError as exc:
                        raise LockTimeoutError(
                            f"another writer held the ledger for over {wait_seconds:.0f} s ({exc})"
                        ) from None
            finally:
                db.execute(f"PRAGMA busy_timeout = {int(wait_seconds * 1000)}")
            try:
                yield self._plain(conn.cursor(), False)
            except BaseException:
                db.rollback()
                raise
            db.commit()

    def _rows(self, query: str, params: Sequence[object] = (), c: Any = None) -> list[Any]:
        """Rows as tuples, in `c` (a transaction of `reading` or `integrating`) or a read
        transaction of their own."""
        if c is None:
            with self.reading() as mine:
                return self._rows(query, params, mine)
        c.execute(self.sql(query), params)
        return list(c.fetchall())

    def records(self, after: int, limit: int, c: Any = None) -> list[tuple[int, Any, int, bytes]]:
        """Up to `limit` stored events after global sequence `after`, in order: (sequence,
        originator id, version, state). Straight from the events table: eventsourcing's
        select_notifications makes a UUID and a Notification per row, which cost more than
        the query."""
        if c is None:
            with self.reading() as mine:
                return self.records(after, limit, mine)
        c.execute(self.select_records, (after, limit))
        return list(c.fetchall())

    # --------------------------------------------------------------- leaves

    def size(self, c: Any = None) -> int:
        (top,) = self._rows(LOG_TOP, (), c)[0]
        return log_size(top)

    def last_sequence(self, c: Any = None) -> int:
        (top,) = self._rows("SELECT MAX(sequence) FROM coi_leaves", (), c)[0]
        return int(top or 0)

    def append(self, leaves: list[tuple[int, int]], nodes: list[tuple[int, int, bytes]], c: Any) -> None:
        """Leaves (index, sequence) and the perfect nodes they complete, in `c` (integrating)."""
        c.executemany(self.sql("INSERT INTO coi_leaves VALUES (?, ?)"), leaves)
        c.executemany(self.sql("INSERT INTO coi_nodes VALUES (?, ?, ?)"), nodes)

    def leaf_index(self, sequence: int) -> int | None:
        rows = self._rows("SELECT leaf_index FROM coi_leaves WHERE sequence = ?", (sequence,))
        return int(rows[0][0]) if rows else None

    def sequence(self, leaf_index: int) -> int | None:
        rows = self._rows(LEAF_SEQUENCE, (leaf_index,))
        return int(rows[0][0]) if rows else None

    def leaves(self, start: int, stop: int) -> list[tuple[int, int]]:
        """(leaf index, sequence) for leaf indexes in [start, stop), in order."""
        rows = self._rows(LEAF_RANGE, (start, stop))
        return [(int(i), int(s)) for i, s in rows]

    # ---------------------------------------------------------------- nodes

    def nodes(self, keys: list[tuple[int, int]], c: Any = None) -> dict[tuple[int, int], bytes]:
        """The stored nodes among `keys` (level, index), in one query."""
        if not keys:
            return {}
        rows = self._rows(nodes_among(len(keys)), [x for k in keys for x in k], c)
        return {(int(level), int(idx)): bytes(h) for level, idx, h in rows}

    def node_range(self, level: int, first: int, last: int) -> dict[int, bytes]:
        rows = self._rows(NODE_RANGE, (level, first, last))
        return {int(i): bytes(h) for i, h in rows}

    # ----------------------------------------------------------- checkpoints

    def add_checkpoint(self, checkpoint: StoredCheckpoint, c: Any) -> None:
        """In `c` (integrating)."""
        c.execute(
            self.sql("INSERT INTO coi_checkpoints VALUES (?, ?, ?, ?)"),
            (checkpoint.size, checkpoint.root, checkpoint.note, checkpoint.signed_at),
        )

    def checkpoints(self, after: int = -1) -> list[StoredCheckpoint]:
        """The checkpoints of trees larger than `after`, smallest first. (The relay asks every
        step for the new ones: one a thousand records adds up over a ledger's life.)"""
        return self._checkpoints("WHERE tree_size > ? ORDER BY tree_size", after)

    def latest_checkpoint(self, c: Any = None) -> StoredCheckpoint | None:
        found = self._checkpoints("ORDER BY tree_size DESC LIMIT 1", c=c)
        return found[0] if found else None

    def checkpoint(self, size: int) -> StoredCheckpoint | None:
        found = self._checkpoints("WHERE tree_size = ?", size)
        return found[0] if found else None

    def _checkpoints(self, clause: str, *params: object, c: Any = None) -> list[StoredCheckpoint]:
        return stored_checkpoints(self._rows(f"{CHECKPOINTS} {clause}", params, c))

    def set_witnessed(self, size: int, note: str, cosigned_at: str) -> None:
        """The checkpoint of `size` with its cosignatures (the latest set of them kept)."""
        with self._tx(commit=True) as c:
            c.execute(self.sql("DELETE FROM coi_witnessed WHERE tree_size = ?"), (size,))
            c.execute(self.sql("INSERT INTO coi_witnessed VALUES (?, ?, ?)"), (size, note, cosigned_at))

    def witnessed(self, size: int) -> str | None:
        """The cosigned note of the checkpoint of `size`, if witnesses cosigned it."""
        rows = self._rows(self.sql("SELECT note FROM coi_witnessed WHERE tree_size = ?"), (size,))
        return str(rows[0][0]) if rows else None

    # --------------------------------------------------------------- identity

    def origin(self) -> str | None:
        rows = self._rows(LOG_ORIGIN)
        return str(rows[0][0]) if rows else None

    def claim_origin(self, proposed: str) -> str:
        """The log's origin: `proposed` when it has none yet, else the one it has (two
        writers creating one ledger together agree on the first)."""
        with self._tx(commit=True) as tx:
            c = self._plain(tx, self.postgres)
            c.execute(self.sql("INSERT INTO coi_origin VALUES (1, ?) ON CONFLICT DO NOTHING"), (proposed,))
            c.execute(LOG_ORIGIN)
            return str(c.fetchone()[0])

    def ledger_keys(self) -> list[str]:
        return [str(v) for (v,) in self._rows(LEDGER_KEYS)]

    def add_ledger_keys(self, vkeys: list[str]) -> None:
        """Publish the verifier keys that sign (or signed) the log's checkpoints."""
        with self._tx(commit=True) as c:
            c.executemany(
                self.sql("INSERT INTO coi_ledger_keys VALUES (?, ?) ON CONFLICT DO NOTHING"),
                [(v, datetime.now(UTC).isoformat()) for v in vkeys],
            )

    # ---------------------------------------------------------------- relay

    def relay_position(self, name: str) -> RelayPosition:
        rows = self._rows(
            "SELECT next_leaf, probe_partition, probe_offset, probe_sequence FROM coi_relay WHERE name = ?",
            (name,),
        )
        if not rows:
            return RelayPosition(0, -1, -1, -1)
        return RelayPosition(*(int(v) for v in rows[0]))

    def set_relay_position(self, name: str, position: RelayPosition) -> None:
        with self._tx(commit=True) as c:
            c.execute(self.sql("DELETE FROM coi_relay WHERE name = ?"), (name,))
            c.execute(self.sql("INSERT INTO coi_relay VALUES (?, ?, ?, ?, ?)"), (name, *position))
