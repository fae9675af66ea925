"""Strict decoding of an event body, turning every msgspec error into a reason code
that names the field."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta

import msgspec
import msgspec.inspect as mi

from ledger.wire.events import EVENT_TYPES, Event, Manifestation, Output
from ledger.wire.identifiers import KEYED_DIN_PATTERN
from ledger.wire.rejection import ReasonCode, Rejected
from ledger.wire.strictjson import repeated_key

# Site clocks may run a little ahead of ours; beyond this an event claims to come from
# the future, which breaks "contemporaneous" (ALCOA+) and key-validity checks. The ledger
# passes the skew of the policy in force; this is the default (aggregates/policy.py).
CLOCK_SKEW = timedelta(minutes=5)

_decoder = msgspec.json.Decoder(Event)
_generic = msgspec.json.Decoder()
_PATH = re.compile(r" - at `\$\.?([^`]*)`$")
_NAMED = re.compile(r"field `([^`]+)`")

# (substring of msgspec's message, reason code), first match wins.
_CODES = (
    ("unknown field", ReasonCode.UNKNOWN_FIELD),
    ("missing required field", ReasonCode.MISSING_FIELD),
    ("with a timezone component", ReasonCode.NAIVE_TIMESTAMP),
    ("invalid DIN", ReasonCode.INVALID_DIN),
    (f"matching regex '{KEYED_DIN_PATTERN.pattern}'", ReasonCode.INVALID_DIN),
    ("at `$.type`", ReasonCode.UNKNOWN_EVENT_TYPE),
    (", got `", ReasonCode.WRONG_TYPE),
    ("Invalid RFC3339", ReasonCode.WRONG_TYPE),
)


def _field_of(message: str) -> str | None:
    match = _PATH.search(message) or _NAMED.search(message)
    return match.group(1) if match else None


# Free text may hold newlines and tabs, but no other C0 control, no C1 control and no bidi
# override (which makes a printed record read otherwise than its bytes).
_TEXT_BAD = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# An identifier holds neither a control character nor whitespace. Its pattern is `^...$` for
# validators in other languages, and `$` also matches before a final newline: "X\n" would be
# a second X.
_IDENT_BAD = re.compile("[\\s\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# A body can hold one of those only through an escape, a raw DEL, or the UTF-8 of a C1
# control or a bidi override; most bodies have none and skip the walk over their strings.
_SUSPECT_UTF8 = re.compile(rb"\xc2[\x80-\x9f]|\xe2\x80[\xaa-\xae]|\xe2\x81[\xa6-\xa9]")


def _suspect(body: bytes) -> bool:
    # `in` and isascii() first: a regular expression over every body would cost as much as
    # decoding it.
    return b"\\" in body or b"\x7f" in body or (not body.isascii() and bool(_SUSPECT_UTF8.search(body)))


_Rule = re.Pattern[str] | type
"""How to check a field: a string (or list of strings) against a pattern of what it may not
contain; a Struct (or list of Structs) field by field."""


def _rule(t: mi.Type) -> _Rule | None:
    """Identifiers are the strings with a pattern; the other strings are free text."""
    if isinstance(t, mi.Metadata | mi.ListType):
        return _rule(t.type if isinstance(t, mi.Metadata) else t.item_type)
    if isinstance(t, mi.UnionType):
        return next((r for r in map(_rule, t.types) if r is not None), None)
    if isinstance(t, mi.StrType):
        return _TEXT_BAD if t.pattern is None else _IDENT_BAD
    return t.cls if isinstance(t, mi.StructType) else None


def _fields(cls: type[msgspec.Struct]) -> tuple[mi.Field, ...]:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return info.fields


_CHECKED: tuple[type[msgspec.Struct], ...] = (*EVENT_TYPES.values(), Manifestation, Output)
_RULES: dict[type, list[tuple[str, _Rule]]] = {
    cls: [(f.name, r) for f in _fields(cls) if (r := _rule(f.type)) is not None] for cls in _CHECKED
}


def _strings(
    obj: msgspec.Struct, table: dict[type, list[tuple[str, _Rule]]], at: str = ""
) -> Iterator[tuple[str, str, re.Pattern[str]]]:
    """(where, value, pattern) for each string the table names, in nested Structs and lists too.
    (Spelt out branch by branch: every body is walked, and this is the fastest form measured.)"""
    for name, rule in table[type(obj)]:
        value = getattr(obj, name)
        if isinstance(value, str):
            if isinstance(rule, re.Pattern):
                yield at + name, value, rule
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, str):
                    if isinstance(rule, re.Pattern):
                        yield f"{at}{name}[{i}]", item, rule
                elif isinstance(item, msgspec.Struct):
                    yield from _strings(item, table, f"{at}{name}[{i}].")
        elif isinstance(value, msgspec.Struct):
            yield from _strings(value, table, f"{at}{name}.")


def _check_characters(event: msgspec.Struct) -> None:
    for where, text, rule in _strings(event, _RULES):
        if bad := rule.search(text):
            what = "free text may hold newlines and tabs but no other control character or bidi override"
            if rule is _IDENT_BAD:
                what = "an identifier holds no control character and no whitespace"
            raise Rejected(
                ReasonCode.CONTROL_CHARACTER, f"{where} contains U+{ord(bad.group()):04X}: {what}", where
            )


# Protected health information has no field in the body (tests/unit/test_phi.py holds the
# names to that), so it could only come in free text: refuse what is labelled as a patient's
# record number, birth date or name, or shaped like an SSN. A safety net, not a guarantee
# (README: Wire format). Identifiers, DINs and timestamps are not free text and not searched;
# a number (or a month and a number) must follow MRN and DOB and a colon the patient name,
# so "mRNA", "MRN not on the label" or "patient name illegible" pass; the SSN shape is not
# part of a longer run of numbers and hyphens (a catalogue number 10-123-45-6789).
_SEP = r"[\s:#=._-]{0,4}"
_NO_LETTER = r"(?![^\W\d_])"  # a label ends where no letter follows: MRN12345, not mRNA
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*"
_PHI = re.compile(
    rf"(?P<ssn>(?<!\d)(?<!\d-)\d{{3}}-\d{{2}}-\d{{4}}(?!-?\d))"
    rf"|(?P<mrn>\bMRN{_NO_LETTER}{_SEP}(?:(?:no|nr|number)\b{_SEP})?[A-Z]{{0,4}}\d)"
    rf"|(?P<dob>(?:\b(?:DOB|date\s+of\s+birth|birth\s*date){_NO_LETTER}|\bD\.O\.B\.?){_SEP}(?:(?:is|was)\s+)?(?:{_MONTH}\.?\s*)?\d)"
    rf"|(?P<name>\b(?:patient|pt)(?:'s)?\.?\s+name\s*[:=#]\s*\w)",
    re.IGNORECASE,
)
_PHI_WHAT = {
    "ssn": "a number shaped like an SSN (123-45-6789)",
    "mrn": "a labelled medical record number",
    "dob": "a labelled date of birth",
    "name": "a labelled patient name",
}
# old_value repeats what a stored record holds (the rules refuse it otherwise): a record
# accepted before this check may hold what the correction is there to replace.
_REPEATS_THE_RECORD = frozenset({"old_value"})
_FREE_TEXT = {
    cls: [(n, r) for n, r in rules if r is not _IDENT_BAD and n not in _REPEATS_THE_RECORD]
    for cls, rules in _RULES.items()
}


# A necessary condition for _PHI, on the lowered text, that a scan finds fast: most free
# text fails it and is spared _PHI's four patterns tried at every character. ("birth" is
# found by "date" and not itself: Python's re also matches the dotless i to an i.)
_PHI_HINT = re.compile(r"\d-\d\d-\d|mrn|dob|d\.o\.b|date|name")


def _check_phi(event: msgspec.Struct) -> None:
    for where, text, _ in _strings(event, _FREE_TEXT):
        if _PHI_HINT.search(text.lower()) and (found := _PHI.search(text)):
            # The message names what was found, never the value: it travels to coi.rejected.
            raise Rejected(
                ReasonCode.PHI_SUSPECTED,
                f"{where} holds what looks like protected health information "
                f"({_PHI_WHAT[str(found.lastgroup)]} at character {found.start() + 1}): the ledger "
                "takes no patient name, date of birth, SSN or MRN; write it without them",
                where,
            )


def _distinct_keys(top: object) -> int:
    """Keys of a decoded body's objects: the body and the objects in its lists (the schema
    nests no deeper; keys deeper down, not counted, only lead to the exact check)."""
    if not isinstance(top, dict):
        return 0
    return len(top) + sum(len(o) for v in top.values() if type(v) is list for o in v if type(o) is dict)


def decode_body(body: bytes, now: datetime, skew: timedelta = CLOCK_SKEW) -> Event:
    """Decode and sanity-check one body; raises Rejected naming the field and the reason.
    `skew`: how far occurred_at may lie ahead of `now` (the ledger applies the policy in force)."""
    # Repeated keys first: the typed decoder would judge the body by the last of them.
    try:
        repeated = repeated_key(body, _distinct_keys(_generic.decode(body)))
    except msgspec.DecodeError as exc:
        raise Rejected(ReasonCode.MALFORMED_JSON, f"payload is not valid JSON: {exc}") from None
    except RecursionError:
        # The typed decoder too recurses, to skip what comes before the `type` key.
        raise Rejected(ReasonCode.MALFORMED_JSON, "payload nests deeper than any event body") from None
    if repeated is not None:
        raise Rejected(
            ReasonCode.DUPLICATE_KEY, f"the body gives the key {repeated!r} twice in one object", repeated
        )
    try:
        event = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        message = str(exc)
        code = next((c for text, c in _CODES if text in message), ReasonCode.INVALID_VALUE)
        raise Rejected(code, message, _field_of(message)) from None
    if _suspect(body):
        _check_characters(event)
    _check_phi(event)
    if event.reason is not None and not event.reason.strip():
        # A reason is what Annex 11 asks a change to carry: blank is none at all.
        raise Rejected(ReasonCode.INVALID_VALUE, "reason is blank: say why", "reason")
    if event.occurred_at > now + skew:
        raise Rejected(
            ReasonCode.FUTURE_TIMESTAMP,
            f"occurred_at {event.occurred_at.isoformat()} is more than "
            f"{int(skew.total_seconds())} seconds ahead of the ledger clock "
            f"({now.isoformat()}); check the site system's clock",
            "occurred_at",
        )
    return event
