"""The ledger's recorders: eventsourcing's, plus one claims table written in the same
transaction as the events.

A claim makes a value globally unique (an event id, a DIN, a cartridge) and remembers who
owns it and, for event ids, the digest of the envelope that claimed it. It is an index, not
a record: every claim can be re-derived from the stored envelopes, so the event store stays
the one log of records and its notification ids number only records. The claims table is
made by the migrations (ledger/store/migrations.py), not here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteDatastore
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from ledger.store.migrations import CLAIMS_TABLE, SCHEMA_TABLE

__all__ = ["CLAIMS_TABLE", "SCHEMA_TABLE", "ClaimRow", "PostgresLedgerRecorder", "SQLiteLedgerRecorder"]

_SQLITE_INSERT = f"INSERT INTO {CLAIMS_TABLE} VALUES (?, ?, ?, ?)"  # noqa: S608 - constant table name
_SQLITE_SELECT = f"SELECT value, owner, digest FROM {CLAIMS_TABLE} WHERE kind = ? AND value IN "  # noqa: S608

# (kind, value, owner, digest)
ClaimRow = tuple[str, str, str, str]

# The WAL is copied into the database every 10,000 pages (40 MiB) instead of SQLite's 1,000:
# with batches of 500 envelopes one commit in five paid for that copy and its extra fsync
# (measured: 500-row commits 13.6 -> 6.0 ms p50, a third less commit time in all).
_SQLITE_WAL_PAGES = "PRAGMA wal_autocheckpoint = 10000"


def _by_kind(keys: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for kind, value in keys:
        grouped.setdefault(kind, []).append(value)
    return grouped


class SQLiteLedgerRecorder(SQLiteApplicationRecorder):
    def __init__(self, datastore: SQLiteDatastore, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name)

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids = super()._insert_events(c, stored_events, **kwargs)
        claims: Sequence[ClaimRow] = kwargs.get("claims", ())
        if claims:
            c.executemany(_SQLITE_INSERT, claims)
        c.execute(_SQLITE_WAL_PAGES)  # per connection; whichever connection writes commits with it
        return ids

    def claims(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, str]]:
        """(kind, value) -> (owner, digest) for those of `keys` that are claimed."""
        if not keys:
            return {}
        found = {}
        with self.datastore.transaction(commit=False) as c:
            # One indexed lookup per kind: SQLite plans `(kind, value) IN (VALUES ...)` as a scan.
            for kind, values in _by_kind(keys).items():
                c.execute(f"{_SQLITE_SELECT}({', '.join('?' * len(values))})", (kind, *values))
                found.update({(kind, row[0]): (row[1], row[2]) for row in c.fetchall()})
        return found


class PostgresLedgerRecorder(PostgresApplicationRecorder):
    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        table = Identifier(self.datastore.schema, CLAIMS_TABLE)
        self._insert_claims = SQL("INSERT INTO {} VALUES (%s, %s, %s, %s)").format(table)
        self._select_claims = SQL(
            "SELECT kind, value, owner, digest FROM {} "
            "WHERE (kind, value) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
        ).format(table)

    def _insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        # eventsourcing runs this hook inside the transaction that inserts the events.
        claims: Sequence[ClaimRow] = kwargs.get("claims", ())
        if claims:
            curs.executemany(self._insert_claims, claims)

    def claims(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, str]]:
        if not keys:
            return {}
        kinds, values = [k for k, _ in keys], [v for _, v in keys]
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._select_claims, (kinds, values), prepare=True)
            return {(row["kind"], row["value"]): (row["owner"], row["digest"]) for row in curs.fetchall()}
