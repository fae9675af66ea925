"""The ledger's own checkpoint-signing key, kept apart from the data it signs.

One key file per log origin, 0600, in the signer's folder: COI_SIGNER_DIR, default
`<config dir>/signer` (ledger/audit/trust.py `config_dir`); COI_LEDGER_KEY names the file
outside any such folder. Whoever can write the data folder must not find the key there, so a
key at the old place (coi-data/ledger-key, its verifier keys in coi-data/ledger-keys/) is moved
once: the private key to the signer's folder, the verifier keys into the trust store.
Keys are made only when a ledger is created (`coi init`, the demo); everywhere else a command
signs only where the key is present.

A rotation keeps the old key as "retiring" until a checkpoint is signed with both, so a
verifier that trusts the old key learns the new one from that checkpoint.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from urllib.parse import quote

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.app.config import data_dir
from ledger.app.signermemory import SignerMemory
from ledger.audit.trust import TrustStore, config_dir, fingerprint, read_keys
from ledger.store.logstore import LogStore
from ledger.transparency.checkpoint import NoteError, NoteSigner
from ledger.wire.files import read_private, write_private

NEW_ORIGIN_PREFIX = "coi-ledger.local/"


class NoLedgerKeyError(Exception):
    """This host holds no key for the log: it integrates, and does not sign."""


def origin(store: LogStore) -> str:
    """The log's name on every checkpoint, stored with the ledger; a ledger without one yet
    gets COI_LOG_ORIGIN, else a name of its own (a new ledger is a new log, never a rollback
    of an earlier one that had the same folder)."""
    return store.origin() or store.claim_origin(
        os.environ.get("COI_LOG_ORIGIN") or NEW_ORIGIN_PREFIX + secrets.token_hex(8)
    )


def signer_dir() -> Path:
    return Path(os.environ.get("COI_SIGNER_DIR") or config_dir() / "signer")


def memory(log_origin: str) -> SignerMemory:
    """The signer's memory of the last checkpoint it signed, beside its key (not in the database)."""
    return SignerMemory(key_path(log_origin).parent, log_origin)


def key_path(log_origin: str) -> Path:
    explicit = os.environ.get("COI_LEDGER_KEY")
    return Path(explicit) if explicit else signer_dir() / f"{quote(log_origin, safe='')}.key"


def _retiring_path(log_origin: str) -> Path:
    path = key_path(log_origin)
    return path.with_name(path.name + ".retiring")


def _write(path: Path, key: NoteSigner) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # the signer's folder: its alone
    write_private(path, (key.encode() + "\n").encode())


def _read(path: Path) -> NoteSigner:
    try:
        return NoteSigner.decode(read_private(path).decode())
    except (NoteError, ValueError) as exc:
        raise NoteError(f"{path}: {exc}") from None


def signers(log_origin: str) -> list[NoteSigner]:
    """The key that signs the log's checkpoints, then the retiring one while a rotation is
    not yet cosigned; raises NoLedgerKeyError when this host holds none."""
    path = key_path(log_origin)
    if not path.exists():
        _move_old_keys(log_origin)
    if not path.exists():
        raise NoLedgerKeyError(f"not signed: no ledger key here ({path})")
    found = [_read(path)]
    retiring = _retiring_path(log_origin)
    if retiring.exists():
        found.append(_read(retiring))
    return found


def signer(log_origin: str) -> NoteSigner:
    """The key that signs the log's checkpoints (NoLedgerKeyError when there is none here)."""
    return signers(log_origin)[0]


def create(store: LogStore) -> NoteSigner:
    """A new ledger's key, unless this host holds one for its origin already; its verifier
    key is recorded in this user's trust store and published with the ledger."""
    log_origin = origin(store)
    try:
        made = signer(log_origin)
    except NoLedgerKeyError:
        made = NoteSigner(log_origin, Ed25519PrivateKey.generate())
        _write(key_path(log_origin), made)
    publish(store, [made])
    TrustStore().add(log_origin, made.verifier)
    return made


def rotate(store: LogStore) -> NoteSigner:
    """A new signing key; the old one signs with it until a checkpoint carries both."""
    log_origin = origin(store)
    old = signer(log_origin)
    _write(_retiring_path(log_origin), old)
    made = NoteSigner(log_origin, Ed25519PrivateKey.generate())
    _write(key_path(log_origin), made)
    publish(store, [made])  # verifiers learn it from the checkpoint both keys sign
    return made


def retire(log_origin: str) -> None:
    """A checkpoint signed by both keys is stored: the retiring key's work is done."""
    _retiring_path(log_origin).unlink(missing_ok=True)


def publish(store: LogStore, keys: list[NoteSigner]) -> None:
    """Publish with the ledger the verifier keys of the keys that sign it (idempotent)."""
    store.add_ledger_keys([k.verifier.encode() for k in keys])


def move_old_keys(store: LogStore) -> None:
    """What every writer does on start: keys at the old place are moved (see _move_old_keys)."""
    log_origin = store.origin()
    if log_origin is not None:
        _move_old_keys(log_origin)


def _move_old_keys(log_origin: str) -> None:
    """Once: a key at the old place beside the data (coi-data/ledger-key) goes to the signer's
    folder, and the verifier keys beside it (coi-data/ledger-keys/) into the trust store."""
    old = data_dir() / "ledger-key"
    if os.environ.get("COI_LEDGER_KEY") or not old.exists():
        return
    moved = _read(old)
    if moved.name != log_origin:
        return  # not this log's key: leave it for the operator
    target = key_path(log_origin)
    _write(target, moved)
    old.unlink()
    print(
        f"coi: moved the ledger key from {old} to {target} (it must not live beside the data)",
        file=sys.stderr,
    )
    trust = TrustStore()
    keys = [moved.verifier]
    folder = data_dir() / "ledger-keys"
    for file in sorted(folder.glob("*.vkey")) if folder.exists() else []:
        keys.extend(k for k in read_keys(file) if k.name == log_origin and k not in keys)
        file.unlink()
    for key in keys:
        if trust.add(log_origin, key):
            print(
                f"coi: TRUSTED for {log_origin}: {fingerprint(key)} (moved into {trust.path})",
                file=sys.stderr,
            )
    if folder.exists() and not any(folder.iterdir()):
        folder.rmdir()
