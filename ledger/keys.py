"""Ed25519 key files.

A key file is one JSON document: the principal it belongs to, its keyid, the public key
and the PKCS#8 PEM private key. A person's private key is encrypted with a passphrase
(key file + passphrase = the two components of Part 11.200); device and site-system keys
may be unencrypted files readable only by their owner (0600).
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.dsse import Signer

PASSPHRASE_ENV = "COI_KEY_PASSPHRASE"  # noqa: S105 - the name of a variable


class PublicKeyFile(msgspec.Struct, forbid_unknown_fields=True):
    """What an administrator needs to register a key: never the private part."""

    principal_id: str
    printed_name: str
    kind: str
    keyid: str
    public_key: str


class KeyFile(msgspec.Struct, forbid_unknown_fields=True):
    principal_id: str
    printed_name: str
    kind: str
    keyid: str
    public_key: str
    encrypted: bool
    private_key_pem: str


class KeyFileError(Exception):
    """A key file that cannot be used; the message says what to do."""


def keyid_for(principal_id: str, public_raw: bytes) -> str:
    """`principal:fingerprint`, so a verifier finds the principal without a global index."""
    return f"{principal_id}:{hashlib.sha256(public_raw).hexdigest()[:16]}"


def public_raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_file_for(
    key: Ed25519PrivateKey, principal_id: str, printed_name: str, kind: str, passphrase: bytes | None
) -> KeyFile:
    """The file form of a key; encrypted under `passphrase` when one is given."""
    raw = public_raw(key)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    return KeyFile(
        principal_id=principal_id,
        printed_name=printed_name,
        kind=kind,
        keyid=keyid_for(principal_id, raw),
        public_key=base64.b64encode(raw).decode(),
        encrypted=passphrase is not None,
        private_key_pem=pem.decode(),
    )


def write_key_file(path: Path, key_file: KeyFile) -> Path:
    """Writes FILE (private, 0600) and FILE.pub (public part, to hand to an administrator)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(msgspec.json.format(msgspec.json.encode(key_file)))
    os.chmod(path, 0o600)
    pub_path = path.with_name(path.name + ".pub")
    public = PublicKeyFile(
        key_file.principal_id, key_file.printed_name, key_file.kind, key_file.keyid, key_file.public_key
    )
    pub_path.write_bytes(msgspec.json.format(msgspec.json.encode(public)))
    return pub_path


def read_public(path: Path) -> PublicKeyFile:
    """Reads either a .pub file or a full key file and returns the public part."""
    try:
        data = msgspec.json.decode(path.read_bytes())
        data.pop("encrypted", None)
        data.pop("private_key_pem", None)
        return msgspec.convert(data, PublicKeyFile)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError, AttributeError) as exc:
        raise KeyFileError(f"{path}: not a coi key file ({exc})") from None


def ask_passphrase(prompt: str) -> bytes:
    """From COI_KEY_PASSPHRASE when set (automation), else asked on the terminal."""
    env = os.environ.get(PASSPHRASE_ENV)
    if env:
        return env.encode()
    try:
        # Without a terminal getpass reads standard input, which may be the body being signed.
        with open("/dev/tty"):
            pass
    except OSError:
        raise KeyFileError(f"no terminal to ask for the passphrase on; set {PASSPHRASE_ENV}") from None
    try:
        return getpass.getpass(prompt).encode()
    except EOFError:
        raise KeyFileError("no passphrase given") from None


@dataclass(frozen=True)
class LoadedKey:
    """A key file opened for signing: who it belongs to and the usable signer."""

    principal_id: str
    printed_name: str
    kind: str
    signer: Signer


def load_key(path: Path, passphrase: bytes | None = None) -> LoadedKey:
    """Loads a key file for signing, asking for the passphrase when it is encrypted."""
    try:
        key_file = msgspec.json.decode(path.read_bytes(), type=KeyFile)
    except (OSError, msgspec.DecodeError) as exc:
        raise KeyFileError(f"{path}: cannot read key file ({exc})") from None
    if key_file.encrypted and passphrase is None:
        passphrase = ask_passphrase(f"Passphrase for {key_file.principal_id} ({path}): ")
    try:
        key = serialization.load_pem_private_key(
            key_file.private_key_pem.encode(), password=passphrase if key_file.encrypted else None
        )
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: cannot decrypt the private key ({exc}); check the passphrase") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 key")
    return LoadedKey(
        key_file.principal_id, key_file.printed_name, key_file.kind, Signer(keyid=key_file.keyid, key=key)
    )
