"""ISBT 128 identifiers: the Donation Identification Number (DIN, data structure 001)
and the Chain of Identity identifier (data structure 040)."""

from __future__ import annotations

import re

_MOD37_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*"

# alpha (A-N, P-Z, 1-9) + pppp = FIN, yy = year, nnnnnn = sequence.
DIN_PATTERN = re.compile(r"^[A-NP-Z1-9][0-9]{4}[0-9]{2}[0-9]{6}$")
FIN_PATTERN = re.compile(r"^[A-NP-Z1-9][0-9]{4}$")
COI_PATTERN = re.compile(r"^CH[A-NP-Z1-9][0-9]{4}[0-9]{2}[A-Z0-9]{6}$")
PRINCIPAL_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
# A DIN as keyed in: the 13 characters and the check character, checked by din_problem.
KEYED_DIN_PATTERN = re.compile(r"^[A-NP-Z1-9][0-9]{12}[0-9A-Z*]$")


def mod37_2(chars: str) -> str:
    """ISO/IEC 7064 MOD 37-2 check character over `chars` (weights 2^n from the right)."""
    total = 0
    for n, ch in enumerate(reversed(chars), start=1):
        value = _MOD37_ALPHABET.index(ch)
        total += value * pow(2, n, 37)
    return _MOD37_ALPHABET[(38 - total % 37) % 37]


def din_problem(keyed: str) -> str | None:
    """Why a keyed DIN (13 characters plus check character) is invalid, or None."""
    if len(keyed) != 14:
        return f"must be 13 characters plus the check character, got {len(keyed)} characters"
    din, check = keyed[:13], keyed[13]
    if not DIN_PATTERN.match(din):
        return "must be FIN (alpha + 4 digits), 2-digit year and 6-digit sequence"
    expected = mod37_2(din)
    if check != expected:
        return f"check character {check!r} is wrong for {din} (ISO/IEC 7064 MOD 37-2)"
    return None


def with_check(din: str) -> str:
    """The 13-character DIN followed by its check character."""
    if not DIN_PATTERN.match(din):
        raise ValueError(f"not a 13-character DIN: {din!r}")
    return din + mod37_2(din)


def din_fin(keyed: str) -> str:
    """The facility identification number (FIN) a DIN was issued under."""
    return keyed[:5]


def coi_problem(coi: str) -> str | None:
    """Why a Chain of Identity identifier is invalid, or None."""
    if not COI_PATTERN.match(coi):
        return "must be CH + issuing FIN (5) + 2-digit year + 6 alphanumerics"
    return None
