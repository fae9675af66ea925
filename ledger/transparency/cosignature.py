"""Witness cosignatures: C2SP tlog-cosignature `cosignature/v1` with Ed25519.

A cosignature is a note signature line on a checkpoint,
`— <name> base64(keyID[4] || u64 big-endian timestamp || Ed25519 signature)`, with
keyID = SHA-256(name || 0x0A || 0x04 || public key)[:4], over the message
`cosignature/v1\\ntime <timestamp>\\n` followed by the checkpoint's note text (its lines and
their final newline, no signature lines). It says: at that time, this was the largest tree
consistent with what the witness had seen of the log.

Keys use the encodings of Go's transparency-dev/formats `note` package: a verifier key
`name+keyidhex+base64(0x04 || public key)`, a signer key
`PRIVATE+KEY+name+keyidhex+base64(0x04 || seed)`. Unlike that package, a plain Ed25519 note key
(type 0x01) is refused: here such keys are ledgers' checkpoint-signing keys, and a witness that
signed with one, or a verifier that counted one as a witness, would let the ledger vouch for
itself.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.transparency.checkpoint import (
    DASH,
    ED25519,
    NoteError,
    encode_signer_key,
    encode_verifier_key,
    parse,
    typed_key_id,
)
from ledger.wire.keys import public_raw

COSIGNATURE_V1 = b"\x04"
_SIGNATURE_BYTES = 8 + 64  # timestamp || Ed25519 signature
_MAX_TIMESTAMP = 2**63 - 1


def signed_message(timestamp: int, text: str) -> bytes:
    """What a cosignature/v1 signs: the header and time lines, then the checkpoint's text."""
    if text.count("\n") < 2:  # as the Go package: origin, size and root at least
        raise NoteError("a cosigned note has at least an origin, a tree size and a root hash line")
    return f"cosignature/v1\ntime {timestamp}\n{text}".encode()


def _valid_name(name: str) -> bool:
    return 0 < len(name.encode()) <= 255 and "+" not in name and not any(ch.isspace() for ch in name)


