"""The ledger's own checkpoint-signing key and the verifier keys an auditor trusts.

The private key lives in a 0600 file outside the database (COI_LEDGER_KEY, default
coi-data/ledger-key); every key the ledger ever used is kept as a verifier key in
coi-data/ledger-keys/*.vkey, so checkpoints signed before a rotation stay verifiable. Trusting
keys from files, never from the database, is what makes a forged checkpoint row evident.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.app.config import data_dir
from ledger.transparency.checkpoint import NoteError, NoteSigner, NoteVerifier, read_verifier_files
from ledger.wire.files import read_private, write_private

DEFAULT_ORIGIN = "coi-ledger.local/log"


def origin() -> str:
    """The log's name on every checkpoint: one per ledger instance (e.g. per region)."""
    return os.environ.get("COI_LOG_ORIGIN", DEFAULT_ORIGIN)


def key_path() -> Path:
    return Path(os.environ.get("COI_LEDGER_KEY") or data_dir() / "ledger-key")


def verifier_dir() -> Path:
    return data_dir() / "ledger-keys"


def _write_private(path: Path, signer: NoteSigner) -> None:
    write_private(path, (signer.encode() + "\n").encode())
    folder = verifier_dir()
    folder.mkdir(parents=True, exist_ok=True)
    verifier = signer.verifier
    (folder / f"{verifier.key_id.hex()}.vkey").write_text(verifier.encode() + "\n")


def signer(create: bool = True) -> NoteSigner:
    """The ledger's signing key, made on first use."""
    path = key_path()
    if path.exists():
        try:
            return NoteSigner.decode(read_private(path).decode())
        except (NoteError, ValueError) as exc:
            raise NoteError(f"{path}: {exc}") from None
    if not create:
        raise NoteError(f"no ledger key at {path}; the ledger signs its first checkpoint with a new one")
    made = NoteSigner(origin(), Ed25519PrivateKey.generate())
    _write_private(path, made)
    return made


def rotate() -> NoteSigner:
    """A new signing key; the old one stays trusted for what it signed."""
    made = NoteSigner(origin(), Ed25519PrivateKey.generate())
    _write_private(key_path(), made)
    return made


def trusted(extra: list[Path] | None = None) -> list[NoteVerifier]:
    """Verifier keys from coi-data/ledger-keys plus any files given (one key per line)."""
    files = sorted(verifier_dir().glob("*.vkey")) if verifier_dir().exists() else []
    return read_verifier_files([*files, *(extra or [])])
