"""The read models in SQLite or PostgreSQL (projections/tables.py), with the Kafka positions
they reflect.

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
from typing import Any
from urllib.parse import urlsplit

import msgspec
import psycopg

from aggregates.base import body_of
from ledger.app.config import persistence_env
from ledger.store.migrations import migrate
from ledger.store.sql import writing
from ledger.wire import events as ev
from ledger.wire.rejection import Rejected
from projections.audit import Patients, derive
from projections.custody import CurrentCustody, ProjectionError, Record, TimelineRow, project
from projections.tables import (
    AUDIT,
    CLOSE,
    CUSTODY_CURRENT,
    CUSTODY_TIMELINE,
    MIGRATIONS,
    READ_MODELS,
    TRACKING,
    Table,
    decode,
    placeholders,
    recreate,
    values,
)  # fmt: skip

log = logging.getLogger("coi.projections")

# What one record can cause: its bytes or body unreadable, a value the database refuses (a
# NUL in PostgreSQL text). A lost connection is none of these and stops the batch.
_UNPROJECTABLE = (
    msgspec.MsgspecError, ValueError, TypeError, KeyError, AttributeError, Rejected, ProjectionError,
    psycopg.DataError, psycopg.IntegrityError, sqlite3.DataError, sqlite3.IntegrityError,
)  # fmt: skip

# The batch inputs and shipment members, from current custody, in the order the record that
# formed them listed them.
_SELECT_CURRENT = (
    "SELECT " + ", ".join(f"c.{f}" for f in CurrentCustody.__struct_fields__) + " FROM proj_custody_current c"  # noqa: S608
)
_UNIT = _SELECT_CURRENT + " WHERE c.coi = ? AND c.unit_id = ?"
_MEMBERS = (
    _SELECT_CURRENT + " JOIN proj_custody_timeline t ON t.coi = c.coi AND t.unit_id = c.unit_id"
    " WHERE t.coi = ? AND t.event_type = ? AND t.{} = ? ORDER BY t.sequence, t.position"
)
_BATCH_INPUTS = _MEMBERS.format("batch_id")
_SHIPMENT_UNITS = _MEMBERS.format("shipment_id")
_PATIENT = "SELECT sequence, recorded_at, envelope FROM proj_records WHERE coi = ? ORDER BY sequence"
_UPSERT_POSITION = """INSERT INTO proj_projector_tracking VALUES (?, ?, ?, ?)
    ON CONFLICT (consumer, topic, partition) DO UPDATE SET next_offset = excluded.next_offset"""
_POSITIONS = "SELECT partition, next_offset FROM proj_projector_tracking WHERE consumer = ? AND topic = ?"


# The position of what was projected straight from the ledger (a rebuild, or catching up where
# no projector runs): the next sequence, as partition 0 of this pseudo-topic.
LEDGER = ("ledger", "ledger")
_KAFKA_CONSUMERS = "SELECT 1 FROM proj_projector_tracking WHERE consumer <> ? LIMIT 1"
_LAST = "SELECT MAX(sequence) FROM proj_records"
_FORGET = "DELETE FROM proj_projector_tracking WHERE consumer = ? AND topic = ?"


class Snapshot(msgspec.Struct, frozen=True):
    """Every read model's rows, each table in its own order (tests compare live and rebuilt)."""

    tables: dict[str, list[msgspec.Struct]]

    def rows(self, table: Table) -> list[Any]:
        return self.tables[table.name]

    @property
    def timeline(self) -> list[TimelineRow]:  # by sequence, then the unit's place in its record
        return self.rows(CUSTODY_TIMELINE)

    @property
    def current(self) -> list[CurrentCustody]:  # by coi, then unit_id
        return self.rows(CUSTODY_CURRENT)


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
            # Readers do not wait for the projector, and a commit waits for one flush, not
            # several: a transaction lost to a power cut is one the projector applies again,
            # with its positions, which go in the same transaction.
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
        self.migrations = migrate(self._conn, self.postgres, MIGRATIONS)  # a writer: migrates on start
        self.patients = Patients(self._patient)
        self._cur: Any = None  # the open transaction's cursor, while apply runs
        self._pending: _Pending | None = None  # its audit rows not written yet

    @property
    def connection(self) -> Any:
        """For the queries (projections/queries.py), which only read."""
        return self._conn

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
        # The patients stay held from one batch to the next (the projector alone writes the
        # projections); only a failed attempt leaves them holding what was rolled back.
        try:
            try:
                return self._apply(batch, positions or {}, consumer, topic, careful=False)
            except _UNPROJECTABLE:
                self.patients.forget()
                # Again, each record in a savepoint of its own: no cost unless a batch fails.
                return self._apply(batch, positions or {}, consumer, topic, careful=True)
        except BaseException:
            self.patients.forget()
            raise

    def _apply(
        self, batch: list[Record], positions: Mapping[int, int], consumer: str, topic: str, careful: bool
    ) -> list[tuple[int, str]]:
        aside: list[tuple[int, str]] = []
        with self._transaction() as cur:
            self._cur = cur
            try:
                for partition, offset in positions.items():
                    cur.execute(self._sql(_UPSERT_POSITION), (consumer, topic, partition, offset))
                reader = _Reader(cur, self.postgres)
                pending = self._pending = _Pending()
                for record in batch:
                    if not careful:
                        self._project(cur, reader, record, pending)
                        continue
                    try:
                        with self._savepoint(cur):
                            self._project(cur, reader, record, pending)
                            self._flush(cur, pending)
                    except _UNPROJECTABLE as exc:
                        pending.clear()  # the record's own rows, rolled back with it
                        self.patients.forget()  # the record may have moved its patient on
                        log.error(
                            "projections: sequence %s set aside, it cannot be projected (%s: %s); "
                            "the projection goes on without its rows",
                            record[0], type(exc).__name__, exc,
                        )  # fmt: skip
                        aside.append((record[0], str(exc)))
                self._flush(cur, pending)
            finally:
                self._cur = self._pending = None
        return aside

    def _project(self, cur: Any, reader: _Reader, record: Record, pending: _Pending) -> None:
        body = body_of(record[2])
        changes = project(record, reader, body)
        if changes.timeline:  # written now: the reader asks for them within the batch
            self._write(cur, CUSTODY_TIMELINE, changes.timeline)
            self._write(cur, CUSTODY_CURRENT, changes.current)
        rows = derive(record, self.patients, body)
        if isinstance(body, ev.Journey):
            pending.cois.add(body.coi)
        for name, table in AUDIT.items():
            pending.rows[table].extend(getattr(rows, name))
        pending.closings.extend(
            (c.sequence, self._time(c.at), c.by, c.outcome, c.coi, c.kind, c.item_id) for c in rows.closings
        )

    def _flush(self, cur: Any, pending: _Pending) -> None:
        """Write the audit rows waiting, a statement per table (a register entry is closed only
        by a record after the one that opened it, so the closings go last)."""
        for table, rows in pending.rows.items():
            self._write(cur, table, rows)
        if pending.closings:
            cur.executemany(self._sql(CLOSE), pending.closings)
        pending.clear()

    def _write(self, cur: Any, table: Table, rows: list[Any]) -> None:
        if rows:
            cur.executemany(table.insert(self.postgres), [values(row, self.postgres) for row in rows])

    def _patient(self, coi: str) -> list[Record]:
        """The records projected for one patient, in order (the open transaction's too)."""
        if self._pending is not None and coi in self._pending.cois:  # the batch's, not written yet
            self._flush(self._cur, self._pending)
        cur = self._cur if self._cur is not None else self._conn.cursor()
        cur.execute(self._sql(_PATIENT), (coi,))
        return [(int(s), at, envelope) for s, at, envelope in cur.fetchall()]

    def positions(self, consumer: str, topic: str) -> dict[int, int]:
        """partition -> next offset, for the partitions the consumer has applied anything from."""
        rows = self._conn.execute(self._sql(_POSITIONS), (consumer, topic)).fetchall()
        return {int(partition): int(offset) for partition, offset in rows}

    def reset(self) -> None:
        """Empty the read models (drop and recreate them). The projector's positions stay: a rebuild
        from the ledger covers every record consumed before it, so the projector resumes
        where it stopped instead of wherever Kafka's offset reset would put it."""
        with self._transaction() as cur:
            recreate(cur, self.postgres)
            cur.execute(self._sql(_FORGET), LEDGER)  # what it covered is gone
        self.patients.forget()

    def kept_by_projector(self) -> bool:
        """Whether a Kafka projector has stored positions here (it keeps the read models)."""
        return bool(self._conn.execute(self._sql(_KAFKA_CONSUMERS), (LEDGER[0],)).fetchall())

    def last_sequence(self) -> int:
        """The newest record the read models hold (0: none)."""
        return int(self._conn.execute(_LAST).fetchall()[0][0] or 0)

    def snapshot(self) -> Snapshot:
        return Snapshot(
            {
                table.name: [decode(table.row, row) for row in self._conn.execute(table.select()).fetchall()]
                for table in READ_MODELS
            }
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
        return placeholders(sql, self.postgres)

    def _time(self, at: Any) -> Any:
        return at if self.postgres else at.isoformat()


class _Pending:
    """Audit rows and register closings waiting for the end of the batch, in record order."""

    def __init__(self) -> None:
        self.rows: dict[Table, list[Any]] = {table: [] for table in AUDIT.values()}
        self.closings: list[tuple[object, ...]] = []
        self.cois: set[str] = set()  # the patients they belong to

    def clear(self) -> None:
        for rows in self.rows.values():
            rows.clear()
        self.closings.clear()
        self.cois.clear()


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
        self.cur.execute(placeholders(sql, self.postgres), params)
        return [decode(CurrentCustody, row) for row in self.cur.fetchall()]


# Every table the projections own, for tests that drop them.
TABLES = (*(table.name for table in READ_MODELS), TRACKING)
__all__ = ["LEDGER", "MIGRATIONS", "TABLES", "ProjectionStore", "Snapshot"]
