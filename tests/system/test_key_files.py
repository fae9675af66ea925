"""Key files and the files coi writes, through the coi command: passphrase policy, modes, other users."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.site.publisher import SitePublisher
from ledger.wire.kafka_topics import Topics
from tests.support import COI, coi


@pytest.mark.parametrize("weak", ["aaaaaaaa", "short pass", "abababababab", "nurse.kim-2026!"])
def test_weak_passphrases_are_refused(tmp_path: Path, weak: str) -> None:
    done = coi(tmp_path, "keys", "new", "--principal", "nurse.kim", "--name", "Kim", passphrase=weak)
    assert done.returncode == 2 and "passphrase" in done.stderr, done.stderr
    assert not (tmp_path / "coi-data" / "keys" / "nurse.kim.key").exists()


def test_the_demo_passphrase_meets_the_policy(tmp_path: Path) -> None:
    done = coi(
        tmp_path, "keys", "new", "--principal", "nurse.kim", "--name", "Kim", passphrase="demo-passphrase"
    )
    assert done.returncode == 0, done.stderr


def test_a_private_key_readable_by_others_is_refused_with_the_fix(tmp_path: Path, config_dir: Path) -> None:
    assert (
        coi(tmp_path, "init", "--admin", "admin.jane", "--name", "Jane Admin", "--site", "US-SSF").returncode
        == 0
    )
    key = tmp_path / "coi-data" / "keys" / "admin.jane.key"
    key.chmod(0o644)
    body = tmp_path / "body.json"
    body.write_text("{}")
    done = coi(tmp_path, "sign", "--key", str(key), str(body))
    assert done.returncode == 2 and f"chmod 600 {key}" in done.stderr, done.stderr
    assert coi(tmp_path, "checkpoint", "--sign").returncode == 0
    (ledger_key,) = (config_dir / "signer").glob("*.key")  # made by coi init, apart from the data
    ledger_key.chmod(0o640)
    done = coi(tmp_path, "checkpoint", "--sign")
    assert done.returncode == 2 and f"chmod 600 {ledger_key}" in done.stderr, done.stderr


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The usual default umask, which leaves new files readable by all: what coi writes must
    not depend on it."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("usual_umask")
def test_files_the_ledger_creates_are_its_owners_alone(tmp_path: Path, config_dir: Path) -> None:
    assert coi(tmp_path, "demo", "--patients", "1").returncode == 0
    assert coi(tmp_path, "projections", "rebuild").returncode == 0
    assert coi(tmp_path, "verify", "--incremental").returncode == 0
    data = tmp_path / "coi-data"
    private = [
        data / "ledger.sqlite", data / "projections.sqlite", *(config_dir / "signer").glob("*.key"),
        *(config_dir / "signer").glob("*.service-key"), *(config_dir / "verify-state").glob("*.json"),
        *(data / "demo-keys").glob("*.key"),
    ]  # fmt: skip
    assert len(private) == 5 + len(list((data / "demo-keys").glob("*.key"))), private
    assert {p.name: oct(_mode(p)) for p in private} == {p.name: "0o600" for p in private}
    assert oct(_mode(config_dir / "signer")) == "0o700"


@pytest.fixture
def outsider() -> Iterator[str]:
    """An unprivileged user, to test access itself (root reads any file whatever its mode)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run a command as another user; the mode-bit tests cover this run")
    name = "coi-outsider"
    if subprocess.run(["id", name], capture_output=True).returncode != 0:
        if shutil.which("useradd") is None:
            pytest.skip("no useradd on this machine to make an unprivileged user")
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", name], check=True)
    yield name


def test_another_user_cannot_read_the_ledger_or_its_keys(outsider: str) -> None:
    # A folder the outsider may enter, so only the files' own modes stand in the way.
    folder = Path(tempfile.mkdtemp(prefix="coi-access-"))
    try:
        folder.chmod(0o755)
        config = folder / "coi-config"
        init = ("init", "--admin", "admin.jane", "--name", "Jane Admin", "--site", "US-SSF")
        assert coi(folder, *init, COI_CONFIG_DIR=str(config)).returncode == 0
        assert coi(folder, "checkpoint", "--sign", COI_CONFIG_DIR=str(config)).returncode == 0
        data = folder / "coi-data"
        for path in [*data.rglob("*"), *config.rglob("*")]:
            if path.is_dir():
                path.chmod(path.stat().st_mode | 0o055)  # let the outsider reach every file
        (ledger_key,) = (config / "signer").glob("*.key")
        for secret in (data / "ledger.sqlite", ledger_key, data / "keys" / "admin.jane.key"):
            read = subprocess.run(
                ["su", outsider, "-c", f"cat {secret} > /dev/null"], capture_output=True, text=True
            )
            assert read.returncode != 0 and "Permission denied" in read.stderr, (secret, read.stderr)
        public = data / "keys" / "admin.jane.key.pub"
        assert subprocess.run(["su", outsider, "-c", f"cat {public}"], capture_output=True).returncode == 0
    finally:
        shutil.rmtree(folder)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://coi:s3cr3t-Pw@/ledger",
        "ftp://coi:s3cr3t-Pw@db.example/ledger",
    ],
)
def test_configuration_errors_never_show_the_database_password(tmp_path: Path, url: str) -> None:
    env = {**os.environ, "COI_DATABASE_URL": url, "COI_DATA_DIR": str(tmp_path / "coi-data")}
    done = subprocess.run([*COI, "history", "X"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 2 and "COI_DATABASE_URL" in done.stderr, done.stderr
    assert "s3cr3t" not in done.stderr and "coi:***@" in done.stderr, done.stderr


@pytest.mark.usefixtures("usual_umask")
def test_the_site_outbox_is_its_owners_alone(tmp_path: Path, bootstrap: str) -> None:
    outbox = tmp_path / "site" / "site-outbox.sqlite"
    SitePublisher(bootstrap, Topics.from_env(), outbox).close()
    assert _mode(outbox) == 0o600


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)
