"""Signed checkpoints in the C2SP tlog-checkpoint form (a C2SP signed note).

Note text: the origin, the tree size and the base64 root hash, each on its own line
(optional extension lines after); then a blank line and one signature line per signer:
`— <name> base64(keyID[4] || Ed25519 signature over the text)`, keyID =
SHA-256(name || 0x0A || 0x01 || public key)[:4]. Verifiers ignore signatures from keys they
do not know, so the ledger can rotate its key and witnesses can cosign.

Keys use the Go `golang.org/x/mod/sumdb/note` encodings: a verifier key is
`name+keyidhex+base64(0x01 || public key)`; a signer key is
`PRIVATE+KEY+name+keyidhex+base64(0x01 || private seed)`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.wire.keys import public_raw

ED25519 = b"\x01"
_COSIGNATURE = b"\x04"  # a witness cosignature key's type (ledger/transparency/cosignature.py)
DASH = "\u2014"  # the em dash that starts a signature line


class NoteError(Exception):
    """A note or key that cannot be parsed or verified; the message says why."""


def typed_key_id(name: str, key_type: bytes, public: bytes) -> bytes:
    """A signed-note key ID: SHA-256(name || 0x0A || key type || public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + key_type + public).digest()[:4]


def key_id(name: str, public: bytes) -> bytes:
    return typed_key_id(name, ED25519, public)


def encode_verifier_key(name: str, key_type: bytes, public: bytes) -> str:
    """A verifier key as Go's note package writes it: name+keyidhex+base64(type || public key)."""
    kid = typed_key_id(name, key_type, public).hex()
    return f"{name}+{kid}+{base64.b64encode(key_type + public).decode()}"


def encode_signer_key(name: str, key_type: bytes, key: Ed25519PrivateKey) -> str:
    """A signer key as Go's note package writes it: PRIVATE+KEY+name+keyidhex+base64(type || seed)."""
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    kid = typed_key_id(name, key_type, public_raw(key)).hex()
    return f"PRIVATE+KEY+{name}+{kid}+{base64.b64encode(key_type + seed).decode()}"


@dataclass(frozen=True)
class NoteVerifier:
    name: str
    public: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public)

    def encode(self) -> str:
        return encode_verifier_key(self.name, ED25519, self.public)

    @classmethod
    def decode(cls, text: str) -> NoteVerifier:
        if text.lstrip().startswith("PRIVATE+KEY+"):
            # Say what it is and show none of it: the rest is the signing key's seed.
            raise NoteError(
                "this is the ledger's private signing key, not a verifier key: give its verifier "
                "key (.vkey; coi init prints it, coi trust list shows it)"
            )
        try:
            name, hex_id, b64 = text.strip().split("+", 2)  # names never contain "+"
            raw = base64.b64decode(b64, validate=True)
        except (ValueError, binascii.Error):
            raise NoteError(
                "not a verifier key: expected one line NAME+KEYID+BASE64 (a .vkey file)"
            ) from None
        if raw[:1] == _COSIGNATURE and len(raw) == 33:
            raise NoteError(
                f"verifier key for {name!r} is a witness's cosignature key (type 0x04), not a ledger's "
                "checkpoint-signing key (type 0x01): give the ledger's .vkey (coi trust export)"
            )
        if raw[:1] != ED25519 or len(raw) != 33:
            raise NoteError(f"verifier key for {name!r} is not an Ed25519 key")
        verifier = cls(name, raw[1:])
        if verifier.key_id.hex() != hex_id:
            raise NoteError(f"verifier key for {name!r}: key id {hex_id} does not match the key")
        return verifier


@dataclass(frozen=True)
class NoteSigner:
    name: str
    key: Ed25519PrivateKey

    @property
    def verifier(self) -> NoteVerifier:
        return NoteVerifier(self.name, public_raw(self.key))

    def encode(self) -> str:
        return encode_signer_key(self.name, ED25519, self.key)

    @classmethod
    def decode(cls, text: str) -> NoteSigner:
        parts = text.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("not a signer key (PRIVATE+KEY+name+keyid+base64)")
        raw = base64.b64decode(parts[4])
        if raw[:1] != ED25519 or len(raw) != 33:
            raise NoteError(f"signer key for {parts[2]!r} is not an Ed25519 key")
        return cls(parts[2], Ed25519PrivateKey.from_private_bytes(raw[1:]))


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return "\n".join(lines) + "\n"

    def sign(self, *signers: NoteSigner) -> str:
        text = self.text()
        lines = [
            f"{DASH} {s.name} {base64.b64encode(s.verifier.key_id + s.key.sign(text.encode())).decode()}\n"
            for s in signers
        ]
        return text + "\n" + "".join(lines)


def parse(note: str) -> tuple[Checkpoint, str, list[tuple[str, bytes, bytes]]]:
    """(checkpoint, signed text, [(name, key id, signature)]) of a note; raises NoteError."""
    text, sep, sigs = note.partition("\n\n")
    if not sep or not sigs.endswith("\n"):
        raise NoteError("a note is text, a blank line, then signature lines ending in a newline")
    text += "\n"
    lines = text.split("\n")[:-1]
    if len(lines) < 3:
        raise NoteError("a checkpoint has an origin, a tree size and a root hash line")
    try:
        size = int(lines[1])
        root = base64.b64decode(lines[2], validate=True)
    except (ValueError, binascii.Error):
        raise NoteError("tree size or root hash line is malformed") from None
    if size < 0 or len(root) != 32 or str(size) != lines[1]:
        raise NoteError("tree size or root hash line is malformed")
    signatures = []
    for line in sigs[:-1].split("\n"):
        prefix = f"{DASH} "
        if not line.startswith(prefix) or " " not in line[len(prefix) :]:
            raise NoteError(f"malformed signature line {line[:40]!r}")
        name, b64 = line[len(prefix) :].rsplit(" ", 1)
        try:
            raw = base64.b64decode(b64, validate=True)
        except binascii.Error:
            raise NoteError(f"signature by {name!r} is not base64") from None
        if len(raw) < 5:
            raise NoteError(f"signature by {name!r} is too short")
        signatures.append((name, raw[:4], raw[4:]))
    return Checkpoint(lines[0], size, root, tuple(lines[3:])), text, signatures


def verify(note: str, verifiers: list[NoteVerifier]) -> tuple[Checkpoint, list[str]]:
    """The checkpoint and the names of the known keys whose signatures verify; raises
    NoteError when no known key signed it (signatures by unknown keys are ignored)."""
    checkpoint, text, signatures = parse(note)
    known = {(v.name, v.key_id): v for v in verifiers}
    good = []
    for name, kid, sig in signatures:
        verifier = known.get((name, kid))
        if verifier is None:
            continue
        try:
            Ed25519PublicKey.from_public_bytes(verifier.public).verify(sig, text.encode())
        except InvalidSignature:
            raise NoteError(f"the signature by {name} (key {kid.hex()}) does not verify") from None
        good.append(name)
    if not good:
        raise NoteError("no signature by a trusted ledger key")
    return checkpoint, good
