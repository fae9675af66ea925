"""Fresh stores for the tests: SQLite always, PostgreSQL at 127.0.0.1:5432 (or
COI_TEST_POSTGRES_URL) when it answers; without it a test is skipped with the reason, except
under CI, where that is a failure."""

from __future__ import annotations

import atexit
import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import psycopg
import pytest

from ledger.app.application import LedgerApplication
from ledger.app.log import MerkleLog
from ledger.audit.verification import LedgerVerifier, Report
from ledger.audit.witnessing import Witnessing
from ledger.store.sources import open_source
from ledger.transparency.checkpoint import NoteSigner, NoteVerifier
from ledger.transparency.records import record_hash
from projections.queries import Audit, RecordView
from projections.rebuild import catch_up
from projections.store import ProjectionStore

# The server's `test` database is only the way in: the tests keep their tables in databases
# of their own, so a benchmark or a local ledger in `test` cannot disturb them.
SERVER_URL = os.environ.get("COI_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
# Each test run names its databases after its own process, so two runs sharing one server
# (two checkouts, CI beside a developer) never drop each other's tables; they go at exit.
_RUN = f"_{os.getpid()}"
_created: set[str] = set()


def postgres_url(database: str) -> str:
    return SERVER_URL.rsplit("/", 1)[0] + "/" + database


def _postgres_problem(database: str) -> str | None:
    try:
        with psycopg.connect(SERVER_URL, connect_timeout=3, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
                conn.execute(f"CREATE DATABASE {database}")
                if not _created:
                    atexit.register(_drop_databases)
                _created.add(database)
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL at {SERVER_URL} does not answer: {exc}".strip()


def _drop(database: str, tables: list[str]) -> None:
    with psycopg.connect(postgres_url(database), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {', '.join(tables)}")


def _drop_databases() -> None:
    try:
        with psycopg.connect(SERVER_URL, connect_timeout=3, autocommit=True) as conn:
            for database in _created:
                conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    except psycopg.Error:
        pass  # the server went away first: nothing left to keep tidy


def fresh_store(kind: str, sqlite_file: Path, database: str, tables: list[str]) -> Iterator[str]:
    """The URL of an empty store of `kind` ("sqlite" or "postgres") for one test; `database`
    is suffixed with this run's id."""
    database += _RUN
    if kind == "sqlite":
        yield f"sqlite:///{sqlite_file}"
        return
    problem = _postgres_problem(database)
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test PostgreSQL: {problem}")
        pytest.skip(problem)
    _drop(database, tables)
    yield postgres_url(database)
    _drop(database, tables)


class RawStore:
    """The event store's rows, reached past the application as an attacker with SQL would."""

    def __init__(self, url: str) -> None:
        self.postgres = url.startswith("postgresql")
        if self.postgres:
            self.conn: Any = psycopg.connect(url, autocommit=True)
            self.table, self.seq = f"{LedgerApplication.name.lower()}_events", "notification_id"
        else:
            self.conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
            self.table, self.seq = "stored_events", "rowid"

    def sql(self, statement: str, params: tuple[object, ...] = ()) -> list[Any]:
        statement = statement.format(table=self.table, seq=self.seq)
        cursor = self.conn.execute(statement.replace("?", "%s") if self.postgres else statement, params)
        return list(cursor.fetchall()) if cursor.description else []

    COLUMNS = ("originator_id", "originator_version", "topic", "state")

    def row(self, sequence: int) -> tuple[Any, ...]:
        return tuple(
            self.sql(f"SELECT {', '.join(self.COLUMNS)} FROM {{table}} WHERE {{seq}} = ?", (sequence,))[0]
        )

    def set_row(self, sequence: int, row: tuple[Any, ...]) -> None:
        assignments = ", ".join(f"{c} = ?" for c in self.COLUMNS)
        self.sql(f"UPDATE {{table}} SET {assignments} WHERE {{seq}} = ?", (*row, sequence))

    def last(self) -> int:
        return int(self.sql("SELECT MAX({seq}) FROM {table}")[0][0])

    def truncate(self, keep: int) -> None:
        """The records after the first `keep` deleted, with the checkpoints that covered them,
        and the log's tables emptied (they are rebuilt from the records), as an insider would."""
        first = int(self.sql("SELECT MIN({seq}) FROM {table}")[0][0])
        self.sql("DELETE FROM {table} WHERE {seq} >= ?", (first + keep,))
        self.sql("DELETE FROM coi_checkpoints WHERE tree_size > ?", (keep,))
        self.sql("DELETE FROM coi_leaves")
        self.sql("DELETE FROM coi_nodes")

    def count(self) -> int:
        return int(self.sql("SELECT COUNT(*) FROM {table}")[0][0])

    def append(self, stream: UUID, envelope: str, topic: str, recorded_at: datetime | None = None) -> int:
        """Append `envelope` to `stream` straight into the table, correctly chained and recorded
        at `recorded_at` (now), as an insider with SQL could; returns the sequence it gets."""
        column = stream if self.postgres else stream.hex
        (version, state) = self.sql(
            "SELECT originator_version, state FROM {table} WHERE originator_id = ? "
            "ORDER BY originator_version DESC LIMIT 1",
            (column,),
        )[0]
        stored = msgspec.json.decode(bytes(state))
        head = record_hash(stream, version, stored["prev"], stored["timestamp"]["_data_"], stored["envelope"])
        state = msgspec.json.encode(
            {
                "timestamp": {
                    "_type_": "datetime_iso",
                    "_data_": (recorded_at or datetime.now(UTC)).isoformat(),
                },
                "envelope": envelope,
                "prev": head,
            }
        )
        self.sql("INSERT INTO {table} (originator_id, originator_version, topic, state) VALUES (?, ?, ?, ?)",
                 (column, version + 1, topic, state))  # fmt: skip
        return self.last()

    def cut_log_tail(self, size: int) -> None:
        """Remove the leaves from `size` on, their records, the nodes over them and the
        checkpoints that covered them, as an insider hiding the tail would."""
        (first_cut,) = self.sql("SELECT sequence FROM coi_leaves WHERE leaf_index = ?", (size,))[0]
        self.sql("DELETE FROM {table} WHERE {seq} >= ?", (first_cut,))
        self.sql("DELETE FROM coi_leaves WHERE leaf_index >= ?", (size,))
        for level in range(size.bit_length() + 1):
            self.sql("DELETE FROM coi_nodes WHERE level = ? AND idx >= ?", (level, size >> level))
        self.sql("DELETE FROM coi_checkpoints WHERE tree_size > ?", (size,))

    def rewrite_last_record(self, by: timedelta = timedelta(seconds=1)) -> int:
        """The last record's recorded_at moved (by a second), as an insider with SQL could: the
        last record of its aggregate, so no later link needs mending. Returns its sequence."""
        last = self.last()
        stream, version, topic, state = self.row(last)
        stored = msgspec.json.decode(bytes(state))
        moved = datetime.fromisoformat(stored["timestamp"]["_data_"]) + by
        stored["timestamp"]["_data_"] = moved.isoformat()
        self.set_row(last, (stream, version, topic, msgspec.json.encode(stored)))
        return last

    def resign_log(self, app: LedgerApplication, signer: NoteSigner) -> None:
        """What the insider does after editing records: rebuild the Merkle log from them and
        sign it with the ledger's key, which they hold."""
        for table in ("coi_checkpoints", "coi_nodes", "coi_leaves"):
            self.sql(f"DELETE FROM {table}")
        MerkleLog(app).checkpoint(signer, signer.name, memory=None)


def ledger_url(app: LedgerApplication) -> str:
    """The database URL an application was opened on."""
    e = app.env
    if e.get("POSTGRES_DBNAME"):
        return (
            f"postgresql://{e.get('POSTGRES_USER')}@{e.get('POSTGRES_HOST')}:{e.get('POSTGRES_PORT')}"
            f"/{e.get('POSTGRES_DBNAME')}"
        )
    return f"sqlite:///{e.get('SQLITE_DBNAME')}"


def verify_ledger(
    app: LedgerApplication,
    trusted: list[NoteVerifier],
    state: Path | None = None,
    witnessing: Witnessing | None = None,
    replay: bool = True,
) -> Report:
    """`coi verify`'s check of an application's ledger, through the read-only source
    (incrementally, from and to the `state` file, if given), as `coi verify` does: with the
    witnesses' cosignatures the ledger stored, judged by the keys of `witnessing` if given)."""
    source = open_source(ledger_url(app))
    try:
        verifier = LedgerVerifier(
            source, trusted, cosigned=source.witnessed(), witnessing=witnessing, replay=replay
        )
        return verifier.run(state)
    finally:
        source.close()


def history(app: LedgerApplication, coi: str) -> list[RecordView]:
    """`coi history` in process: the read models caught up from the ledger into a file of their
    own, then one patient's records."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        store = ProjectionStore(f"sqlite:///{folder}/projections.sqlite")
        try:
            catch_up(app, store)
            return Audit(store.connection, store.postgres).history(coi)
        finally:
            store.close()
