"""The batch search's base64 fragments: whatever its offset and alphabet, a body holding the
batch id yields a text holding one of them (so the database's search misses no record)."""

from __future__ import annotations

import base64

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from ledger.app.bundle import _base64_fragments

IDS = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ0123456789-._", min_size=1, max_size=40)


@given(IDS, st.binary(max_size=60), st.binary(max_size=20), st.booleans())
def test_every_encoding_of_a_body_naming_the_batch_holds_a_fragment(
    batch: str, before: bytes, after: bytes, urlsafe: bool
) -> None:
    needle = msgspec.json.encode(batch)
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    text = encode(before + needle + after).decode()
    assert any(fragment in text for fragment in _base64_fragments(needle))
