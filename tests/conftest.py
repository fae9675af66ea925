"""Fixtures: a ledger store of each kind (tests/stores.py), the demo cast, a registered ledger."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ledger.app.application import LedgerApplication
from ledger.demo.journeys import Cast, compressed_run
from ledger.demo.kit import register_cast
from ledger.store.logstore import TABLES as LOG_TABLES
from ledger.store.recorders import CLAIMS_TABLE, SCHEMA_TABLE
from tests.stores import fresh_store

LEDGER_TABLES = [f"{LedgerApplication.name.lower()}_events", CLAIMS_TABLE, SCHEMA_TABLE, *LOG_TABLES]


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test has a trust store and a signer folder of its own: never the real home's."""
    folder = tmp_path / "coi-config"
    monkeypatch.setenv("COI_CONFIG_DIR", str(folder))
    for name in ("COI_SIGNER_DIR", "COI_LEDGER_KEY", "COI_TRUSTED_KEYS", "COI_LOG_ORIGIN"):
        monkeypatch.delenv(name, raising=False)
    return folder


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty ledger store of each kind."""
    yield from fresh_store(request.param, tmp_path / "ledger.sqlite", "coi_ledger_tests", LEDGER_TABLES)


@pytest.fixture
def app(store_url: str) -> LedgerApplication:
    return LedgerApplication(store_url)


@pytest.fixture(scope="session")
def cast() -> Cast:
    return Cast()


@pytest.fixture
def registered(app: LedgerApplication, cast: Cast) -> LedgerApplication:
    """A ledger whose principal registry holds the whole demo cast, registered just before
    the compressed journeys of tests/support.py `new_journey`, and the first policy boundary."""
    register_cast(app, cast, compressed_run(datetime.now(UTC)).registered_at)
    return app
