"""The security log's table, `coi_security`, beside the event store and never in it: refused
submissions are no GxP record and never enter the Merkle log. The migration
"security-log-table" makes it (ledger/store/migrations.py).

A row is written by whoever refused the envelope (`coi submit`, the ingest); a delivery
already logged (the same Kafka position handled again after a crash) is logged once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import msgspec

from ledger.audit.source import SchemaError
from ledger.store.sql import is_postgres, placeholders, reading, sqlite_path, writing
from ledger.wire.messages import SecurityEntry

SECURITY_TABLE = "coi_security"
_COLUMNS = (
    "at",
    "source",
    "code",
    "message",
    "authenticated",
    "envelope_sha256",
    "payload_sha256",
    "principal",
    "keyid",
    "event_id",
    "field",
)
# `delivery` is the source for positions that may be handled twice (a Kafka offset), NULL for
# submissions that are each their own attempt: its uniqueness keeps a redelivery out.
SECURITY_DDL = (
    f"CREATE TABLE IF NOT EXISTS {SECURITY_TABLE} (entry {{serial}} PRIMARY KEY, at TEXT NOT NULL, "
    "source TEXT NOT NULL, code TEXT NOT NULL, message TEXT NOT NULL, authenticated {bool} NOT NULL, "
    "envelope_sha256 TEXT NOT NULL, payload_sha256 TEXT, principal TEXT, keyid TEXT, event_id TEXT, "
    "field TEXT, delivery TEXT UNIQUE)",
    f"CREATE INDEX IF NOT EXISTS coi_security_keyid ON {SECURITY_TABLE} (keyid, at)",
    f"CREATE INDEX IF NOT EXISTS coi_security_at ON {SECURITY_TABLE} (at)",
)
# Sources whose positions are delivered at least once.
REDELIVERED = ("kafka:",)


class SecurityLog:
    """The table at a ledger's database URL, on a connection of its own (its writes commit
    apart from the records': a refusal stores nothing else)."""

    def __init__(self, url: str, writer: bool = True) -> None:
        self.postgres = is_postgres(url)
        self.conn: Any
        if self.postgres:
            import psycopg  # here: an SQLite ledger's commands need no driver

            self.conn = psycopg.connect(url, autocommit=True)
        else:
            # a reader makes no file (the caller found the ledger there)
            where = sqlite_path(url) if writer else f"file:{quote(sqlite_path(url))}?mode=ro"
            self.conn = sqlite3.connect(
                where, timeout=10, isolation_level=None, uri=not writer, check_same_thread=False
            )
        if not writer and not self._made():
            self.close()
            raise SchemaError("this ledger has no security log yet (made before it): run coi migrate")

    def _made(self) -> bool:
        found = (
            "SELECT to_regclass(%s) IS NOT NULL"
            if self.postgres
            else "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?)"
        )
        with self._reading() as c:
            c.execute(found, (SECURITY_TABLE,))
            return bool(c.fetchone()[0])

    def close(self) -> None:
        self.conn.close()

    def _sql(self, text: str) -> str:
        return placeholders(text, self.postgres)

    def add(self, entries: Sequence[SecurityEntry]) -> None:
        if not entries:
            return
        names = ", ".join((*_COLUMNS, "delivery"))
        insert = self._sql(
            f"INSERT INTO {SECURITY_TABLE} ({names}) VALUES ({', '.join('?' * (len(_COLUMNS) + 1))}) "  # noqa: S608 - our names
            "ON CONFLICT (delivery) DO NOTHING"
        )
        rows = [
            (*(getattr(e, name) for name in _COLUMNS), e.source if e.source.startswith(REDELIVERED) else None)
            for e in entries
        ]
        with writing(self.conn, self.postgres) as c:
            c.executemany(insert, rows)

    def entries(
        self,
        principal: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        keyid: str | None = None,
    ) -> Iterator[SecurityEntry]:
        """Entries in the order they were logged, those matching every filter given (`since`
        inclusive, `until` exclusive)."""
        where, params = ["1 = 1"], []
        for condition, value in (
            ("principal = ?", principal),
            ("keyid = ?", keyid),
            # as the entries are written: UTC, so that the text compares as the times do
            ("at >= ?", since and since.astimezone(UTC).isoformat()),
            ("at < ?", until and until.astimezone(UTC).isoformat()),
        ):
            if value is not None:
                where.append(condition)
                params.append(value)
        query = self._sql(
            f"SELECT {', '.join(_COLUMNS)} FROM {SECURITY_TABLE} "  # noqa: S608 - our names
            f"WHERE {' AND '.join(where)} ORDER BY entry"
        )
        with self._reading() as c:
            c.execute(query, params)
            rows = c.fetchall()
        for row in rows:
            values = dict(zip(_COLUMNS, row, strict=True))
            values["authenticated"] = bool(values["authenticated"])
            yield msgspec.convert(values, SecurityEntry)

    def _reading(self) -> AbstractContextManager[Any]:
        return reading(self.conn, self.postgres)


def security_ddl(postgres: bool) -> Iterable[str]:
    """The table's DDL for one engine."""
    types = _TYPES[postgres]
    return (statement.format(**types) for statement in SECURITY_DDL)


_TYPES = {True: {"serial": "BIGSERIAL", "bool": "BOOLEAN"}, False: {"serial": "INTEGER", "bool": "INTEGER"}}
