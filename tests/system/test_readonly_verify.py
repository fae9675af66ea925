"""`coi verify` needs nothing but read access: as a SELECT-only PostgreSQL role, and as an
unprivileged user on a copy of an SQLite ledger that it may read but not write."""

from __future__ import annotations

import hashlib
import os
import shutil
import site
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import LEDGER_TABLES
from tests.stores import SERVER_URL, fresh_store
from tests.support import COI, sealed_ledger

ROOT = Path(__file__).resolve().parents[2]
UNPRIVILEGED = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def verify(folder: Path, key: Path, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COI_DATA_DIR": str(folder / "coi-data"), "COI_DATABASE_URL": url}
    return subprocess.run(
        [*COI, "verify", "--trusted-key", str(key)], capture_output=True, text=True, env=env, timeout=120
    )


def _fill(url: str, folder: Path) -> tuple[Path, int]:
    """Two patients' journeys under a signed checkpoint; returns the verifier key file (mode
    0644, readable by anyone) and the number of records."""
    signer, size = sealed_ledger(url)
    key = folder / "ledger.vkey"
    key.write_text(signer.verifier.encode() + "\n")
    key.chmod(0o644)
    return key, size


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    yield from fresh_store("postgres", tmp_path / "unused.sqlite", "coi_readonly_tests", LEDGER_TABLES)


def test_verify_as_a_select_only_postgres_role(postgres_url: str, tmp_path: Path) -> None:
    key, size = _fill(postgres_url, tmp_path)
    database = postgres_url.rsplit("/", 1)[1]
    role = f"coi_reader_{os.getpid()}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.execute(f"CREATE ROLE {role} LOGIN")
        # PUBLIC may create in the public schema on older servers: not here.
        admin.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        admin.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        admin.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    reader_url = SERVER_URL.rsplit("/", 1)[0].replace("postgres@", f"{role}@", 1) + "/" + database
    try:
        with (
            psycopg.connect(reader_url, autocommit=True) as reader,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            reader.execute("CREATE TABLE coi_probe (x int)")  # the role can indeed only read
        done = verify(tmp_path, key, reader_url)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"OK: {size} records" in done.stdout
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")


def test_verify_says_run_coi_migrate_when_the_log_tables_are_missing(
    postgres_url: str, tmp_path: Path
) -> None:
    key, _ = _fill(postgres_url, tmp_path)
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("DROP TABLE coi_nodes")
    done = verify(tmp_path, key, postgres_url)
    assert done.returncode == 2 and "run coi migrate" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------- SQLite as nobody


def _unprivileged_python() -> str | None:
    """An interpreter of this Python version that `nobody` may run (this one may live under
    /root), or None."""
    if shutil.which("setpriv") is None:
        return None
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        probe = [*UNPRIVILEGED, candidate, "-c", "import sys; print(sys.version_info[:2])"]
        done = subprocess.run(probe, capture_output=True, text=True, check=False)
        if done.returncode == 0 and done.stdout.strip() == str(sys.version_info[:2]):
            return candidate
    return None


@pytest.fixture
def unprivileged_python() -> str:
    if os.geteuid() != 0:
        pytest.skip("runs the verifier as nobody: needs root to switch users")
    python = _unprivileged_python()
    if python is None:
        problem = "no setpriv, or no Python interpreter of this version that nobody may run"
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    return python


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder anyone may read and enter but only root may write (pytest's tmp folders are
    private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="coi-readonly-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def test_verify_as_an_unprivileged_user_on_a_read_only_copy(
    tmp_path: Path, unprivileged_python: str, shared_folder: Path
) -> None:
    original = tmp_path / "ledger.sqlite"
    key, size = _fill(f"sqlite:///{original}", shared_folder)
    with sqlite3.connect(original) as db:  # the WAL's pages into the file, so the copy is whole
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    copy = shared_folder / "ledger.sqlite"
    shutil.copyfile(original, copy)
    copy.chmod(0o644)  # owned by root: nobody may read it, not write it
    before = hashlib.sha256(copy.read_bytes()).hexdigest()
    assert stat.S_IMODE(shared_folder.stat().st_mode) == 0o755
    cannot_write = subprocess.run(
        [*UNPRIVILEGED, "sh", "-c", f"echo > {copy}"], capture_output=True, check=False
    )
    assert cannot_write.returncode != 0  # the copy is indeed read-only to nobody

    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), *site.getsitepackages()]),
        "COI_DATA_DIR": str(shared_folder / "coi-data"),  # absent: no trust roots from a data folder
        "COI_DATABASE_URL": f"sqlite:///{copy}",
        "HOME": str(shared_folder),
    }
    done = subprocess.run(
        [*UNPRIVILEGED, unprivileged_python, "-m", "ledger.cli", "verify", "--trusted-key", str(key)],
        capture_output=True, text=True, env=env, cwd=shared_folder, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"OK: {size} records" in done.stdout
    assert sorted(p.name for p in shared_folder.iterdir()) == ["ledger.sqlite", "ledger.vkey"]
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == before
