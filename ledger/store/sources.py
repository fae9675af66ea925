"""Read-only record sources over a ledger's tables (ledger/audit/source.py): what `coi verify`
reads. They never create, alter or write anything: SQLite is opened `mode=ro`, PostgreSQL
in read-only transactions, so a SELECT-only role or a read-only copy of the file is enough."""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from ledger.audit.source import Chunk, SchemaError, StoredCheckpoint
from ledger.store.sql import (
    CHECKPOINTS,
    DEFAULT_ORIGIN,
    LEAF_RANGE,
    LEAF_SEQUENCE,
    LEDGER_KEYS,
    LOG_ORIGIN,
    LOG_TOP,
    NODE_RANGE,
    POSTGRES_EVENTS,
    SQLITE_EVENTS,
    WITNESSED,
    is_postgres,
    log_size,
    nodes_among,
    note_origin,
    placeholders,
    reading,
    records_after,
    sqlite_path,
    stored_checkpoints,
)
from ledger.transparency.records import Record, row_record

LOG_TABLES = ("coi_leaves", "coi_nodes", "coi_checkpoints")

Row = tuple[int, Any, int, bytes]  # sequence, originator id, version, state


class SqlSource:
    """The records of a ledger in SQLite or PostgreSQL, read and never written."""

    def __init__(self, conn: Any, postgres: bool, tables: set[str]) -> None:
        self.conn = conn
        self.postgres = postgres
        self.tables = tables
        events = POSTGRES_EVENTS if postgres else SQLITE_EVENTS
        missing = [t for t in (events, *LOG_TABLES) if t not in tables]
        if events in missing:
            raise SchemaError(
                "no ledger in this database (no events table): run coi init, or check COI_DATABASE_URL"
            )
        if missing:
            raise SchemaError(
                f"the ledger is older than this coi reads (no {', '.join(missing)}): run coi migrate"
            )
        self._records = records_after(events, postgres)
        self._leaves, self._nodes, self._leaf = (
            self._sql(q) for q in (LEAF_RANGE, NODE_RANGE, LEAF_SEQUENCE)
        )

    def _sql(self, text: str) -> str:
        return placeholders(text, self.postgres)

    def close(self) -> None:
        self.conn.close()

    def _reading(self) -> AbstractContextManager[Any]:
        return reading(self.conn, self.postgres)

    def checkpoints(self) -> list[StoredCheckpoint]:
        with self._reading() as c:
            c.execute(CHECKPOINTS + " ORDER BY tree_size")
            return stored_checkpoints(c.fetchall())

    def origin(self) -> str:
        """The log's name: as stored with it, else (a ledger older than that, not migrated)
        the origin of its latest checkpoint, else the old default."""
        with self._reading() as c:
            if "coi_origin" in self.tables:
                c.execute(LOG_ORIGIN)
                row = c.fetchone()
                if row is not None:
                    return str(row[0])
            c.execute(CHECKPOINTS + " ORDER BY tree_size DESC LIMIT 1")
            latest = c.fetchone()
        return note_origin(str(latest[2])) if latest is not None else DEFAULT_ORIGIN

    def ledger_keys(self) -> list[str]:
        """The verifier keys the ledger says it signed with: candidates to learn, never roots."""
        if "coi_ledger_keys" not in self.tables:
            return []
        with self._reading() as c:
            c.execute(LEDGER_KEYS)
            return [str(v) for (v,) in c.fetchall()]

    def witnessed(self) -> list[str]:
        """The cosigned checkpoint notes, smallest tree first."""
        if "coi_witnessed" not in self.tables:  # a ledger from before witnesses, not migrated
            return []
        with self._reading() as c:
            c.execute(WITNESSED)
            return [str(note) for (note,) in c.fetchall()]

    def chunk(self, after: int, start: int, limit: int) -> Chunk:
        with self._reading() as c:
            c.execute(self._records, (after, limit))
            rows = c.fetchall()
            stop = start + len(rows)
            c.execute(self._leaves, (start, stop))
            leaves = dict(c.fetchall())
            nodes = []
            for level in range(stop.bit_length()):
                c.execute(self._nodes, (level, start >> level, (stop >> level) - 1))
                nodes.append(dict(c.fetchall()))
        return Chunk(rows, leaves, nodes)

    @staticmethod
    def sequence(row: Row) -> int:
        return row[0]

    @staticmethod
    def record(row: Row) -> Record:
        return row_record(row)

    def size(self) -> int:
        with self._reading() as c:
            c.execute(LOG_TOP)
            (top,) = c.fetchone()
        return log_size(top)

    def nodes(self, keys: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """The stored nodes among `keys` (level, index): a merkle.Nodes, for proofs."""
        if not keys:
            return {}
        with self._reading() as c:
            c.execute(self._sql(nodes_among(len(keys))), [x for k in keys for x in k])
            return {(int(level), int(idx)): bytes(h) for level, idx, h in c.fetchall()}

    def leaf_sequence(self, leaf_index: int) -> int | None:
        with self._reading() as c:
            c.execute(self._leaf, (leaf_index,))
            row = c.fetchone()
        return None if row is None else int(row[0])


def open_source(url: str) -> SqlSource:
    """The read-only source at a ledger's database URL; SchemaError when there is no ledger
    there (or one too old), OSError-like driver errors when it cannot be reached."""
    if is_postgres(url):
        return _postgres(url)
    if urlsplit(url).scheme != "sqlite":
        raise SchemaError(f"COI_DATABASE_URL {url!r}: the scheme must be sqlite or postgresql")
    return _sqlite(sqlite_path(url))


def _postgres(url: str) -> SqlSource:
    import psycopg  # here: an SQLite ledger's readers (coi verify, coi export) need no driver

    conn = psycopg.connect(url, options="-c default_transaction_read_only=on -c TimeZone=UTC")
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    with conn.transaction():
        found = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
    return SqlSource(conn, True, {name for (name,) in found})


def _sqlite(path: str) -> SqlSource:
    file = Path(path)
    if not file.is_file():
        raise SchemaError(f"no ledger at {path}: run coi init, or check COI_DATABASE_URL")
    uri = f"file:{quote(str(file.resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    try:
        tables = _sqlite_tables(conn)
    except sqlite3.OperationalError:
        # A WAL database opened read-only needs its -shm file, which a reader who may not write
        # the folder cannot create. With no WAL content left (checkpointed), the file alone is
        # the whole database: read it as immutable.
        conn.close()
        wal = Path(f"{file}-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise SchemaError(
                f"{path} is in WAL mode with pages not yet checkpointed, and this user cannot open it "
                "read-only: checkpoint it first (PRAGMA wal_checkpoint(TRUNCATE)), or let this user "
                "write its folder"
            ) from None
        conn = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None, check_same_thread=False)
        tables = _sqlite_tables(conn)
    return SqlSource(conn, False, tables)


def _sqlite_tables(conn: sqlite3.Connection) -> set[str]:
    return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
