"""DSSE v1 envelopes (in-toto / sigstore "Dead Simple Signing Envelope") with Ed25519.

Each signature is Ed25519 over PAE(payloadType, body), body being the decoded payload
bytes. The envelope bytes are what the ledger stores, so an auditor can re-verify them.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from functools import lru_cache

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.wire.rejection import ReasonCode, Rejected
from ledger.wire.strictjson import repeated_key

PAYLOAD_TYPE = "application/vnd.coi-ledger.event+json"

# The largest envelope any entry takes (coi submit, the site publisher, the ingest). The
# largest real one, a custody transfer of many units with every signature, is a few KiB;
# a record much larger than this would not fit in a Kafka message with its receipt.
MAX_ENVELOPE_BYTES = 256 * 1024


class Signature(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    keyid: str
    sig: str


class Envelope(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    payloadType: str  # noqa: N815 - the DSSE field name
    payload: str
    signatures: list[Signature]


@dataclass(frozen=True)
class Signer:
    """A private key and the keyid the ledger knows it by."""

    keyid: str
    key: Ed25519PrivateKey


class Opened(msgspec.Struct, frozen=True):  # a Struct: five times faster to make than a dataclass
    """An envelope taken apart: the body bytes and each (keyid, signature bytes)."""

    envelope: Envelope
    body: bytes
    signatures: list[tuple[str, bytes]]


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: "DSSEv1" SP len(type) SP type SP len(body) SP body."""
    type_bytes = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(body), body)


def b64decode(text: str, field: str) -> bytes:
    """Strict base64; DSSE allows both the standard and the URL-safe alphabet."""
    # str.translate costs more than the decoding itself, and most senders use the standard
    # alphabet. a2b_base64 in strict mode is what base64.b64decode(validate=True) calls.
    if "-" in text or "_" in text:
        text = text.translate(_URLSAFE_TO_STD)
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise Rejected(ReasonCode.BAD_BASE64, f"{field} is not valid base64 ({exc})", field) from None


_URLSAFE_TO_STD = str.maketrans("-_", "+/")
_envelope_decoder = msgspec.json.Decoder(Envelope)


def sign(body: bytes, signers: list[Signer], payload_type: str = PAYLOAD_TYPE) -> bytes:
    """Wrap body bytes in a DSSE envelope signed by every signer; returns the envelope JSON."""
    message = pae(payload_type, body)
    envelope = Envelope(
        payloadType=payload_type,
        payload=base64.b64encode(body).decode(),
        signatures=[
            Signature(keyid=s.keyid, sig=base64.b64encode(s.key.sign(message)).decode()) for s in signers
        ],
    )
    return msgspec.json.encode(envelope)


def add_signature(opened: Opened, signer: Signer) -> bytes:
    """The envelope with one more signature over the same payload (a second person's, added
    after the first signed: `coi cosign`)."""
    sig = base64.b64encode(signer.key.sign(pae(opened.envelope.payloadType, opened.body))).decode()
    signatures = [*opened.envelope.signatures, Signature(keyid=signer.keyid, sig=sig)]
    return msgspec.json.encode(msgspec.structs.replace(opened.envelope, signatures=signatures))


def open_envelope(raw: bytes | str) -> Opened:
    """Parse an envelope strictly; signatures are decoded but not yet verified."""
    try:
        envelope = _envelope_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise Rejected(ReasonCode.MALFORMED_ENVELOPE, f"not a DSSE envelope: {exc}") from None
    except msgspec.DecodeError as exc:
        raise Rejected(ReasonCode.MALFORMED_JSON, f"envelope is not valid JSON: {exc}") from None
    # Every field is required and no other is allowed, so the decoded envelope says how
    # many keys its objects hold.
    repeated = repeated_key(raw.encode() if isinstance(raw, str) else raw, 3 + 2 * len(envelope.signatures))
    if repeated is not None:
        raise Rejected(
            ReasonCode.DUPLICATE_KEY, f"the envelope gives the key {repeated!r} twice in one object", repeated
        )
    if envelope.payloadType != PAYLOAD_TYPE:
        raise Rejected(
            ReasonCode.WRONG_PAYLOAD_TYPE,
            f"payloadType is {envelope.payloadType!r}, expected {PAYLOAD_TYPE!r}",
            "payloadType",
        )
    if not envelope.signatures:
        raise Rejected(ReasonCode.MISSING_SIGNATURE, "the envelope carries no signature", "signatures")
    keyids = [s.keyid for s in envelope.signatures]
    for i, keyid in enumerate(keyids):
        if keyid in keyids[:i]:
            raise Rejected(
                ReasonCode.REPEATED_SIGNATURE,
                f"key {keyid} signs this envelope twice; send one signature per key",
                f"signatures[{i}].keyid",
            )
    body = b64decode(envelope.payload, "payload")
    signatures = [
        (s.keyid, b64decode(s.sig, f"signatures[{i}].sig")) for i, s in enumerate(envelope.signatures)
    ]
    return Opened(envelope=envelope, body=body, signatures=signatures)


def check_size(raw: bytes) -> None:
    """Refuse an envelope over MAX_ENVELOPE_BYTES at an entry, before anything reads it.
    (Not in open_envelope: records stored before the limit must still open and verify.)"""
    if len(raw) > MAX_ENVELOPE_BYTES:
        raise Rejected(
            ReasonCode.OVERSIZE,
            f"the envelope has {len(raw)} bytes; envelopes are limited to {MAX_ENVELOPE_BYTES} bytes",
        )


@lru_cache(maxsize=4096)
def public_key(raw: bytes) -> Ed25519PublicKey:
    """Loaded public keys are cached: loading costs as much as a hash per call."""
    return Ed25519PublicKey.from_public_bytes(raw)


def verify(public_raw: bytes, signature: bytes, message: bytes) -> bool:
    """True when `signature` is a valid Ed25519 signature of `message`."""
    try:
        public_key(public_raw).verify(signature, message)
    except InvalidSignature:
        return False
    return True
