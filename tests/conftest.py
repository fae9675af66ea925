"""Stores for the tests: SQLite always, PostgreSQL at 127.0.0.1:5432 (or COI_TEST_POSTGRES_URL)
when it answers; a test that needs it is skipped with the reason otherwise."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from ledger.application import LedgerApplication
from ledger.journeys import Cast
from ledger.logstore import TABLES as LOG_TABLES
from ledger.store import CLAIMS_TABLE

# The server's `test` database is only the way in: the tests keep their tables in a
# database of their own, so a benchmark or a local ledger in `test` cannot disturb them.
SERVER_URL = os.environ.get("COI_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
POSTGRES_URL = SERVER_URL.rsplit("/", 1)[0] + "/coi_ledger_tests"


def _postgres_problem() -> str | None:
    try:
        with psycopg.connect(SERVER_URL, connect_timeout=3, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'coi_ledger_tests'").fetchone()
            if not exists:
                conn.execute("CREATE DATABASE coi_ledger_tests")
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL at {SERVER_URL} does not answer: {exc}".strip()


def _reset_postgres() -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        tables = [f"{LedgerApplication.name.lower()}_events", CLAIMS_TABLE, *LOG_TABLES]
        conn.execute(f"DROP TABLE IF EXISTS {', '.join(tables)}")


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty ledger store of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.sqlite'}"
        return
    problem = _postgres_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test PostgreSQL: {problem}")
        pytest.skip(problem)
    _reset_postgres()
    yield POSTGRES_URL
    _reset_postgres()


@pytest.fixture
def app(store_url: str) -> LedgerApplication:
    return LedgerApplication(store_url)


@pytest.fixture(scope="session")
def cast() -> Cast:
    return Cast()


@pytest.fixture
def long_ago() -> datetime:
    return datetime.now(UTC) - timedelta(days=40)


@pytest.fixture
def registered(app: LedgerApplication, cast: Cast, long_ago: datetime) -> LedgerApplication:
    """A ledger whose principal registry holds the whole demo cast."""
    outcomes = list(app.submit_many(cast.registrations(long_ago)))
    assert [o.status for o in outcomes] == ["accepted"] * len(outcomes), outcomes
    return app
