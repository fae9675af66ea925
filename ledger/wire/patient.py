"""The patient key: what enrolment registers and what the bedside device signs with.

The key is derived from the wristband identifiers and a random salt the hospital keeps (never
in the ledger, never on a label), so the ledger holds only a public key and signatures: nothing
in it lets anyone derive the private key or forge a bedside match. README "Patient keys"
specifies every step, with test vectors, so two vendors' devices derive the same key.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from datetime import date
from uuid import UUID

import msgspec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ledger.wire.dsse import verify
from ledger.wire.rejection import ReasonCode, Rejected

HKDF_INFO = b"coi-ledger patient key v1"
BEDSIDE_CONTEXT = b"coi-ledger bedside v1"
MIN_SALT_BYTES = 16  # 128 bits: the identifiers alone are guessable, the salt is not
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_LOWER_ASCII = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


class Wristband(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The identifiers printed on the patient's wristband, in canonical order."""

    mrn: str
    family_name: str
    given_name: str
    birth_date: str  # YYYY-MM-DD


def _canonical_value(name: str, value: str) -> str:
    # NFC first so composed and decomposed input agree; whitespace runs (any Unicode space,
    # tab or line break) become one space; only ASCII letters are upper-cased, so every
    # platform maps case the same way.
    text = " ".join(unicodedata.normalize("NFC", value).split()).translate(_LOWER_ASCII)
    if not text:
        raise Rejected(ReasonCode.INVALID_VALUE, f"{name} is empty", name)
    if any(unicodedata.category(c) == "Cc" for c in text):
        raise Rejected(ReasonCode.INVALID_VALUE, f"{name} contains a control character", name)
    return text


def _is_date(text: str) -> bool:
    # fromisoformat alone also takes 19610704 and week dates: one spelling only.
    try:
        return bool(_DATE.match(text)) and date.fromisoformat(text) is not None
    except ValueError:
        return False


def canonical_identifiers(wristband: Wristband) -> bytes:
    """The HKDF input: `name=value` lines in the Wristband's field order, joined by LF, UTF-8."""
    lines = []
    for name in wristband.__struct_fields__:
        value = _canonical_value(name, getattr(wristband, name))
        if name == "birth_date" and not _is_date(value):
            raise Rejected(
                ReasonCode.INVALID_VALUE, f"birth_date {value!r} is not a calendar date YYYY-MM-DD", name
            )
        lines.append(f"{name}={value}")
    return "\n".join(lines).encode()


def patient_private_key(salt: bytes, wristband: Wristband) -> Ed25519PrivateKey:
    """HKDF-SHA256(ikm = canonical identifiers, salt, info = HKDF_INFO, 32 bytes) as the seed."""
    if len(salt) < MIN_SALT_BYTES:
        raise Rejected(
            ReasonCode.INVALID_VALUE,
            f"salt must be at least {MIN_SALT_BYTES} random bytes (128 bits)",
            "salt",
        )
    seed = HKDF(hashes.SHA256(), 32, salt, HKDF_INFO).derive(canonical_identifiers(wristband))
    return Ed25519PrivateKey.from_private_bytes(seed)


def patient_public_key(salt: bytes, wristband: Wristband) -> str:
    """The enrolment's `patient_key`: base64 of the raw 32-byte public key."""
    return base64.b64encode(patient_private_key(salt, wristband).public_key().public_bytes_raw()).decode()


def bedside_message(coi: str, unit_id: str, event_id: UUID) -> bytes:
    """What the bedside device signs: bound to this patient, this unit and this very record."""
    return b"\n".join((BEDSIDE_CONTEXT, coi.encode(), unit_id.encode(), str(event_id).encode()))


def sign_bedside(key: Ed25519PrivateKey, coi: str, unit_id: str, event_id: UUID) -> str:
    """The bedside check's `patient_signature` (base64)."""
    return base64.b64encode(key.sign(bedside_message(coi, unit_id, event_id))).decode()


def bedside_signature_valid(
    patient_key: str, patient_signature: str, coi: str, unit_id: str, event_id: UUID
) -> bool:
    """True when the signature verifies under the registered key; any other case is a mismatch."""
    try:
        raw, sig = base64.b64decode(patient_key), base64.b64decode(patient_signature)
        return verify(raw, sig, bedside_message(coi, unit_id, event_id))
    except (binascii.Error, ValueError):
        return False
