"""The custody read models in SQLite or PostgreSQL, with the Kafka positions they reflect.

`apply` writes a batch of records and the consumer's next offsets in one transaction, so a
projector that crashes resumes exactly after its last committed batch: nothing is skipped,
and whatever Kafka delivers again is a no-op (a timeline row is keyed by sequence and unit;
a current-custody row is replaced only by a record with a newer sequence). A record that
cannot be projected (unreadable, or a value the database refuses) is set aside with a log
line and the others are applied: no record the ledger holds may stop the projector or a
rebuild.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import msgspec
import psycopg

from ledger.app.config import persistence_env
from ledger.store.migrations import Migration, ddl, migrate
from ledger.store.sql import writing
from ledger.wire.rejection import Rejected
from projections.custody import CurrentCustody, ProjectionError, Record, TimelineRow, project

log = logging.getLogger("coi.projections")

# What one record can cause: its bytes or body unreadable, a value the database refuses (a
# NUL in PostgreSQL text). A lost connection is none of these and stops the batch.
_UNPROJECTABLE = (
    msgspec.MsgspecError, ValueError, TypeError, KeyError, AttributeError, Rejected, ProjectionError,
    psycopg.DataError, psycopg.IntegrityError, sqlite3.DataError, sqlite3.IntegrityError,
)  # fmt: skip

READ_MODELS = ("proj_custody_timeline", "proj_custody_current")
TABLES = (*READ_MODELS, "proj_projector_tracking")

_TIMES = frozenset({"occurred_at", "recorded_at", "since"})

# Columns in the order of the Structs' fields, which is how rows are read back.
_DDL = (
    """CREATE TABLE IF NOT EXISTS proj_custody_timeline (
        sequence {int} NOT NULL, position INTEGER NOT NULL, unit_id TEXT NOT NULL, coi TEXT NOT NULL,
        event_type TEXT NOT NULL, custodian TEXT NOT NULL, site TEXT NOT NULL,
        occurred_at {time} NOT NULL, recorded_at {time} NOT NULL, actor TEXT NOT NULL,
        from_custodian TEXT, to_custodian TEXT, location TEXT, batch_id TEXT, shipment_id TEXT,
        parents TEXT NOT NULL, PRIMARY KEY (sequence, unit_id))""",
    """CREATE TABLE IF NOT EXISTS proj_custody_current (
        coi TEXT NOT NULL, unit_id TEXT NOT NULL, kind TEXT NOT NULL, custodian TEXT NOT NULL,
        site TEXT NOT NULL, status TEXT NOT NULL, since {time} NOT NULL, sequence {int} NOT NULL,
        location TEXT, batch_id TEXT, shipment_id TEXT, PRIMARY KEY (coi, unit_id))""",
    """CREATE TABLE IF NOT EXISTS proj_projector_tracking (
        consumer TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,
        next_offset {int} NOT NULL, PRIMARY KEY (consumer, topic, partition))""",
    # One unit's timeline; the batch and shipment lookups below stay within one COI too.
    "CREATE INDEX IF NOT EXISTS proj_custody_timeline_unit ON proj_custody_timeline (coi, unit_id, sequence)",
)
# Recorded in coi_schema of the projections' database (which may be the ledger's).
MIGRATIONS = (Migration("custody-projection-tables", ddl(*_DDL)),)

_INSERT_TIMELINE = """INSERT INTO proj_custody_timeline
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sequence, unit_id) DO NOTHING"""
_SELECT_TIMELINE = """SELECT sequence, position, unit_id, coi, event_type, custodian, site, occurred_at,
    recorded_at, actor, from_custodian, to_custodian, location, batch_id, shipment_id, parents
    FROM proj_custody_timeline ORDER BY sequence, position, unit_id"""
_UPSERT_CURRENT = """INSERT INTO proj_custody_current VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (coi, unit_id) DO UPDATE SET kind = excluded.kind, custodian = excluded.custodian,
    site = excluded.site, status = excluded.status, since = excluded.since, sequence = excluded.sequence,
    location = excluded.location, batch_id = excluded.batch_id, shipment_id = excluded.shipment_id
    WHERE proj_custody_current.sequence < excluded.sequence"""
_SELECT_CURRENT = """SELECT c.coi, c.unit_id, c.kind, c.custodian, c.site, c.status, c.since, c.sequence,
    c.location, c.batch_id, c.shipment_id FROM proj_custody_current c"""
_UNIT = _SELECT_CURRENT + " WHERE c.coi = ? AND c.unit_id = ?"
# The members of a batch or shipment, in the order the record that formed it listed them.
_MEMBERS = (
    _SELECT_CURRENT + " JOIN proj_custody_timeline t ON t.coi = c.coi AND t.unit_id = c.unit_id"
    " WHERE t.coi = ? AND t.event_type = ? AND t.{} = ? ORDER BY t.sequence, t.position"
)
_BATCH_INPUTS = _MEMBERS.format("batch_id")
_SHIPMENT_UNITS = _MEMBERS.format("shipment_id")
_UPSERT_POSITION = """INSERT INTO proj_projector_tracking VALUES (?, ?, ?, ?)
    ON CONFLICT (consumer, topic, partition) DO UPDATE SET next_offset = excluded.next_offset"""
_POSITIONS = "SELECT partition, next_offset FROM proj_projector_tracking WHERE consumer = ? AND topic = ?"

S = TypeVar("S", bound=msgspec.Struct)


class Snapshot(msgspec.Struct, frozen=True):
    timeline: list[TimelineRow]  # by sequence, then the unit's place in its record
    current: list[CurrentCustody]  # by coi, then unit_id


class ProjectionStore:
    """The read models at a `sqlite:///path` or `postgresql://...` URL (tables prefixed proj_,
    so they can share the ledger's database)."""

    def __init__(self, url: str) -> None:
        self.postgres = urlsplit(url).scheme in ("postgres", "postgresql")
        self._conn: Any
        if self.postgres:
            persistence_env(url)  # the same checks, and messages, as the ledger's own URL
            # Times come back in UTC, as they went in.
            self._conn = psycopg.connect(url, autocommit=True, options="-c TimeZone=UTC")
        else:
            # Autocommit, so that _transaction alone decides where a transaction begins and ends.
            path = persistence_env(url)["SQLITE_DBNAME"]
            self._conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
        self.migrations = migrate(self._conn, self.postgres, MIGRATIONS)  # a writer: migrates on start

    def close(self) -> None:
        self._conn.close()

    def apply(
        self,
        records: Iterable[Record],
        positions: Mapping[int, int] | None = None,
        *,
        consumer: str = "",
        topic: str = "",
    ) -> list[tuple[int, str]]:
        """Project the records in order and store `positions` (partition -> next offset: every
        message before it is applied) as the consumer's in the topic, all in one transaction.
        A record that cannot be projected is set aside (logged) and the others are applied;
        returns the (sequence, reason) of each record set aside."""
        if positions and not (consumer and topic):
            raise ValueError("positions belong to a consumer and a topic: name both")
        batch = list(records)  # an input that fails while being read fails the whole batch
        try:
            return self._apply(batch, positions or {}, consumer, topic, careful=False)
        except _UNPROJECTABLE:
            # Again, each record in a savepoint of its own: no cost unless a batch fails.
            return self._apply(batch, positions or {}, consumer, topic, careful=True)

    def _apply(
        self, batch: list[Record], positions: Mapping[int, int], consumer: str, topic: str, careful: bool
    ) -> list[tuple[int, str]]:
        aside: list[tuple[int, str]] = []
        with self._transaction() as cur:
            for partition, offset in positions.items():
                cur.execute(self._sql(_UPSERT_POSITION), (consumer, topic, partition, offset))
            reader = _Reader(cur, self.postgres)
            for record in batch:
                if not careful:
                    self._project(cur, reader, record)
                    continue
                try:
                    with self._savepoint(cur):
                        self._project(cur, reader, record)
                except _UNPROJECTABLE as exc:
                    log.error(
                        "projections: sequence %s set aside, it cannot be projected (%s: %s); "
                        "the projection goes on without its rows",
                        record[0], type(exc).__name__, exc,
                    )  # fmt: skip
                    aside.append((record[0], str(exc)))
        return aside

    def _project(self, cur: Any, reader: _Reader, record: Record) -> None:
        changes = project(record, reader)
        if changes.timeline:
            cur.executemany(self._sql(_INSERT_TIMELINE), [self._values(r) for r in changes.timeline])
            cur.executemany(self._sql(_UPSERT_CURRENT), [self._values(r) for r in changes.current])

    def positions(self, consumer: str, topic: str) -> dict[int, int]:
        """partition -> next offset, for the partitions the consumer has applied anything from."""
        rows = self._conn.execute(self._sql(_POSITIONS), (consumer, topic)).fetchall()
        return {int(partition): int(offset) for partition, offset in rows}

    def reset(self) -> None:
        """Empty both read models (drop and recreate them). The positions stay: a rebuild
        from the ledger covers every record consumed before it, so the projector resumes
        where it stopped instead of wherever Kafka's offset reset would put it."""
        with self._transaction() as cur:
            for table in READ_MODELS:
                cur.execute(f"DROP TABLE IF EXISTS {table}")
            ddl(*_DDL)(cur, self.postgres)  # the tables as the migrations left them

    def snapshot(self) -> Snapshot:
        timeline = self._conn.execute(_SELECT_TIMELINE).fetchall()
        current = self._conn.execute(_SELECT_CURRENT + " ORDER BY c.coi, c.unit_id").fetchall()
        return Snapshot(
            [_decode(TimelineRow, row) for row in timeline], [_decode(CurrentCustody, row) for row in current]
        )

    # ------------------------------------------------------------------ internals

    def _transaction(self) -> AbstractContextManager[Any]:
        # IMMEDIATE on SQLite: take the write lock now, so the reads within see what the writes
        # will build on.
        return writing(self._conn, self.postgres)

    @contextmanager
    def _savepoint(self, cur: Any) -> Iterator[None]:
        """Within the open transaction: undo only what happens inside, if it fails."""
        if self.postgres:
            with self._conn.transaction():  # nested: a savepoint
                yield
            return
        cur.execute("SAVEPOINT record")
        try:
            yield
        except BaseException:
            cur.execute("ROLLBACK TO record")
            raise
        finally:
            cur.execute("RELEASE record")

    def _sql(self, sql: str) -> str:
        return _placeholders(sql, self.postgres)

    def _values(self, row: msgspec.Struct) -> list[object]:
        values: list[object] = []
        for name in row.__struct_fields__:
            value = getattr(row, name)
            if name == "parents":
                value = msgspec.json.encode(value).decode()
            elif name in _TIMES and not self.postgres:
                value = value.isoformat()
            values.append(value)
        return values


class _Reader:
    """Current custody as the open transaction sees it, records earlier in the batch included."""

    def __init__(self, cur: Any, postgres: bool) -> None:
        self.cur = cur
        self.postgres = postgres

    def unit(self, coi: str, unit_id: str) -> CurrentCustody | None:
        rows = self._rows(_UNIT, coi, unit_id)
        return rows[0] if rows else None

    def batch_inputs(self, coi: str, batch_id: str) -> list[CurrentCustody]:
        return self._rows(_BATCH_INPUTS, coi, "manufacturing_started", batch_id)

    def shipment_units(self, coi: str, shipment_id: str) -> list[CurrentCustody]:
        return self._rows(_SHIPMENT_UNITS, coi, "shipment_dispatched", shipment_id)

    def _rows(self, sql: str, *params: object) -> list[CurrentCustody]:
        self.cur.execute(_placeholders(sql, self.postgres), params)
        return [_decode(CurrentCustody, row) for row in self.cur.fetchall()]


def _placeholders(sql: str, postgres: bool) -> str:
    return sql.replace("?", "%s") if postgres else sql


def _decode(kind: type[S], row: tuple[Any, ...]) -> S:
    """A row of `kind`'s table, its columns in the Struct's field order."""
    fields = dict(zip(kind.__struct_fields__, row, strict=True))
    if "parents" in fields:
        fields["parents"] = msgspec.json.decode(fields["parents"])
    return msgspec.convert(fields, kind, strict=False)  # strict=False: SQLite keeps times as text
