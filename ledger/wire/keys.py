"""Ed25519 key files.

A key file is one JSON document: the principal it belongs to, its keyid and public key, and
the private key. A person's private key is encrypted with a passphrase (key file +
passphrase = the two components of Part 11.200); device and site-system keys may be
unencrypted (PKCS#8 PEM). Every key file is readable only by its owner (0600).

Version 2 (written today) seals an encrypted key's raw 32-byte seed with ChaCha20-Poly1305
under a key scrypt derives from the passphrase; version 1 files (PKCS#8 PEM, PBKDF2 with
2,048 iterations, cheap to guess) are still read.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ledger.wire.dsse import Signer
from ledger.wire.files import read_private, write_private

PASSPHRASE_ENV = "COI_KEY_PASSPHRASE"  # noqa: S105 - the name of a variable

# scrypt's cost: about 0.1-0.3 s and 32 MiB per guess. A file may ask for more work, within
# bounds: below them a stolen file is cheap to guess, above them one file could make us spend
# gigabytes of memory on a derivation.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_SCRYPT_BOUNDS = {"n": (2**15, 2**20), "r": (8, 32), "p": (1, 4)}

MIN_PASSPHRASE, MIN_DISTINCT = 12, 6


class PublicKeyFile(msgspec.Struct, forbid_unknown_fields=True):
    """What an administrator needs to register a key: never the private part."""

    principal_id: str
    printed_name: str
    kind: str
    keyid: str
    public_key: str


class Sealed(msgspec.Struct, forbid_unknown_fields=True):
    """A private key's seed encrypted under a passphrase (all bytes in base64)."""

    kdf: Literal["scrypt"]
    n: int
    r: int
    p: int
    salt: str
    aead: Literal["chacha20-poly1305"]
    nonce: str
    ciphertext: str  # seed and tag; the keyid is the associated data


