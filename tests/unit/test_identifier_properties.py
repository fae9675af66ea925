"""The DIN check character (ISO/IEC 7064 MOD 37-2) on any DIN hypothesis draws: it agrees
with the standard's iterative form and catches every single substitution and every adjacent
transposition, as the pure system guarantees."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ledger.wire.identifiers import DIN_PATTERN, din_problem, mod37_2, with_check

FAST = settings(max_examples=80, deadline=None)
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*"

# alpha (A-N, P-Z, 1-9), then FIN digits, year and sequence: twelve digits.
dins = st.tuples(
    st.sampled_from("ABCDEFGHIJKLMNPQRSTUVWXYZ123456789"), st.text("0123456789", min_size=12, max_size=12)
).map("".join)


def iterative_check(chars: str) -> str:
    """ISO/IEC 7064's recursive method for a pure system: P = (P + a) * 2 mod 37 over the
    characters, then the check c makes P + c = 1 (mod 37)."""
    p = 0
    for ch in chars:
        p = (p + ALPHABET.index(ch)) * 2 % 37
    return ALPHABET[(1 - p) % 37]


@FAST
@given(dins)
def test_the_check_character_is_the_standards(din: str) -> None:
    assert DIN_PATTERN.match(din)
    assert mod37_2(din) == iterative_check(din)
    assert din_problem(with_check(din)) is None


@FAST
@given(dins, st.data())
def test_any_single_substitution_is_caught(din: str, draw: st.DataObject) -> None:
    keyed = with_check(din)
    at = draw.draw(st.integers(0, len(keyed) - 1), label="position")
    other = draw.draw(st.sampled_from(ALPHABET).filter(lambda c: c != keyed[at]), label="typed instead")
    assert din_problem(keyed[:at] + other + keyed[at + 1 :]) is not None


@FAST
@given(dins, st.data())
def test_any_adjacent_transposition_is_caught(din: str, draw: st.DataObject) -> None:
    keyed = with_check(din)
    distinct = [i for i in range(len(keyed) - 1) if keyed[i] != keyed[i + 1]]
    assume(distinct)
    at = draw.draw(st.sampled_from(distinct), label="swapped at")
    swapped = keyed[:at] + keyed[at + 1] + keyed[at] + keyed[at + 2 :]
    assert din_problem(swapped) is not None
