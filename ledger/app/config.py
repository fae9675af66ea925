"""Where the ledger keeps its records, from the environment.

COI_DATABASE_URL: `sqlite:///PATH` (default: ./coi-data/ledger.sqlite) or
`postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME`. COI_DATA_DIR moves the default folder.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ledger.site.transport import sasl_password
from ledger.store.sql import POSTGRES_SCHEMES, sqlite_path, write_ahead
from ledger.wire.config import ConfigError as ConfigError  # raised here, caught by its callers
from ledger.wire.files import create_private

DEFAULT_DATA_DIR = "coi-data"


# The password in any URL's user part: scheme://user:PASSWORD@host.
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]*@")
_URL_SETTINGS = ("COI_DATABASE_URL", "COI_PROJECTIONS_URL")


def redact(text: str) -> str:
    """`text` fit for a message or a log: every URL's password, and the database and Kafka
    passwords the environment sets wherever else they appear (a driver may quote them),
    become ***."""
    passwords = {urlsplit(os.environ.get(name, "")).password for name in _URL_SETTINGS}
    passwords |= {unquote(p) for p in passwords if p}
    with contextlib.suppress(ConfigError):  # an unreadable password file: nothing to hide
        passwords.add(sasl_password())
    for password in passwords - {None, ""}:
        text = text.replace(str(password), "***")
    return _URL_PASSWORD.sub(r"\1***@", text)


def data_dir() -> Path:
    return Path(os.environ.get("COI_DATA_DIR", DEFAULT_DATA_DIR))


def database_url() -> str:
    return os.environ.get("COI_DATABASE_URL") or f"sqlite:///{data_dir() / 'ledger.sqlite'}"


def projections_url() -> str:
    return os.environ.get("COI_PROJECTIONS_URL") or f"sqlite:///{data_dir() / 'projections.sqlite'}"


TRANSCODER = "ledger.store.transcoder:StateTranscoder"
MAPPER = "ledger.store.topics:LedgerMapper"


def persistence_env(url: str, writer: bool = True) -> dict[str, str]:
    """The eventsourcing environment for a database URL. A writer makes the SQLite file when
    missing; a reader makes nothing. eventsourcing never makes its table on its own: the
    application does, with the migrations (ledger/store/migrations.py)."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = sqlite_path(url)
        if not path:
            raise ConfigError(f"COI_DATABASE_URL {redact(url)!r}: expected sqlite:///path/to/ledger.sqlite")
        if path != ":memory:" and writer:
            create_private(Path(path))
            write_ahead(path)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": path,
            "SQLITE_LOCK_TIMEOUT": "10",
            "CREATE_TABLE": "n",
            "APPLICATION_RECORDER_TOPIC": "ledger.store.recorders:SQLiteLedgerRecorder",
            "TRANSCODER_TOPIC": TRANSCODER,
            "MAPPER_TOPIC": MAPPER,
        }
    if parts.scheme in POSTGRES_SCHEMES:
        if not parts.hostname or not parts.path.strip("/"):
            raise ConfigError(
                f"COI_DATABASE_URL {redact(url)!r}: expected postgresql://user@host:5432/dbname"
            )
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
            "CREATE_TABLE": "n",
            "APPLICATION_RECORDER_TOPIC": "ledger.store.recorders:PostgresLedgerRecorder",
            "TRANSCODER_TOPIC": TRANSCODER,
            "MAPPER_TOPIC": MAPPER,
        }
    raise ConfigError(f"COI_DATABASE_URL {redact(url)!r}: the scheme must be sqlite or postgresql")


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
