"""The small SQL layer the ledger's own tables share (claims, Merkle log, projections):
database URLs, the two engines' differences, and the integration lock."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

POSTGRES_SCHEMES = ("postgres", "postgresql")
# pg_advisory_xact_lock's key for "integrating the Merkle log" (any fixed 64-bit number
# the ledger's database uses for nothing else): b"coi-log!" as an integer.
LOG_LOCK_KEY = int.from_bytes(b"coi-log!", "big", signed=True)


def is_postgres(url: str) -> bool:
    return urlsplit(url).scheme in POSTGRES_SCHEMES


def sqlite_path(url: str) -> str:
    """The file of a `sqlite:///PATH` URL ("" when it names none)."""
    parts = urlsplit(url)
    return unquote(parts.path.removeprefix("/")) if parts.netloc == "" else parts.netloc + parts.path


def placeholders(text: str, postgres: bool) -> str:
    """`text` (written with `?`) with the engine's placeholders."""
    return text.replace("?", "%s") if postgres else text
