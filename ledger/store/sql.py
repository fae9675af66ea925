"""The small SQL layer the ledger's own tables share (claims, Merkle log, projections):
database URLs, the two engines' differences, and the integration lock."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

from ledger.audit.source import StoredCheckpoint

POSTGRES_SCHEMES = ("postgres", "postgresql")
# pg_advisory_xact_lock's key for "integrating the Merkle log" (any fixed 64-bit number
# the ledger's database uses for nothing else): b"coi-log!" as an integer.
LOG_LOCK_KEY = int.from_bytes(b"coi-log!", "big", signed=True)
MIGRATION_LOCK_KEY = int.from_bytes(b"coi-mig!", "big", signed=True)
# The events tables eventsourcing names for the ledger application (LedgerApplication.name).
SQLITE_EVENTS = "stored_events"
POSTGRES_EVENTS = "coiledger_events"


def is_postgres(url: str) -> bool:
    return urlsplit(url).scheme in POSTGRES_SCHEMES


def sqlite_path(url: str) -> str:
    """The file of a `sqlite:///PATH` URL ("" when it names none)."""
    parts = urlsplit(url)
    return unquote(parts.path.removeprefix("/")) if parts.netloc == "" else parts.netloc + parts.path


def write_ahead(path: str, seconds: float = 10.0) -> None:
    """Put an SQLite file in WAL mode before eventsourcing opens it. eventsourcing asks for
    WAL on each connection it makes, and switching a new file takes an exclusive lock that
    SQLite does not wait for, busy timeout or not: two writers starting together on a new
    file would see "database is locked". Once switched, the mode stays and asking is free."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with closing(sqlite3.connect(path, timeout=seconds)) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


# Reading the log: what the integrator (logstore.py) and the read-only sources (sources.py)
# both ask, written with `?` (see `placeholders`).
LEAF_RANGE = (
    "SELECT leaf_index, sequence FROM coi_leaves WHERE leaf_index >= ? AND leaf_index < ? ORDER BY leaf_index"
)
LEAF_SEQUENCE = "SELECT sequence FROM coi_leaves WHERE leaf_index = ?"
LOG_TOP = "SELECT MAX(leaf_index) FROM coi_leaves"
NODE_RANGE = "SELECT idx, hash FROM coi_nodes WHERE level = ? AND idx >= ? AND idx <= ?"
CHECKPOINTS = "SELECT tree_size, root, note, signed_at FROM coi_checkpoints"
# The log's name (its checkpoints' origin line) and every key it signed with (verifier keys:
# what a verifier may learn from, never what it trusts: see ledger/audit/roots.py).
LOG_ORIGIN = "SELECT origin FROM coi_origin"
LEDGER_KEYS = "SELECT vkey FROM coi_ledger_keys ORDER BY added_at, vkey"
# The origin of ledgers made before each had its own (and of their checkpoints).
DEFAULT_ORIGIN = "coi-ledger.local/log"


def note_origin(note: str) -> str:
    """A checkpoint note's origin: its first line."""
    return note.split("\n", 1)[0]


def nodes_among(count: int) -> str:
    """The stored nodes among `count` (level, index) pairs, in one query: OR'ed equalities,
    which both engines answer each from the primary key index."""
    where = " OR ".join(["(level = ? AND idx = ?)"] * count)
    return "SELECT level, idx, hash FROM coi_nodes WHERE " + where  # noqa: S608 - placeholders only


WITNESSED = "SELECT note FROM coi_witnessed ORDER BY tree_size"


def records_after(table: str, postgres: bool) -> str:
    """Up to N stored events after a global sequence, in order: (sequence, originator id,
    version, state), straight from eventsourcing's events table `table`."""
    sequence = "notification_id" if postgres else "rowid"
    return placeholders(
        f"SELECT {sequence}, originator_id, originator_version, state FROM {table} "  # noqa: S608 - our names
        f"WHERE {sequence} > ? ORDER BY {sequence} LIMIT ?",
        postgres,
    )


def records_where(table: str, postgres: bool, condition: str) -> str:
    """The stored events matching `condition` (over `sequence`, `originator_id`, `topic`, with
    `?` placeholders), in order, as `records_after` gives them."""
    sequence = "notification_id" if postgres else "rowid"
    return placeholders(
        f"SELECT {sequence}, originator_id, originator_version, state FROM {table} "  # noqa: S608 - our names
        f"WHERE {condition.replace('sequence', sequence)} ORDER BY {sequence}",
        postgres,
    )


def log_size(top: Any) -> int:
    """The log's size from LOG_TOP's answer (NULL: empty)."""
    return 0 if top is None else int(top) + 1


def stored_checkpoints(rows: list[Any]) -> list[StoredCheckpoint]:
    """CHECKPOINTS' rows as checkpoints."""
    return [StoredCheckpoint(int(s), bytes(r), str(n), str(t)) for s, r, n, t in rows]


def placeholders(text: str, postgres: bool) -> str:
    """`text` (written with `?`) with the engine's placeholders."""
    return text.replace("?", "%s") if postgres else text


@contextmanager
def reading(conn: Any, postgres: bool) -> Iterator[Any]:
    """One read transaction on a DB-API connection in autocommit mode (sqlite3 with
    isolation_level=None, or psycopg): every query in it sees the same state."""
    if postgres:
        with conn.transaction(), conn.cursor() as c:
            yield c
        return
    c = conn.cursor()
    c.execute("BEGIN")
    try:
        yield c
    finally:
        c.execute("ROLLBACK")


@contextmanager
def writing(conn: Any, postgres: bool, lock: int | None = None) -> Iterator[Any]:
    """One write transaction on such a connection, committed unless it raises. SQLite takes
    its write lock at once (BEGIN IMMEDIATE), so what is read within is what the writes build
    on; on PostgreSQL `lock` names an advisory lock held until the end."""
    if postgres:
        with conn.transaction(), conn.cursor() as c:
            if lock is not None:
                c.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
            yield c
        return
    c = conn.cursor()
    c.execute("BEGIN IMMEDIATE")
    try:
        yield c
    except BaseException:
        c.execute("ROLLBACK")
        raise
    c.execute("COMMIT")
