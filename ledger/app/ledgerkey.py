"""The ledger's own checkpoint-signing key, kept apart from the data it signs.

One key file per log origin, 0600, in the signer's folder: COI_SIGNER_DIR, default
`<config dir>/signer` (ledger/audit/trust.py `config_dir`); COI_LEDGER_KEY names the file
outside any such folder. Whoever can write the data folder must not find the key there, so a
key at the old place (coi-data/ledger-key, its verifier keys in coi-data/ledger-keys/) is moved
once: the private key to the signer's folder, the verifier keys into the trust store. Whoever
can write the data folder could plant a key there too, so the move never replaces a key, and
takes only a key that signed the log's latest checkpoint (and the last one the signer
remembers) and that the trust store does not contradict; verifier keys are trusted only for
an origin the trust store holds no key for yet.
Keys are made only when a ledger is created (`coi init`, the demo); everywhere else a command
signs only where the key is present.

A rotation is staged: the old key is kept as "retiring" and signs every checkpoint beside the
new one, so witnesses that know only the old key keep cosigning and verifiers that trust it
learn the new one, until the operator, having given the new key to the witnesses, retires it.
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
from ledger.audit.trust import TrustError, TrustStore, config_dir, read_keys
from ledger.store.logstore import LogStore
from ledger.transparency.checkpoint import NoteError, NoteSigner, NoteVerifier
from ledger.transparency.checkpoint import verify as verify_note
from ledger.wire.files import ExposedFileError, read_private, write_private

NEW_ORIGIN_PREFIX = "coi-ledger.local/"


class NoLedgerKeyError(Exception):
    """This host holds no key for the log: it integrates, and does not sign."""


class OriginInUseError(Exception):
    """A new ledger would take an origin this signer already signed checkpoints of."""


def origin(store: LogStore) -> str:
    """The log's name on every checkpoint, stored with the ledger; a ledger without one yet
    gets COI_LOG_ORIGIN, else a name of its own (a new ledger is a new log, never a rollback
    of an earlier one that had the same folder)."""
    return store.origin() or store.claim_origin(_proposed_origin())


def _proposed_origin() -> str:
    return os.environ.get("COI_LOG_ORIGIN") or NEW_ORIGIN_PREFIX + secrets.token_hex(8)


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
    """The key that signs the log's checkpoints, then the retiring one while a rotation is in
    progress; raises NoLedgerKeyError when this host holds none."""
    path = key_path(log_origin)
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
    key is recorded in this user's trust store and published with the ledger. Refuses
    (OriginInUseError) an empty ledger under an origin this signer already signed: its
    checkpoints could never be signed, and it would read as a rollback of that log."""
    log_origin = store.origin() or _proposed_origin()
    if store.latest_checkpoint() is None:
        _refuse_signed_origin(log_origin)
    log_origin = store.claim_origin(log_origin)
    try:
        made = signer(log_origin)
    except NoLedgerKeyError:
        made = NoteSigner(log_origin, Ed25519PrivateKey.generate())
        _write(key_path(log_origin), made)
    publish(store, [made])
    TrustStore().add(log_origin, made.verifier)
    return made


def _refuse_signed_origin(log_origin: str) -> None:
    remembered = memory(log_origin)
    if not remembered.path.exists():
        return
    with remembered.holding() as head:
        if head is None:
            return
    raise OriginInUseError(
        f"this signer already signed the log {log_origin} up to tree size {head.size} "
        f"({remembered.path}): a new ledger under that origin could never be signed, and would read "
        "as a rollback of that log. Set another COI_LOG_ORIGIN, or unset it and the new ledger gets "
        "an origin of its own; to go on with that log, restore its database instead"
    )


class RotationError(Exception):
    """A rotation step asked for at the wrong time (none in progress, or one already is)."""


def rotate(store: LogStore) -> NoteSigner:
    """A new signing key, trusted here at once (this operator made it); the old one signs
    beside it until retire_old_key."""
    log_origin = origin(store)
    try:
        old = signer(log_origin)
    except NoLedgerKeyError:
        raise NoLedgerKeyError(
            f"cannot rotate the ledger key: no ledger key here ({key_path(log_origin)}); "
            "rotate it on the host that signs the log's checkpoints"
        ) from None
    if rotating(log_origin):
        # a second rotation would overwrite the retiring key that witnesses still know
        raise RotationError(
            f"a rotation of the ledger key is in progress already ({_retiring_path(log_origin)}): give "
            "the new verifier key (coi trust export) to the witnesses, then coi checkpoint --retire-old-key"
        )
    _write(_retiring_path(log_origin), old)
    made = NoteSigner(log_origin, Ed25519PrivateKey.generate())
    _write(key_path(log_origin), made)
    publish(store, [made])  # verifiers learn it from the checkpoints both keys sign
    TrustStore().add(log_origin, made.verifier)
    return made


def rotating(log_origin: str) -> bool:
    """A rotation is in progress: the old and the new key sign every checkpoint."""
    return _retiring_path(log_origin).exists()


