"""Fixtures: a ledger store of each kind (tests/stores.py), the demo cast, a registered ledger,
the ledger's service principal, a page in headless Chromium (tests/browser.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from ledger.app.application import LedgerApplication
from ledger.demo.journeys import Cast, compressed_run
from ledger.demo.kit import register_cast, service_member
from ledger.site.signing import Member, registration
from ledger.store.logstore import TABLES as LOG_TABLES
from ledger.store.recorders import CLAIMS_TABLE, SCHEMA_TABLE
from ledger.store.security import SECURITY_TABLE
from tests.browser import RenderedPage, artifacts_for, chromium, rendered_page
from tests.stores import fresh_store

LEDGER_TABLES = [
    f"{LedgerApplication.name.lower()}_events",
    CLAIMS_TABLE,
    SCHEMA_TABLE,
    *LOG_TABLES,
    SECURITY_TABLE,
]


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test has a trust store and a signer folder of its own: never the real home's; nor
    the signing session or passphrase of the shell that runs the tests."""
    folder = tmp_path / "coi-config"
    monkeypatch.setenv("COI_CONFIG_DIR", str(folder))
    for name in (
        "COI_SIGNER_DIR",
        "COI_LEDGER_KEY",
        "COI_TRUSTED_KEYS",
        "COI_LOG_ORIGIN",
        "COI_SIGNING_AGENT",
        "COI_KEY_PASSPHRASE",
        "COI_SERVICE_KEY",
    ):
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


@pytest.fixture
def service(
    registered: LedgerApplication, cast: Cast, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Member:
    """The ledger's service principal, registered as `coi init` does, its key where the ledger
    finds it."""
    path = tmp_path / "service.key"
    member = service_member(path, "US-SSF")
    assert registered.submit(registration(cast.admin, member, datetime.now(UTC))).status == "accepted"
    monkeypatch.setenv("COI_SERVICE_KEY", str(path))
    return member


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One Chromium for the session (a launch costs a second or two); each test gets its own
    context from `browser_page`."""
    with chromium() as launched:
        yield launched


@pytest.fixture
def browser_page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[RenderedPage]:
    """A fresh tab whose screenshots and PDFs go to the test's folder under test-artifacts/."""
    with rendered_page(browser, artifacts_for(request.node.nodeid)) as page:
        yield page


@pytest.fixture(params=["inline", "workers"])
def checked_in_and_out_of_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A verification whose first chunk is small checks signatures and replays the rules in
    the calling process, a larger one in worker processes: a test using this runs both ways."""
    from ledger.audit import verification

    if request.param == "workers":
        monkeypatch.setattr(verification, "INLINE_BELOW", 0)
