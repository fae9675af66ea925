"""The per-patient bedside key (README: Patient keys): derivation vectors and canonical
identifiers, no ledger."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.wire.patient import (
    Wristband,
    bedside_message,
    canonical_identifiers,
    patient_private_key,
    patient_public_key,
    sign_bedside,
)
from ledger.wire.rejection import Rejected

# The README's test vectors (section "Patient keys"), asserted here so two vendors agree.
VECTOR_WRISTBAND = Wristband(
    mrn=" mrn-004711 ", family_name="Müller", given_name="Zoë  Anne", birth_date="1961-07-04"
)
VECTOR_SALT = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
VECTOR_CANONICAL = "mrn=MRN-004711\nfamily_name=MüLLER\ngiven_name=ZOë ANNE\nbirth_date=1961-07-04"
VECTOR_SEED = "cb4714ac5726b72bacdd7ae885798c82ea744230a03df9c093cf80a51f566cce"
VECTOR_PUBLIC = "oyS+olb9EhkycF/6g0fDKtJvv75MF07d7P++N6u3qVE="
VECTOR_EVENT = uuid.UUID("6f1c8a52-3b0e-4d7a-9f21-5c4e8b7d2a10")
VECTOR_MESSAGE = (
    b"coi-ledger bedside v1\nCHW0451260059EM\nP-CHW0451260059EM-1\n6f1c8a52-3b0e-4d7a-9f21-5c4e8b7d2a10"
)
VECTOR_SIGNATURE = "+CZ7AJAZnVfIzYLLeo52ydKzclRBAULs1EaUqQod72nA0h3Ihj/HyT8sGlMYi2Du48YaBYSTVINzxNpT8aFJBg=="


def test_key_derivation_matches_the_readme_vectors() -> None:
    canonical = canonical_identifiers(VECTOR_WRISTBAND)
    assert canonical == VECTOR_CANONICAL.encode()
    key = patient_private_key(VECTOR_SALT, VECTOR_WRISTBAND)
    assert key.private_bytes_raw().hex() == VECTOR_SEED
    assert patient_public_key(VECTOR_SALT, VECTOR_WRISTBAND) == VECTOR_PUBLIC
    message = bedside_message("CHW0451260059EM", "P-CHW0451260059EM-1", VECTOR_EVENT)
    assert message == VECTOR_MESSAGE
    assert sign_bedside(key, "CHW0451260059EM", "P-CHW0451260059EM-1", VECTOR_EVENT) == VECTOR_SIGNATURE
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert all(v in readme for v in (VECTOR_SEED, VECTOR_PUBLIC, VECTOR_SIGNATURE, str(VECTOR_EVENT)))


def test_the_same_wristband_read_differently_derives_the_same_key() -> None:
    decomposed = Wristband(
        mrn="MRN-004711", family_name="Mu\u0308ller", given_name="zoe\u0308\tanne", birth_date="1961-07-04"
    )
    assert patient_public_key(VECTOR_SALT, decomposed) == VECTOR_PUBLIC
    other_salt = bytes(16)
    assert patient_public_key(other_salt, VECTOR_WRISTBAND) != VECTOR_PUBLIC


@pytest.mark.parametrize(
    ("salt", "changes", "field"),
    [
        (bytes(15), {}, "salt"),
        (bytes(16), {"mrn": "  "}, "mrn"),
        (bytes(16), {"birth_date": "04/07/1961"}, "birth_date"),
        (bytes(16), {"birth_date": "1961-02-30"}, "birth_date"),
        (bytes(16), {"family_name": "M\x00ller"}, "family_name"),
    ],
)
def test_bad_identifiers_or_salt_are_refused_naming_the_field(
    salt: bytes, changes: dict[str, str], field: str
) -> None:
    fields = {"mrn": "MRN-1", "family_name": "Doe", "given_name": "Pat", "birth_date": "1970-01-01"}
    with pytest.raises(Rejected) as refused:
        patient_private_key(salt, Wristband(**(fields | changes)))
    assert (refused.value.code, refused.value.field) == ("invalid_value", field)


# Words as a wristband or a keyboard gives them: letters, digits and punctuation, any script.
_word = st.text(st.characters(categories=("L", "N", "P")), min_size=1, max_size=6)
_space = st.sampled_from([" ", "  ", "\t", "\n", "\u00a0", "\u2003"])


@st.composite
def _read_differently(draw: st.DrawFn, words: list[str]) -> str:
    """The same words as another reader gives them: ASCII letters in either case, other
    whitespace runs around and between them, characters decomposed (NFD)."""
    flipped = [
        "".join(c.swapcase() if c.isascii() and draw(st.booleans()) else c for c in word) for word in words
    ]
    spaced = draw(_space).join(flipped)
    return unicodedata.normalize("NFD", draw(_space) + spaced + draw(_space))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(_word, min_size=1, max_size=3), min_size=3, max_size=3), st.dates(), st.data())
def test_a_wristband_read_differently_gives_the_same_identifiers_and_key(
    names: list[list[str]], born: date, draw: st.DataObject
) -> None:
    fields = [" ".join(words) for words in names]
    reread = [draw.draw(_read_differently(words)) for words in names]
    first = Wristband(*fields, birth_date=born.isoformat())
    second = Wristband(*reread, birth_date=f" {born.isoformat()}\t")
    assert canonical_identifiers(second) == canonical_identifiers(first)
    assert patient_public_key(VECTOR_SALT, second) == patient_public_key(VECTOR_SALT, first)
