"""Ordered, named migrations of the tables the ledger owns beside the event store (claims,
Merkle log) and of the projection tables, recorded in `coi_schema` (name, applied_at) of the
database they ran on.

Writers migrate on start (`coi init`, `submit`, `demo`, the services), and `coi migrate` does
it for operators; readers never do: they read what is there or say "run coi migrate". A
migration runs once per database, inside one transaction with the others pending, holding a
lock, so two writers starting together apply each once. Append new migrations at the end;
never rename or reorder one that has shipped (a name is what a database remembers)."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg

from ledger.store.security import security_ddl
from ledger.store.snapshot import REGISTRY_RECORDS
from ledger.store.sql import (
    CHECKPOINTS,
    DEFAULT_ORIGIN,
    MIGRATION_LOCK_KEY,
    POSTGRES_EVENTS,
    SQLITE_EVENTS,
    is_postgres,
    note_origin,
    placeholders,
    sqlite_path,
    writing,
)
from ledger.transparency.records import header_of_body, payload_of

SCHEMA_TABLE = "coi_schema"
CLAIMS_TABLE = "coi_claims"
PAYLOAD_DIGESTS = "event-claims-digest-the-payload"  # the name under which it first shipped
_SCHEMA_DDL = (
    f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (name TEXT NOT NULL PRIMARY KEY, applied_at TEXT NOT NULL)"
)
# Column types by engine, for DDL written with {int}, {blob}, {time}.
_TYPES = {
    True: {"int": "BIGINT", "blob": "BYTEA", "time": "TIMESTAMPTZ"},
    False: {"int": "INTEGER", "blob": "BLOB", "time": "TEXT"},
}


@dataclass(frozen=True)
class Migration:
    name: str
    run: Callable[[Any, bool], None]  # (cursor, postgres) within the migrating transaction


def ddl(*statements: str) -> Callable[[Any, bool], None]:
    """A migration that runs `statements` (with {int}, {blob}, {time} for the engine's types)."""

    def run(c: Any, postgres: bool) -> None:
        for statement in statements:
            c.execute(statement.format(**_TYPES[postgres]))

    return run


class _Stored(msgspec.Struct):
    envelope: str


def _payload_digests(c: Any, postgres: bool) -> None:
    """An event id's claim holds the digest of the body its signatures sign, so any
    re-encoding of a stored envelope (URL-safe base64, other spacing or key order) is a
    duplicate. Stores written when it was the digest of the envelope bytes are rewritten."""
    events = POSTGRES_EVENTS if postgres else SQLITE_EVENTS
    c.execute(f"SELECT state FROM {events}")  # noqa: S608 - constant table name
    decoder = msgspec.json.Decoder(_Stored)
    rows = []
    for (state,) in c.fetchall():
        body = payload_of(decoder.decode(bytes(state)).envelope)
        rows.append((hashlib.sha256(body).hexdigest(), str(header_of_body(body).event_id)))
    update = f"UPDATE {CLAIMS_TABLE} SET digest = ? WHERE kind = 'event' AND value = ?"  # noqa: S608
    c.executemany(placeholders(update, postgres), rows)


def _log_identity(c: Any, postgres: bool) -> None:
    """The log's origin, stored with it so every command finds it, and the verifier keys it
    signs with. A ledger older than this keeps the origin its checkpoints carry (the old
    default when it has none); a new one gets its own when it is created (ledger/app/ledgerkey.py)."""
    ddl(
        "CREATE TABLE IF NOT EXISTS coi_origin (one {int} PRIMARY KEY CHECK (one = 1), origin TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS coi_ledger_keys (vkey TEXT PRIMARY KEY, added_at TEXT NOT NULL)",
    )(c, postgres)
    c.execute(f"SELECT 1 FROM {POSTGRES_EVENTS if postgres else SQLITE_EVENTS} LIMIT 1")  # noqa: S608
    if c.fetchone() is None:
        return
    c.execute(f"{CHECKPOINTS} ORDER BY tree_size DESC LIMIT 1")
    latest = c.fetchone()
    origin = note_origin(str(latest[2])) if latest is not None else DEFAULT_ORIGIN
    c.execute(placeholders("INSERT INTO coi_origin VALUES (1, ?)", postgres), (origin,))


# SQLite's events table (SQLITE_EVENTS) never numbering a record twice: see below. The
# placeholder row is ('', -1): no record has an empty originator id or a negative version.
SQLITE_SEQUENCE_TOP = (
    "CREATE TABLE IF NOT EXISTS coi_sequence_top "
    "(one INTEGER PRIMARY KEY CHECK (one = 1), top INTEGER NOT NULL)",
    "CREATE TRIGGER IF NOT EXISTS coi_sequence_deleted AFTER DELETE ON stored_events BEGIN "
    "INSERT INTO coi_sequence_top VALUES (1, OLD.rowid) "
    "ON CONFLICT (one) DO UPDATE SET top = MAX(top, excluded.top); END",
    "CREATE TRIGGER IF NOT EXISTS coi_sequence_floor BEFORE INSERT ON stored_events "
    "WHEN EXISTS (SELECT 1 FROM coi_sequence_top) BEGIN "
    "INSERT INTO stored_events (rowid, originator_id, originator_version, topic, state) "
    "SELECT top, '', -1, '', NULL FROM coi_sequence_top "
    "WHERE top > IFNULL((SELECT MAX(rowid) FROM stored_events), 0); END",
    "CREATE TRIGGER IF NOT EXISTS coi_sequence_floor_gone AFTER INSERT ON stored_events "
    "WHEN NEW.originator_version >= 0 AND EXISTS (SELECT 1 FROM coi_sequence_top) BEGIN "
    "DELETE FROM stored_events WHERE originator_id = '' AND originator_version = -1; "
    "DELETE FROM coi_sequence_top; END",
)


def _sequences_never_reused(c: Any, postgres: bool) -> None:
    """SQLite numbers a new row one past the highest rowid in the table, so after the last
    records were deleted the next ones would take their sequence numbers, and a receipt or
    checkpoint naming sequence N could name two records. A deletion records the highest
    sequence deleted (`coi_sequence_top`); the next insert, if the table's top is now below
    it, first holds that number with a placeholder row, so the record is numbered one past
    it, then removes the placeholder and the note (the record is now the top). Inserts with
    no deletion before them pay for one look at an empty table (benchmarks/README.md).
    PostgreSQL's sequence never hands out a number twice."""
    if postgres:
        return
    for statement in SQLITE_SEQUENCE_TOP:
        c.execute(statement)


def _registry_index(c: Any, postgres: bool) -> None:
    """A bundle holds every registry record: without an index, finding the few hundred among
    millions of journey records reads them all."""
    table = POSTGRES_EVENTS if postgres else SQLITE_EVENTS
    c.execute(f"CREATE INDEX IF NOT EXISTS coi_registry_records ON {table} (topic) WHERE {REGISTRY_RECORDS}")


def _registry_index_again(c: Any, postgres: bool) -> None:
    """The registry index made anew: its condition names the registry's topics."""
    c.execute("DROP INDEX IF EXISTS coi_registry_records")
    _registry_index(c, postgres)


def _security_log(c: Any, postgres: bool) -> None:
    """Refused submissions, in a table of their own (ledger/store/security.py)."""
    for statement in security_ddl(postgres):
        c.execute(statement)


# After the event store's own table, which eventsourcing creates for writers.
LEDGER = (
    Migration(
        "claims-table",
        ddl(
            f"CREATE TABLE IF NOT EXISTS {CLAIMS_TABLE} (kind TEXT NOT NULL, value TEXT NOT NULL, "
            "owner TEXT NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (kind, value))"
        ),
    ),
    Migration(PAYLOAD_DIGESTS, _payload_digests),
    Migration(
        "merkle-log-tables",
        ddl(
            "CREATE TABLE IF NOT EXISTS coi_leaves (leaf_index {int} PRIMARY KEY, "
            "sequence {int} NOT NULL UNIQUE)",
            "CREATE TABLE IF NOT EXISTS coi_nodes (level {int} NOT NULL, idx {int} NOT NULL, "
            "hash {blob} NOT NULL, PRIMARY KEY (level, idx))",
            "CREATE TABLE IF NOT EXISTS coi_checkpoints (tree_size {int} PRIMARY KEY, "
            "root {blob} NOT NULL, note TEXT NOT NULL, signed_at TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS coi_relay (name TEXT PRIMARY KEY, next_leaf {int} NOT NULL, "
            "probe_partition {int} NOT NULL, probe_offset {int} NOT NULL, probe_sequence {int} NOT NULL)",
        ),
    ),
    Migration("log-origin-and-keys", _log_identity),
    Migration("sqlite-sequences-never-reused", _sequences_never_reused),
    Migration(
        "witnessed-checkpoints-table",
        # A checkpoint's note with the witnesses' cosignatures, beside the one the ledger signed.
        ddl(
            "CREATE TABLE IF NOT EXISTS coi_witnessed (tree_size {int} PRIMARY KEY, "
            "note TEXT NOT NULL, cosigned_at TEXT NOT NULL)"
        ),
    ),
    Migration("registry-records-index", _registry_index),
    # issue 14: the site records joined the registry's (ledger/store/snapshot.py)
    Migration("registry-records-index-with-sites", _registry_index_again),
    Migration("security-log-table", _security_log),
)


def migrate(
    conn: Any, postgres: bool, migrations: Sequence[Migration], first: Callable[[], None] = lambda: None
) -> list[str]:
    """Apply the migrations not yet recorded, in order, in one transaction; returns their
    names. `conn` is a sqlite3 connection with isolation_level=None, or a psycopg one.
    `first` runs before them on a connection of its own (eventsourcing making its table): on
    PostgreSQL under the same lock, so writers starting together do not race in the catalog;
    on SQLite before taking the write lock, which it would wait for."""
    if not postgres:
        first()
    with writing(conn, postgres, MIGRATION_LOCK_KEY) as c:
        if postgres:
            first()
        c.execute(_SCHEMA_DDL)
        c.execute(f"SELECT name FROM {SCHEMA_TABLE}")  # noqa: S608 - constant table name
        done = {name for (name,) in c.fetchall()}
        applied = []
        for migration in migrations:
            if migration.name in done:
                continue
            migration.run(c, postgres)
            c.execute(
                placeholders(f"INSERT INTO {SCHEMA_TABLE} VALUES (?, ?)", postgres),  # noqa: S608
                (migration.name, datetime.now(UTC).isoformat()),
            )
            applied.append(migration.name)
    return applied


def migrate_ledger(url: str, event_store: Callable[[], None]) -> list[str]:
    """Migrate the ledger's tables at a database URL, after `event_store` made the event
    store's own table."""
    if is_postgres(url):
        with psycopg.connect(url, autocommit=True) as pg:
            return migrate(pg, True, LEDGER, event_store)
    db = sqlite3.connect(sqlite_path(url), timeout=10, isolation_level=None)
    try:
        return migrate(db, False, LEDGER, event_store)
    finally:
        db.close()
