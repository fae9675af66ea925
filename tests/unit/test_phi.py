"""No protected health information on the record (issue 14 item 8): no field of the body is
named for it, free text is bounded, and free text labelled or shaped as PHI is refused at the
door with `phi_suspected` naming the field, while what sites really write passes."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ledger.audit.replay import AT_THE_DOOR
from ledger.wire import events as ev
from ledger.wire.decoding import _PHI, decode_body
from ledger.wire.rejection import ReasonCode, Rejected

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
FAST = settings(max_examples=150, deadline=None)

# Names a field holding a patient's identity would have, anywhere in the body; and in a
# patient's journey no name at all but the signer's `printed_name` (Part 11.50), never the
# patient's (registry records, about staff, sites or systems, may name what they register).
# `patient_key` and `patient_signature` derive from the wristband through a salt the ledger
# never sees (README: Patient keys).
PHI_NAME = re.compile(
    r"(patient|family|given|first|last|full|sur|maiden)_?name|birth|dob|ssn|social_security|mrn"
    r"|medical_record|address|phone|email|wristband"
)
SIGNERS_NAME = {"printed_name"}


def _structs(of: object = ev.Event) -> list[mi.StructType]:
    """Every Struct a body (of these types) can hold: the event types and what they nest."""
    seen: dict[type, mi.StructType] = {}

    def visit(t: mi.Type) -> None:
        if isinstance(t, mi.StructType) and t.cls not in seen:
            seen[t.cls] = t
            for f in t.fields:
                visit(f.type)
        elif isinstance(t, mi.Metadata):
            visit(t.type)
        elif isinstance(t, mi.ListType):
            visit(t.item_type)
        elif isinstance(t, mi.UnionType):
            for u in t.types:
                visit(u)

    visit(mi.type_info(of))
    return list(seen.values())


def _strings(t: mi.Type) -> list[mi.StrType]:
    if isinstance(t, mi.Metadata):
        return _strings(t.type)
    if isinstance(t, mi.ListType):
        return _strings(t.item_type)
    if isinstance(t, mi.UnionType):
        return [s for u in t.types for s in _strings(u)]
    return [t] if isinstance(t, mi.StrType) else []


def test_no_field_of_the_body_is_named_for_a_patients_identity() -> None:
    structs = _structs()
    assert len(structs) > len(ev.EVENT_TYPES), "the walk reaches the nested Structs"
    names = {f.encode_name for s in structs for f in s.fields}
    assert "printed_name" in names and "patient_key" in names, "the walk sees every field"
    assert {n for n in names if PHI_NAME.search(n)} == set()
    journey = {f.encode_name for s in _structs(ev.JourneyEvent) for f in s.fields}
    assert "witness" in journey and "printed_name" in journey, "the walk sees the journey's fields"
    assert {n for n in journey if "name" in n} == SIGNERS_NAME


def test_free_text_is_bounded() -> None:
    """Every string without a pattern has a maximum length; Text's is 2000 characters."""
    text = mi.type_info(ev.Text)
    assert isinstance(text, mi.StrType) and text.max_length == 2000
    unbounded = [
        f"{s.cls.__name__}.{f.name}"
        for s in _structs()
        for f in s.fields
        for t in _strings(f.type)
        if t.pattern is None and t.max_length is None
    ]
    assert unbounded == []


def test_the_code_is_the_doors_so_stored_records_are_not_judged_again() -> None:
    assert ReasonCode.PHI_SUSPECTED in AT_THE_DOOR
    # A record accepted before the check is read back as it was accepted.
    stored = msgspec.json.decode(_body(reason="DOB: 1961-07-04"), type=ev.StoredEvent)
    assert stored.reason == "DOB: 1961-07-04"


_SIGNER = ev.Manifestation("nurse.bdw", "Kim Nurse", NOW, "performed")


