"""The wire format read exactly: no identifier with a hidden newline, no repeated JSON key, no
control characters, bounded numbers, one signature per key, and idempotency on what was signed
(any re-encoding of a stored envelope is a duplicate)."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from ledger.demo.journeys import Cast, Journey
from ledger.wire.decoding import decode_body
from ledger.wire.dsse import open_envelope
from ledger.wire.rejection import Rejected
from tests.support import body_dict, new_journey


@pytest.fixture(scope="module")
def journey(cast: Cast) -> Journey:
    return new_journey(cast)


def _step(journey: Journey, tag: str) -> bytes:
    return next(s.envelope for s in journey.steps() if type_of(s.envelope) == tag)


def type_of(raw: bytes) -> str:
    return str(body_dict(raw)["type"])


def _code(body: dict[str, Any] | bytes) -> str | None:
    raw = body if isinstance(body, bytes) else msgspec.json.encode(body)
    try:
        decode_body(raw, datetime.now(UTC))
    except Rejected as rejected:
        return rejected.code
    return None


def _with(journey: Journey, tag: str, **changes: object) -> dict[str, Any]:
    body = body_dict(_step(journey, tag))
    body.update(changes)
    return body


# ------------------------------------------------------------------ identifiers (item 2, 6)


@pytest.mark.parametrize(
    ("tag", "name"),
    [
        ("enrolled", "coi"),
        ("enrolled", "site"),
        ("enrolled", "actor"),
        ("enrolled", "treatment_site"),
        ("enrolled", "order_id"),
        ("shipment_dispatched", "destination_site"),
        ("label_printed", "label_id"),
    ],
)
def test_an_identifier_with_a_trailing_newline_is_refused(journey: Journey, tag: str, name: str) -> None:
    body = body_dict(_step(journey, tag))
    assert _code(body) is None
    body[name] += "\n"
    assert _code(body) == "control_character"


def test_identifiers_in_lists_and_nested_objects_are_checked(journey: Journey) -> None:
    body = _with(journey, "custody_transferred")
    body["unit_ids"] = [body["unit_ids"][0] + "\n"]
    assert _code(body) == "control_character"
    body = _with(journey, "custody_transferred")
    body["manifestations"][0]["principal"] += "\n"
    assert _code(body) == "control_character"


def test_a_principal_id_with_a_trailing_newline_is_refused(cast: Cast) -> None:
    (first, *_) = cast.registrations(datetime.now(UTC))
    body = body_dict(first)
    body["principal_id"] += "\n"
    assert _code(body) == "control_character"


@pytest.mark.parametrize("name", ["treatment_site", "destination_site"])
def test_sites_of_a_journey_have_the_site_pattern(journey: Journey, name: str) -> None:
    tag = "enrolled" if name == "treatment_site" else "shipment_dispatched"
    assert _code(_with(journey, tag, **{name: "Bridgewater, NJ"})) == "invalid_value"


@pytest.mark.parametrize("char", ["\x00", "\x01", "\r", "\x1b", "\x7f", "\x85", "\x9b", "\u202e", "\u2066"])
def test_free_text_refuses_control_characters(journey: Journey, char: str) -> None:
    body = _with(journey, "label_voided")
    body["reason"] = f"misprint{char}: smudged"
    try:
        decode_body(msgspec.json.encode(body), datetime.now(UTC))
    except Rejected as rejected:
        assert (rejected.code, rejected.field) == ("control_character", "reason")
        assert f"U+{ord(char):04X}" in rejected.message
    else:
        pytest.fail(f"U+{ord(char):04X} accepted in free text")


def test_free_text_keeps_newlines_tabs_and_other_scripts(journey: Journey) -> None:
    body = _with(
        journey, "label_voided", reason="misprint:\n\tsmudged barcode, 汚れ, \u05e9\u05dc\u05d5\u05dd"
    )
    assert _code(body) is None
    assert _code(json.dumps(body).encode()) is None  # every non-ASCII character escaped


# ------------------------------------------------------------------ duplicate keys (item 3)


def _repeat(raw: bytes, key: str, value: object) -> bytes:
    """`raw` (a JSON object) with `"key": value` put in front of its first key."""
    return b"{" + json.dumps(key).encode() + b":" + json.dumps(value).encode() + b"," + raw[1:]


@pytest.mark.parametrize("key", ["coi", "event_id", "site", "occurred_at", "type"])
def test_a_body_with_a_repeated_key_is_refused(journey: Journey, key: str) -> None:
    raw = msgspec.json.encode(body_dict(_step(journey, "label_printed")))
    decoy: dict[str, object] = {
        "coi": "CHW0451260059EM",
        "event_id": str(uuid.uuid4()),
        "site": "NL-LEI",
        "occurred_at": "2020-01-01T00:00:00Z",
        "type": "label_voided",
    }
    assert _code(raw) is None
    assert _code(_repeat(raw, key, decoy[key])) == "duplicate_key"


def test_a_repeated_key_inside_a_manifestation_is_refused(journey: Journey) -> None:
    body = _with(journey, "custody_transferred")
    assert len(body["manifestations"]) == 2  # the same keys in two objects are no repeat
    assert _code(body) is None
    raw = msgspec.json.encode(body).replace(b'"meaning":', b'"meaning":"approved","meaning":', 1)
    assert _code(raw) == "duplicate_key"


def test_a_repeated_key_written_with_escapes_or_spaces_is_refused(journey: Journey) -> None:
    raw = msgspec.json.encode(body_dict(_step(journey, "label_printed")))
    assert _code(b'{"co\\u0069" : "CHW0451260059EM", ' + raw[1:]) == "duplicate_key"
    assert _code(b'{"coi" :"CHW0451260059EM",' + raw[1:]) == "duplicate_key"


def test_a_body_nested_too_deep_is_refused_not_a_crash(journey: Journey) -> None:
    raw = msgspec.json.encode(body_dict(_step(journey, "label_printed")))
    assert _code(b'{"colour":' + b"[" * 100_000 + b"]" * 100_000 + b"," + raw[1:]) == "malformed_json"


def test_an_unsigned_decoy_payload_in_the_envelope_is_refused(journey: Journey) -> None:
    raw = _step(journey, "label_printed")
    decoy = base64.b64encode(b'{"type": "label_voided"}').decode()
    with pytest.raises(Rejected) as err:
        open_envelope(_repeat(raw, "payload", decoy))
    assert (err.value.code, err.value.field) == ("duplicate_key", "payload")
    env = json.loads(raw)
    spaced = json.dumps(env).replace('"keyid": ', '"keyid": "x", "keyid" : ', 1)
    with pytest.raises(Rejected) as err:
        open_envelope(spaced.encode())
    assert err.value.code == "duplicate_key"


# ------------------------------------------------------------------ values (item 17, 5)


def test_a_malformed_din_is_an_invalid_din_like_a_wrong_check_character(journey: Journey) -> None:
    din = journey.din
    wrong_check = din[:13] + ("A" if din[13] != "A" else "B")
    assert _code(_with(journey, "label_printed", din=wrong_check)) == "invalid_din"
    assert _code(_with(journey, "label_printed", din=din[:12])) == "invalid_din"
    assert _code(_with(journey, "label_printed", din="O" + din[1:])) == "invalid_din"
    assert _code(_with(journey, "material_received", scanned_dins=[din.lower()])) == "invalid_din"


def test_the_nil_uuid_is_no_event_id(journey: Journey) -> None:
    assert _code(_with(journey, "label_printed", event_id=str(uuid.UUID(int=0)))) == "invalid_value"


@pytest.mark.parametrize(
    ("name", "value"),
    [("duration_s", 2**64), ("duration_s", 10**9), ("celsius", 1e308), ("limit_celsius", -1000.0)],
)
def test_numbers_are_bounded(journey: Journey, name: str, value: object) -> None:
    body = {
        "type": "temperature_excursion", "event_id": str(uuid.uuid4()), "occurred_at": "2026-01-01T00:00:00Z",
        "site": "US-SSF", "actor": "logger.sh1", "coi": journey.coi, "shipment_id": "SH-1",
        "logger_id": "LOG-1", "celsius": -60.0, "limit_celsius": -150.0, "duration_s": 600,
    }  # fmt: skip
    assert _code(body) is None
    body[name] = value
    assert _code(body) == "invalid_value"


def test_a_volume_is_bounded(journey: Journey) -> None:
    assert _code(_with(journey, "apheresis_collected", volume_ml=1e300)) == "invalid_value"


def test_a_key_that_signs_twice_is_refused(journey: Journey) -> None:
    env = json.loads(_step(journey, "label_printed"))
    env["signatures"].append(dict(env["signatures"][0]))
    with pytest.raises(Rejected) as err:
        open_envelope(json.dumps(env).encode())
    assert (err.value.code, err.value.field) == ("repeated_signature", "signatures[1].keyid")
