"""JSON objects that give a key twice. msgspec keeps the last value without a word, while
another reader of the same signed bytes may keep the first: one signature, two meanings.
So the ledger refuses them, at a cost it can afford on every envelope."""

from __future__ import annotations

import json


def repeated_key(raw: bytes, distinct_keys: int) -> str | None:
    """The first key some object of `raw` (valid JSON) gives twice, or None. `distinct_keys`
    is how many keys all its objects hold once decoded, where a repeat counts once."""
    # Without escapes a `"` only opens or closes a string, so once whitespace is gone `":`
    # occurs once per key (and where a string value starts with a colon, or with
    # whitespace and a colon, which merely leads to the exact check below). Faster than a
    # regular expression or a search for each kind of whitespace after a `"`.
    if b"\\" not in raw and raw.translate(None, b" \t\r\n").count(b'":') == distinct_keys:
        return None
    return first_repeated_key(raw)


def first_repeated_key(raw: bytes) -> str | None:
    """The first key some object of `raw` (valid JSON) gives twice, or None: the exact check."""
    repeats: list[str] = []

    def note_repeats(pairs: list[tuple[str, object]]) -> None:
        keys = [key for key, _ in pairs]
        repeats.extend(key for i, key in enumerate(keys) if key in keys[:i])

    json.loads(raw, object_pairs_hook=note_repeats)
    return repeats[0] if repeats else None