def _body(reason: str = "smudged barcode", signer: ev.Manifestation = _SIGNER) -> bytes:
    """A label_voided body (its reason is free text) signed by one person."""
    voided = ev.LabelVoided(
        event_id=uuid.UUID(int=1), occurred_at=NOW, site="US-BDW", actor="nurse.bdw",
        coi="CHW000026AAAAAA", label_id="L-1", reason=reason, manifestations=[signer],
    )  # fmt: skip
    return msgspec.json.encode(voided)


def _refusal(raw: bytes) -> tuple[str, str | None] | None:
    try:
        decode_body(raw, NOW)
    except Rejected as rejected:
        return rejected.code, rejected.field
    return None


REFUSED = [
    "SSN 123-45-6789",
    "ssn:123-45-6789.",
    "patient 123-45-6789 called",
    "MRN: 00123456",
    "mrn 4455",
    "MRN#A1234",
    "MRN12345",
    "mrn_0042",
    "DOB04/07/1961",
    "MRN no. 5566",
    "Medical record: MRN number 0042",
    "DOB: 1961-07-04",
    "dob 7/4/61",
    "D.O.B. 04.07.1961",
    "date of birth: July 4, 1961",
    "Date of Birth was 4 July 1961",
    "date\nof birth 1961",
    "birthdate 1961-07-04",
    "Birth date: 04/07/1961",
    "patient name: John Smith",
    "Patient Name = jane doe",
    "Pt. name: Smith",
    "patient's name: X",
    "wristband read\tMRN\t0012 at bedside",
]
ACCEPTED = [
    "smudged barcode",
    "mRNA vector lot 12 thawed",
    "MRN not on the label, checked against the COI",
    "MRN-less wristband",
    "MRNs checked by the hospital: 2",
    "DOBUTAMINE 5 mg given before infusion",
    "adobe viewer crashed at 10:42",
    "date of birth may be wrong on the order: see the hospital record",
    "patient name illegible on the wristband",
    "patient names checked: 2",
    "received 2026-12-03T10:00:00Z, 2026-12-03 at 4 C",
    "catalogue 10-123-45-6789",
    "part 123-45-6789-01",
    "call 555-123-4567",
    "DIN W0000 26 123456 seen",
    "deviation DEV-2026-0042 closed",
    "lot 1234-56-7890",
]


@pytest.mark.parametrize("text", REFUSED)
def test_labelled_or_ssn_shaped_phi_in_free_text_is_refused_naming_the_field(text: str) -> None:
    assert _refusal(_body(reason=text)) == ("phi_suspected", "reason")


@pytest.mark.parametrize("text", ACCEPTED)
def test_what_sites_write_is_not_taken_for_phi(text: str) -> None:
    assert _refusal(_body(reason=text)) is None


def test_the_message_says_what_was_found_never_the_value() -> None:
    with pytest.raises(Rejected) as refused:
        decode_body(_body(reason="DOB: 1961-07-04"), NOW)
    assert "date of birth" in refused.value.message and "1961" not in refused.value.message


def test_free_text_in_nested_objects_and_lists_is_searched() -> None:
    signer = msgspec.structs.replace(_SIGNER, printed_name="MRN 1234")
    assert _refusal(_body(signer=signer)) == ("phi_suspected", "manifestations[0].printed_name")
    step = {
        "type": "manufacturing_step_completed", "event_id": "0b6e0e5e-6a7e-4a53-8b48-000000000002",
        "occurred_at": "2026-01-01T11:00:00Z", "site": "US-SSF", "actor": "mes.ssf",
        "coi": "CHW000026AAAAAA", "batch_id": "B-1", "step": "expansion",
        "started_at": "2026-01-01T10:00:00Z", "ended_at": "2026-01-01T11:00:00Z",
        "alarms": ["door open 2 min", "operator entered SSN 123-45-6789"],
    }  # fmt: skip
    assert _refusal(msgspec.json.encode(step)) == ("phi_suspected", "alarms[1]")


