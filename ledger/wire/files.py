"""Files only their owner may read: private keys, the ledger's databases, verifier state;
files written whole or not at all; zips that are the same bytes for the same contents.

Modes are set when a file is created (0600), whatever the umask, and a private key that
others can read is refused with the command that fixes it, as ssh does.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import zipfile
from collections.abc import Iterable
from pathlib import Path

PRIVATE = 0o600


class ExposedFileError(Exception):
    """A private file others can read or write; the message says how to fix it."""


def create_private(path: Path) -> None:
    """An empty file at `path`, 0600, unless one is there (SQLite then opens it, and gives
    its journal and WAL files the database file's mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE))


def write_private(path: Path, data: bytes) -> None:
    """Writes `path` with mode 0600, also when it existed with a wider mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(fd, PRIVATE)
        out.write(data)


def read_private(path: Path) -> bytes:
    """The bytes of a private key file, refused when group or others have any access to it."""
    with path.open("rb") as f:
        mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
        if mode & 0o077:
            raise ExposedFileError(
                f"{path} is a private key that others can access (mode {mode:04o}); "
                f"make it its owner's alone: chmod 600 {path}"
            )
        return f.read()


def write_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Writes `path` whole or not at all: a file beside it, flushed to disk, renamed over it,
    and the rename flushed, so a reader (or a crash) sees the old contents or the new, never a
    part. `mode` (e.g. PRIVATE) is the file's whatever the umask; None: as the umask gives."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666 if mode is None else mode)
        with os.fdopen(fd, "wb") as out:
            if mode is not None:
                os.fchmod(fd, mode)
            out.write(data)
            out.flush()
            os.fsync(fd)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _sync_folder(path.parent)


def write_new(path: Path, data: bytes) -> bool:
    """Creates `path` with `data`, never over an existing file: False, writing nothing, when
    the name is taken. The file appears whole (written beside it, flushed, then linked to its
    name) and durable (the folder flushed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with partial.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(partial, path)
        except FileExistsError:
            return False
    finally:
        partial.unlink(missing_ok=True)
    _sync_folder(path.parent)
    return True


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# A fixed time for every entry of the zips the ledger writes: the same contents make the same
# bytes (zip's own epoch; a zip cannot say an earlier time).
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def fixed_zip(files: Iterable[tuple[str, bytes]]) -> bytes:
    """A deflated zip of `files` (name, bytes), in the order given, the same bytes each time."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files:
            z.writestr(zipfile.ZipInfo(name, _ZIP_TIME), data, zipfile.ZIP_DEFLATED)
    return out.getvalue()