def _key_line(text: str) -> str:
    """The one key line of a key file (`#` comment lines and blank lines aside)."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return lines[0] if len(lines) == 1 else text.strip()


def _decode_key(text: str, private: bool) -> tuple[str, bytes]:
    """(name, raw key) of a vkey or skey of type 0x04, checking its key ID."""
    what = "witness signer key (PRIVATE+KEY+NAME+KEYID+BASE64)" if private else "witness verifier key"
    text = _key_line(text)
    if private:
        if not text.startswith("PRIVATE+KEY+"):
            hint = " (this is a public verifier key)" if text.count("+") >= 2 and "\n" not in text else ""
            raise NoteError(f"not a {what}{hint}: give the private key file coi witness keygen wrote")
        text = text.removeprefix("PRIVATE+KEY+")
    parts = text.split("+", 2)  # a name has no "+"; base64 may
    if len(parts) != 3 or not _valid_name(parts[0]) or len(parts[1]) != 8:
        raise NoteError(f"not a {what}: expected one line NAME+KEYID+BASE64")
    name, hex_id, b64 = parts
    try:
        raw = base64.b64decode(b64, validate=True)
    except binascii.Error:
        raise NoteError(f"{what} for {name!r}: the key is not base64") from None
    if raw[:1] == ED25519 and len(raw) == 33:
        raise NoteError(
            f"{what} for {name!r} is a ledger's checkpoint-signing key (type 0x01), not a witness's "
            "cosignature key (type 0x04): a witness signs with its own key (coi witness keygen)"
        )
    if raw[:1] != COSIGNATURE_V1 or len(raw) != 33:
        raise NoteError(f"{what} for {name!r} is not an Ed25519 cosignature (type 0x04) key")
    public = raw[1:]
    if private:
        public = public_raw(Ed25519PrivateKey.from_private_bytes(raw[1:]))
    if hex_id != typed_key_id(name, COSIGNATURE_V1, public).hex():
        raise NoteError(f"{what} for {name!r}: key id {hex_id} does not match the key")
    return name, raw[1:]


@dataclass(frozen=True)
class Cosigned:
    """A valid cosignature found on a note: whose, and when the witness made it."""

    name: str
    key_id: bytes
    timestamp: int


@dataclass(frozen=True)
class CosignatureVerifier:
    name: str
    public: bytes

    @property
    def key_id(self) -> bytes:
        return typed_key_id(self.name, COSIGNATURE_V1, self.public)

    def encode(self) -> str:
        return encode_verifier_key(self.name, COSIGNATURE_V1, self.public)

    @classmethod
    def decode(cls, text: str) -> CosignatureVerifier:
        if text.lstrip().startswith("PRIVATE+KEY+"):
            raise NoteError("this is a witness's private key, not its verifier key: give the .vkey file")
        return cls(*_decode_key(text, private=False))

    def timestamp(self, text: str, signature: bytes) -> int | None:
        """The cosignature's time if `signature` (after the key ID) is this key's over `text`."""
        if len(signature) != _SIGNATURE_BYTES:
            return None
        (timestamp,) = struct.unpack(">Q", signature[:8])
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(
                signature[8:], signed_message(timestamp, text)
            )
        except InvalidSignature:
            return None
        return int(timestamp)


@dataclass(frozen=True)
class Cosigner:
    name: str
    key: Ed25519PrivateKey

    @classmethod
    def generate(cls, name: str) -> Cosigner:
        if not _valid_name(name):
            raise NoteError(f"witness name {name!r}: no spaces or '+', at most 255 bytes")
        return cls(name, Ed25519PrivateKey.generate())

    @property
    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self.name, public_raw(self.key))

    def encode(self) -> str:
        return encode_signer_key(self.name, COSIGNATURE_V1, self.key)

    @classmethod
    def decode(cls, text: str) -> Cosigner:
        name, seed = _decode_key(text, private=True)
        return cls(name, Ed25519PrivateKey.from_private_bytes(seed))

    def line(self, text: str, timestamp: int) -> str:
        """The cosignature line on a checkpoint whose note text is `text`."""
        if not 0 < timestamp <= _MAX_TIMESTAMP:
            raise NoteError(f"a cosignature's timestamp must be positive, not {timestamp}")
        signature = self.key.sign(signed_message(timestamp, text))
        raw = self.verifier.key_id + struct.pack(">Q", timestamp) + signature
        return f"{DASH} {self.name} {base64.b64encode(raw).decode()}\n"


def cosignature_time(b64: str) -> int:
    """The timestamp in a cosignature/v1 signature (base64 of key ID || timestamp || sig),
    unverified; NoteError if it cannot be one."""
    try:
        raw = base64.b64decode(b64, validate=True)
    except binascii.Error:
        raise NoteError("a cosignature is not base64") from None
    if len(raw) < 4 + _SIGNATURE_BYTES:
        raise NoteError("too short to be a cosignature/v1 signature (no timestamp)")
    (timestamp,) = struct.unpack(">Q", raw[4:12])
    return int(timestamp)


def cosignatures(note: str, witnesses: list[CosignatureVerifier]) -> list[Cosigned]:
    """The valid cosignatures on `note` by the given witness keys, one per key. Signatures by
    other keys are ignored; one by a given key that does not verify raises NoteError (the note
    is malformed, per signed-note)."""
    _, text, signatures = parse(note)
    known = {(w.name, w.key_id): w for w in witnesses}
    found: dict[bytes, Cosigned] = {}
    for name, kid, signature in signatures:
        witness = known.get((name, kid))
        if witness is None:
            continue
        timestamp = witness.timestamp(text, signature)
        if timestamp is None:
            raise NoteError(f"the cosignature by witness {name} (key {kid.hex()}) does not verify")
        found.setdefault(kid + name.encode(), Cosigned(name, kid, timestamp))
    return list(found.values())


def with_lines(note: str, lines: list[str]) -> str:
    """The note with signature lines added (each ending in a newline), skipping any it has."""
    have = set(note.partition("\n\n")[2].splitlines(keepends=True))
    return note + "".join(line for line in lines if line not in have)
