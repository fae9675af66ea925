"""Ordered, named migrations: writers migrate on start, `coi migrate` for operators, and
readers never create or alter anything (they say "run coi migrate" when they cannot read)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.app.application import LedgerApplication
from ledger.audit.source import SchemaError
from ledger.store.migrations import LEDGER, PAYLOAD_DIGESTS
from ledger.store.snapshot import REGISTRY_RECORDS, REGISTRY_TOPICS
from ledger.store.sql import SQLITE_EVENTS, records_where
from ledger.transparency.checkpoint import NoteSigner
from projections.store import MIGRATIONS, ProjectionStore
from tests.support import FIXTURE_VKEY, coi, copy_fixture_ledger

PATIENT = "CHW0451260059EM"  # in the fixture ledger


def _schema(path: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """(every table and index with its SQL, the migrations recorded)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        objects = sorted(db.execute("SELECT name, sql FROM sqlite_master"))
        names = (
            [n for (n,) in db.execute("SELECT name FROM coi_schema ORDER BY rowid")]
            if any(name == "coi_schema" for name, _ in objects)
            else []
        )
    return objects, names


@pytest.fixture
def old_ledger(tmp_path: Path) -> Path:
    copy_fixture_ledger(tmp_path / "coi-data")
    return tmp_path


def test_readers_leave_an_old_ledger_as_it_was_and_coi_migrate_brings_it_up_to_date(old_ledger: Path) -> None:
    database = old_ledger / "coi-data" / "ledger.sqlite"
    before = _schema(database)
    assert before[1] == []  # v0.1 recorded no migrations
    verify = ["verify", "--trusted-key", str(FIXTURE_VKEY)]
    for reader in (["history", PATIENT], ["principals", "list"], ["prove", "3"], verify):
        done = coi(old_ledger, *reader)
        assert done.returncode == 0, (reader, done.stderr)
    assert _schema(database) == before

    done = coi(old_ledger, "migrate")
    assert done.returncode == 0, done.stderr
    ledger_line = done.stdout.splitlines()[0]
    assert ledger_line.endswith(", ".join(f"applied {m.name}" for m in LEDGER)), done.stdout
    # `coi history` caught the read models up from the ledger into a file of their own.
    assert "projections.sqlite: up to date" in done.stdout
    assert _schema(database)[1] == [m.name for m in LEDGER]

    again = coi(old_ledger, "migrate")
    assert again.returncode == 0 and again.stdout.count("up to date") == 2, again.stdout
    assert coi(old_ledger, *verify).returncode == 0


def test_a_reader_of_a_ledger_without_its_log_tables_says_run_coi_migrate(old_ledger: Path) -> None:
    database = old_ledger / "coi-data" / "ledger.sqlite"
    with sqlite3.connect(database) as db:
        db.execute("DROP TABLE coi_checkpoints")
    for reader in (["history", PATIENT], ["verify"], ["prove", "3"]):
        done = coi(old_ledger, *reader)
        assert done.returncode == 2 and "run coi migrate" in done.stderr, (reader, done.stderr)
        assert "Traceback" not in done.stderr
    assert "coi_checkpoints" not in {name for name, _ in _schema(database)[0]}
    assert coi(old_ledger, "migrate").returncode == 0  # the tables come back, empty
    assert coi(old_ledger, "history", PATIENT).returncode == 0


def test_a_reader_creates_no_ledger(tmp_path: Path) -> None:
    key = tmp_path / "ledger.vkey"
    key.write_text(NoteSigner("coi-ledger.test/log", Ed25519PrivateKey.generate()).verifier.encode() + "\n")
    for reader in (["history", PATIENT], ["verify", "--trusted-key", str(key)], ["principals", "list"]):
        done = coi(tmp_path, *reader)
        assert done.returncode == 2 and "run coi init" in done.stderr, (reader, done.stderr)
    assert not (tmp_path / "coi-data").exists()


def test_writers_migrate_on_start_once(store_url: str) -> None:
    first = LedgerApplication(store_url)
    assert first.migrations == [m.name for m in LEDGER]
    first.close()
    again = LedgerApplication(store_url)
    assert again.migrations == [] and PAYLOAD_DIGESTS in [m.name for m in LEDGER]
    again.close()
    reader = LedgerApplication(store_url, writer=False)
    assert reader.migrations == []
    reader.close()


def test_a_reader_refuses_an_empty_store(store_url: str) -> None:
    with pytest.raises(SchemaError, match="run coi init"):
        LedgerApplication(store_url, writer=False)


def test_the_projection_store_migrates_on_start_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'projections.sqlite'}"
    first = ProjectionStore(url)
    assert first.migrations == [m.name for m in MIGRATIONS]
    first.close()
    again = ProjectionStore(url)
    assert again.migrations == []
    again.close()


def test_two_writers_starting_together_apply_each_migration_once(store_url: str) -> None:
    start = threading.Barrier(2)
    applied: list[list[str]] = []

    def writer() -> None:
        start.wait()
        app = LedgerApplication(store_url)
        applied.append(app.migrations)
        app.close()

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(applied) == 2  # neither failed
    assert sorted(applied, key=len) == [[], [m.name for m in LEDGER]]


def test_the_registry_records_a_bundle_needs_are_read_through_their_index(old_ledger: Path) -> None:
    assert coi(old_ledger, "migrate").returncode == 0
    query = records_where(SQLITE_EVENTS, False, REGISTRY_RECORDS)
    with sqlite3.connect(old_ledger / "coi-data" / "ledger.sqlite") as db:
        plan = " ".join(str(row) for row in db.execute(f"EXPLAIN QUERY PLAN {query}"))
        found = db.execute(query).fetchall()
        topics = {t for (t,) in db.execute(f"SELECT topic FROM {SQLITE_EVENTS} WHERE {REGISTRY_RECORDS}")}
    assert "USING INDEX coi_registry_records" in plan, plan
    assert len(found) >= 3 and topics <= set(REGISTRY_TOPICS)
