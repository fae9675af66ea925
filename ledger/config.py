"""Where the ledger keeps its records, from the environment.

COI_DATABASE_URL: `sqlite:///PATH` (default: ./coi-data/ledger.sqlite) or
`postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME`. COI_DATA_DIR moves the default folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

DEFAULT_DATA_DIR = "coi-data"


class ConfigError(Exception):
    """A setting that cannot be used; the message names it and says what is expected."""


def data_dir() -> Path:
    return Path(os.environ.get("COI_DATA_DIR", DEFAULT_DATA_DIR))


def database_url() -> str:
    return os.environ.get("COI_DATABASE_URL") or f"sqlite:///{data_dir() / 'ledger.sqlite'}"


TRANSCODER = "ledger.transcoder:StateTranscoder"


def persistence_env(url: str) -> dict[str, str]:
    """The eventsourcing environment for a database URL."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = unquote(parts.path.removeprefix("/")) if parts.netloc == "" else parts.netloc + parts.path
        if not path:
            raise ConfigError(f"COI_DATABASE_URL {url!r}: expected sqlite:///path/to/ledger.sqlite")
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": path,
            "SQLITE_LOCK_TIMEOUT": "10",
            "APPLICATION_RECORDER_TOPIC": "ledger.store:SQLiteLedgerRecorder",
            "TRANSCODER_TOPIC": TRANSCODER,
        }
    if parts.scheme in ("postgres", "postgresql"):
        if not parts.hostname or not parts.path.strip("/"):
            raise ConfigError(f"COI_DATABASE_URL {url!r}: expected postgresql://user@host:5432/dbname")
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": parts.path.strip("/"),
            "POSTGRES_HOST": parts.hostname,
            "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": unquote(parts.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(parts.password or ""),
            # The claims table is written by the recorder's in-transaction hook, which
            # eventsourcing bypasses when it inserts through database functions.
            "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
            "APPLICATION_RECORDER_TOPIC": "ledger.store:PostgresLedgerRecorder",
            "TRANSCODER_TOPIC": TRANSCODER,
        }
    raise ConfigError(f"COI_DATABASE_URL {url!r}: the scheme must be sqlite or postgresql")


def checkpoint_policy() -> tuple[int, float]:
    """(records, seconds): a checkpoint is signed after that many new records, or after that
    long with any new record (COI_CHECKPOINT_EVERY, COI_CHECKPOINT_SECONDS)."""
    try:
        return int(os.environ.get("COI_CHECKPOINT_EVERY", "1000")), float(
            os.environ.get("COI_CHECKPOINT_SECONDS", "10")
        )
    except ValueError:
        raise ConfigError(
            "COI_CHECKPOINT_EVERY must be an integer and COI_CHECKPOINT_SECONDS a number"
        ) from None