class KeyFile(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    principal_id: str
    printed_name: str
    kind: str
    keyid: str
    public_key: str
    encrypted: bool
    version: int = 1
    private_key_pem: str | None = None  # version 1, and unencrypted keys
    sealed: Sealed | None = None  # version 2 encrypted keys


class KeyFileError(Exception):
    """A key file that cannot be used; the message says what to do."""


class WrongPassphraseError(KeyFileError):
    """The passphrase does not open the key: counted and reported (ledger/site/attempts.py)."""


def keyid_for(principal_id: str, public_raw: bytes) -> str:
    """`principal:fingerprint`, so a verifier finds the principal without a global index."""
    return f"{principal_id}:{hashlib.sha256(public_raw).hexdigest()[:16]}"


def public_raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def check_passphrase(passphrase: bytes, principal_id: str) -> None:
    """A person's new passphrase: long, not one or two characters repeated, and not their own
    id (NIST SP 800-63B 5.1.1.2). A few unrelated words make a good one."""
    text = passphrase.decode("utf-8", "replace")
    if len(text) < MIN_PASSPHRASE:
        raise KeyFileError(
            f"a passphrase needs at least {MIN_PASSPHRASE} characters; try a few unrelated words"
        )
    if len(set(text)) < MIN_DISTINCT:
        raise KeyFileError(f"a passphrase needs at least {MIN_DISTINCT} different characters")
    if principal_id.lower() in text.lower():
        raise KeyFileError(f"a passphrase must not contain the principal id {principal_id}")


def _scrypt(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)


def _seal(seed: bytes, passphrase: bytes, keyid: str) -> Sealed:
    salt, nonce = os.urandom(16), os.urandom(12)
    key = _scrypt(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    ciphertext = ChaCha20Poly1305(key).encrypt(nonce, seed, keyid.encode())
    b64 = base64.b64encode
    return Sealed(
        "scrypt", SCRYPT_N, SCRYPT_R, SCRYPT_P, b64(salt).decode(), "chacha20-poly1305",
        b64(nonce).decode(), b64(ciphertext).decode(),
    )  # fmt: skip


def _unseal(sealed: Sealed, passphrase: bytes, keyid: str, path: Path) -> Ed25519PrivateKey:
    for name, (low, high) in _SCRYPT_BOUNDS.items():
        value = getattr(sealed, name)
        if not low <= value <= high:
            raise KeyFileError(f"{path}: sealed.{name} is {value}, outside {low}..{high}; not a coi key file")
    try:
        salt, nonce, ciphertext = (
            base64.b64decode(v) for v in (sealed.salt, sealed.nonce, sealed.ciphertext)
        )
        key = _scrypt(passphrase, salt, sealed.n, sealed.r, sealed.p)
        seed = ChaCha20Poly1305(key).decrypt(nonce, ciphertext, keyid.encode())
        return Ed25519PrivateKey.from_private_bytes(seed)
    except InvalidTag:
        raise WrongPassphraseError(f"{path}: cannot decrypt the private key; check the passphrase") from None
    except ValueError as exc:  # bad base64, a nonce or seed of the wrong size
        raise KeyFileError(f"{path}: the sealed private key is damaged ({exc})") from None


def key_file_for(
    key: Ed25519PrivateKey, principal_id: str, printed_name: str, kind: str, passphrase: bytes | None
) -> KeyFile:
    """The file form of a key; sealed under `passphrase` when one is given."""
    raw = public_raw(key)
    keyid = keyid_for(principal_id, raw)
    pem = sealed = None
    if passphrase:
        seed = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        sealed = _seal(seed, passphrase, keyid)
    else:
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
    return KeyFile(
        principal_id=principal_id,
        printed_name=printed_name,
        kind=kind,
        keyid=keyid,
        public_key=base64.b64encode(raw).decode(),
        encrypted=sealed is not None,
        version=2,
        private_key_pem=pem,
        sealed=sealed,
    )


def write_key_file(path: Path, key_file: KeyFile) -> Path:
    """Writes FILE (private, 0600) and FILE.pub (public part, to hand to an administrator)."""
    write_private(path, msgspec.json.format(msgspec.json.encode(key_file)))
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
        for private in ("encrypted", "version", "private_key_pem", "sealed"):
            data.pop(private, None)
        return msgspec.convert(data, PublicKeyFile)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError, AttributeError) as exc:
        raise KeyFileError(f"{path}: not a coi key file ({exc})") from None


def ask_passphrase(prompt: str, kind: str, fd: int | None = None) -> bytes:
    """The passphrase for a key of this `kind`: one line read from descriptor `fd` when given
    (automation, tests), else COI_KEY_PASSPHRASE for devices and site systems, else asked on
    the terminal. A person's passphrase never comes from the environment: it would stay there
    for a whole shell, one component of Part 11.200 standing in for both."""
    if fd is not None:
        return read_passphrase_fd(fd)
    env = os.environ.get(PASSPHRASE_ENV)
    if env and kind == "person":
        raise KeyFileError(
            f"{PASSPHRASE_ENV} is for device and site-system keys only; unset it, and type a "
            "person's passphrase when asked, or give it on a descriptor with --passphrase-fd N"
        )
    if env:
        return env.encode()
    try:
        # Without a terminal getpass reads standard input, which may be the body being signed.
        with open("/dev/tty"):
            pass
    except OSError:
        raise KeyFileError(
            "no terminal to ask for the passphrase on; give it on a descriptor with --passphrase-fd N"
        ) from None
    try:
        return getpass.getpass(prompt).encode()
    except EOFError:
        raise KeyFileError("no passphrase given") from None


def read_passphrase_fd(fd: int) -> bytes:
    """One line from descriptor `fd`, without its line end. Read a byte at a time: the next
    prompt (a second key, a repeated passphrase) reads the next line from the same descriptor."""
    line = bytearray()
    try:
        while (byte := os.read(fd, 1)) not in (b"", b"\n"):
            line += byte
    except OSError as exc:
        raise KeyFileError(f"--passphrase-fd {fd}: cannot read it ({exc.strerror})") from None
    if not line:
        raise KeyFileError(f"--passphrase-fd {fd}: no passphrase on it (one line per key)")
    return bytes(line.removesuffix(b"\r"))


@dataclass(frozen=True)
class LoadedKey:
    """A key file opened for signing: who it belongs to and the usable signer."""

    principal_id: str
    printed_name: str
    kind: str
    signer: Signer


def load_key(path: Path, passphrase: bytes | None = None, fd: int | None = None) -> LoadedKey:
    """Loads a key file for signing, asking for the passphrase when it is encrypted (read from
    descriptor `fd` when given)."""
    try:
        key_file = msgspec.json.decode(read_private(path), type=KeyFile)
    except (OSError, msgspec.DecodeError) as exc:
        raise KeyFileError(f"{path}: cannot read key file ({exc})") from None
    if key_file.encrypted and passphrase is None:
        passphrase = ask_passphrase(f"Passphrase for {key_file.principal_id} ({path}): ", key_file.kind, fd)
    if key_file.sealed is not None and key_file.encrypted:
        key = _unseal(key_file.sealed, passphrase or b"", key_file.keyid, path)
    elif key_file.private_key_pem is not None and key_file.sealed is None:
        key = _load_pem(key_file, passphrase, path)
    else:
        raise KeyFileError(f"{path}: expected either a sealed or a PEM private key, as `encrypted` says")
    if base64.b64encode(public_raw(key)).decode() != key_file.public_key:
        raise KeyFileError(f"{path}: the private key does not match the file's public_key")
    return LoadedKey(
        key_file.principal_id, key_file.printed_name, key_file.kind, Signer(keyid=key_file.keyid, key=key)
    )


def _load_pem(key_file: KeyFile, passphrase: bytes | None, path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(
            str(key_file.private_key_pem).encode(), password=passphrase if key_file.encrypted else None
        )
    except (ValueError, TypeError) as exc:
        raise WrongPassphraseError(
            f"{path}: cannot decrypt the private key ({exc}); check the passphrase"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 key")
    return key