def test_a_correction_may_repeat_the_old_value_but_not_bring_phi_in() -> None:
    correction = {
        "type": "record_corrected", "event_id": "0b6e0e5e-6a7e-4a53-8b48-000000000003",
        "occurred_at": "2026-01-01T11:00:00Z", "site": "US-SSF", "actor": "qa.ssf",
        "coi": "CHW000026AAAAAA", "reason": "PHI in the description",
        "corrects_event_id": "0b6e0e5e-6a7e-4a53-8b48-000000000004", "field": "description",
        "old_value": "label for DOB 1961-07-04 misprinted", "new_value": "label misprinted",
    }  # fmt: skip
    assert _refusal(msgspec.json.encode(correction)) is None
    correction["new_value"] = "label for MRN 0042 misprinted"
    assert _refusal(msgspec.json.encode(correction)) == ("phi_suspected", "new_value")


# Free text as the door lets it through: no control characters or bidi overrides (Cc, Cf),
# no surrogates (Cs).
_TEXT_CHARS = st.characters(blacklist_categories=("Cc", "Cf", "Cs"), whitelist_characters="\n\t")


@FAST
@given(st.text(_TEXT_CHARS.filter(lambda c: not c.isdigit()), min_size=1, max_size=300))
def test_text_without_digits_or_a_name_label_is_never_refused(text: str) -> None:
    """The SSN shape, MRN and DOB need digits; only a labelled name needs none."""
    assume(text.strip() and "name" not in text.lower())
    assert _refusal(_body(reason=text)) is None


_WORDS = st.sampled_from(
    ["MRNA", "mRNA", "adobe", "DOBUTAMINE", "birth", "date", "of", "patient", "name", "no", "lot",
     "DIN", "W0000", "2026-12-03", "2026-12-03T10:00:00Z", "10:42", "555-123-4567", "4", "C", "-",
     ":", "#", "=", "ml", "thawed", "released", "DEV-2026-0042", "12-3456"]
)  # fmt: skip
_NUMBERS = st.integers(0, 10**9).map(str)


@FAST
@given(st.lists(st.one_of(_WORDS, _NUMBERS), min_size=1, max_size=40), st.sampled_from([" ", "\n", ", "]))
def test_site_vocabulary_without_the_labels_is_never_refused(words: list[str], sep: str) -> None:
    """Words a site writes, numbers, dates and times in any order (the separators hold a space,
    so no SSN shape forms across words): refused only when they happen to spell a label before
    a value ("birth date 4", "patient name : x")."""
    text = sep.join(words)
    lower = " ".join(text.lower().split())
    assume("birth date" not in lower and "date of birth" not in lower and "name:" not in lower)
    assume("name #" not in lower and "name =" not in lower and "name :" not in lower)
    assert _refusal(_body(reason=text)) is None


_LABELS = st.sampled_from(
    ["MRN", "mrn", "Mrn no.", "MRN number", "MRNs", "mRNA", "DOB", "dob", "D.O.B.", "adobe",
     "date of birth", "Date Of B\u0131rth", "birth date", "b\u0131rthdate", "date", "patient name",
     "Pt. name", "patient's name", "name", "123-45", "\u0130", "\u212a", "\u017f"]
)  # fmt: skip
_SEPARATORS = st.sampled_from(["", " ", ": ", " = ", "#", "\n", "_", " - ", " is ", " was "])
_VALUES = st.sampled_from(["12345", "1961-07-04", "July 4, 1961", "4 July", "-6789", "John", "smudged", ""])
_NOISE = st.text(_TEXT_CHARS, max_size=4)


@FAST
@given(st.tuples(_NOISE, _LABELS, _SEPARATORS, _VALUES, _NOISE).map("".join))
def test_the_door_refuses_exactly_what_the_patterns_find(text: str) -> None:
    """The cheap test the door runs first never lets through what the patterns would find."""
    assume(text.strip())
    found = _PHI.search(text) is not None
    assert _refusal(_body(reason=text)) == (("phi_suspected", "reason") if found else None)