def retire_old_key(store: LogStore) -> NoteVerifier:
    """Stop signing with the rotation's old key (returned); RotationError when no rotation is in
    progress, or no checkpoint signed by both keys is stored yet (verifiers that trust only the
    old key could never learn the new one)."""
    log_origin = origin(store)
    if not rotating(log_origin):
        raise RotationError(
            "no rotation of the ledger key is in progress: start one with coi checkpoint --rotate-key"
        )
    new, old = signers(log_origin)
    latest = store.latest_checkpoint()
    if latest is None or not (_signs(latest.note, new.verifier) and _signs(latest.note, old.verifier)):
        raise RotationError(
            "no checkpoint signed by both the old and the new key yet, so verifiers that trust only the "
            "old key could not learn the new one; the next record brings one: retire the old key after it"
        )
    _retiring_path(log_origin).unlink()
    return old.verifier


def publish(store: LogStore, keys: list[NoteSigner]) -> None:
    """Publish with the ledger the verifier keys of the keys that sign it (idempotent)."""
    store.add_ledger_keys([k.verifier.encode() for k in keys])


def move_old_keys(store: LogStore) -> None:
    """What every writer does on start, and a signer before it signs: keys at the old place
    beside the data are moved, if that is safe (see _move_key and _trust_old_vkeys)."""
    log_origin = store.origin()
    if log_origin is None or os.environ.get("COI_LEDGER_KEY"):
        return
    trust = TrustStore()
    trusted = trust.keys(log_origin)
    _move_key(store, log_origin, trusted, trust)
    _trust_old_vkeys(log_origin, trusted, trust)


def _move_key(store: LogStore, log_origin: str, trusted: list[NoteVerifier], trust: TrustStore) -> None:
    """The private key at the old place (coi-data/ledger-key) to the signer's folder, once."""
    old = data_dir() / "ledger-key"
    if not old.exists():
        return
    try:
        moved = _read(old)
    except (NoteError, OSError, ExposedFileError) as exc:
        print(f"coi: WARNING: the key at {old} is not used nor moved: {exc}", file=sys.stderr)
        return
    if moved.name != log_origin:
        return  # not this log's key: leave it for the operator
    target = key_path(log_origin)
    refusal = _why_not_move(store, moved, trusted)
    if refusal:
        print(
            f"coi: WARNING: the key at {old} is not used nor moved to {target}: {refusal}. A key "
            "beside the data may have been put there by anyone who can write the data folder; "
            f"if you did not, keep {old} as evidence and do not trust it",
            file=sys.stderr,
        )
        return
    _write(target, moved)
    old.unlink()
    print(
        f"coi: moved the ledger key from {old} to {target} (it must not live beside the data)",
        file=sys.stderr,
    )
    if not trusted and trust.add(log_origin, moved.verifier):
        print(
            f"coi: TRUSTED for {log_origin}: key {moved.verifier.key_id.hex()} (moved into {trust.path}; "
            "it signs the log's latest checkpoint)",
            file=sys.stderr,
        )


def _why_not_move(store: LogStore, moved: NoteSigner, trusted: list[NoteVerifier]) -> str | None:
    """Why moving `moved` would be unsafe (None: it is safe): a key is never replaced, and the
    one moved must be the key that signed the log so far, as far as anything here tells."""
    log_origin = moved.name
    kid = moved.verifier.key_id.hex()
    if key_path(log_origin).exists() or _retiring_path(log_origin).exists():
        return f"the signer's folder holds a key for {log_origin} already, and a key is never replaced"
    if trusted and moved.verifier not in trusted:
        ids = ", ".join(k.key_id.hex() for k in trusted)
        return f"your trust store trusts other keys for {log_origin} (key ids {ids}), not key {kid}"
    remembered = memory(log_origin)
    if remembered.path.exists():
        with remembered.holding() as head:
            if head is not None and not _signs(head.note, moved.verifier):
                return f"key {kid} did not sign the last checkpoint this signer remembers ({remembered.path})"
    latest = store.latest_checkpoint()
    if latest is not None and not _signs(latest.note, moved.verifier):
        return f"key {kid} did not sign the ledger's latest checkpoint (tree size {latest.size})"
    return None


def _trust_old_vkeys(log_origin: str, trusted: list[NoteVerifier], trust: TrustStore) -> None:
    """Verifier keys at the old place (coi-data/ledger-keys/*.vkey) go to the trust store only
    while it holds no key for the log (said loudly); otherwise they are ignored (said too)."""
    folder = data_dir() / "ledger-keys"
    files = sorted(folder.glob("*.vkey")) if folder.exists() else []
    if not files:
        return
    if trusted:
        print(
            f"coi: WARNING: ignored the verifier keys in {folder}: your trust store ({trust.path}) "
            f"holds the keys of {log_origin} already, and keys beside the data are never trusted "
            "over them; delete that folder if you put nothing there",
            file=sys.stderr,
        )
        return
    for file in files:
        try:
            keys = read_keys(file)
        except TrustError as exc:
            print(f"coi: WARNING: ignored {exc}", file=sys.stderr)
            continue
        for key in keys:
            if key.name == log_origin and trust.add(log_origin, key):
                print(
                    f"coi: TRUSTED for {log_origin}: key {key.key_id.hex()}, read from {file} beside the "
                    f"data (moved into {trust.path}); check the key id with the log's operator",
                    file=sys.stderr,
                )
        file.unlink()
    if not any(folder.iterdir()):
        folder.rmdir()


def _signs(note: str, key: NoteVerifier) -> bool:
    try:
        verify_note(note, [key])
    except NoteError:
        return False
    return True
