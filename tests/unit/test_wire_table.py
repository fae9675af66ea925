"""Every reason code the wire layer gives, one row each: the bytes, the code, the field.
Plain bytes in, no database, no keys (signatures are decoded, never verified here)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import msgspec
import pytest

from ledger.wire.decoding import decode_body
from ledger.wire.dsse import MAX_ENVELOPE_BYTES, PAYLOAD_TYPE, check_size, open_envelope
from ledger.wire.rejection import ReasonCode, Rejected

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
_SIG = base64.b64encode(bytes(64)).decode()


def _body(**changes: object) -> bytes:
    """A valid label_printed body, with `changes` (None removes a field)."""
    body: dict[str, object] = {
        "type": "label_printed",
        "event_id": "0b6e0e5e-6a7e-4a53-8b48-000000000001",
        "occurred_at": "2026-01-01T11:00:00Z",
        "site": "US-BDW",
        "actor": "nurse.bdw",
        "coi": "CHW000026AAAAAA",
        "label_id": "L-1",
        "din": "G123498654321H",
    }
    body.update(changes)
    return msgspec.json.encode({k: v for k, v in body.items() if v is not None})


def _envelope(
    payload: str | None = None, payload_type: str = PAYLOAD_TYPE, signatures: object = None
) -> bytes:
    return msgspec.json.encode(
        {
            "payloadType": payload_type,
            "payload": base64.b64encode(_body()).decode() if payload is None else payload,
            "signatures": [{"keyid": "nurse.bdw:0123456789abcdef", "sig": _SIG}]
            if signatures is None
            else signatures,
        }
    )


def _decode(raw: bytes) -> object:
    return decode_body(raw, NOW)


def _open(raw: bytes) -> object:
    return open_envelope(raw)


def _size(raw: bytes) -> None:
    check_size(raw)


# (what, check, input, code, field)
WIRE: list[tuple[str, object, bytes, ReasonCode, str | None]] = [
    ("body not JSON", _decode, b"{", ReasonCode.MALFORMED_JSON, None),
    ("envelope not JSON", _open, b'{"payload"', ReasonCode.MALFORMED_JSON, None),
    ("not an envelope", _open, b'{"payload": 1}', ReasonCode.MALFORMED_ENVELOPE, None),
    ("other payload type", _open, _envelope(payload_type="text/plain"), ReasonCode.WRONG_PAYLOAD_TYPE, "payloadType"),
    ("payload not base64", _open, _envelope(payload="not base64!"), ReasonCode.BAD_BASE64, "payload"),
    ("no signature", _open, _envelope(signatures=[]), ReasonCode.MISSING_SIGNATURE, "signatures"),
    ("over the size limit", _size, b" " * (MAX_ENVELOPE_BYTES + 1), ReasonCode.OVERSIZE, None),
    ("a key twice in the body", _decode, _body()[:-1] + b',"label_id":"L-2"}', ReasonCode.DUPLICATE_KEY, "label_id"),
    (
        "one key signs twice",
        _open,
        _envelope(signatures=[{"keyid": "a.b:0123456789abcdef", "sig": _SIG}] * 2),
        ReasonCode.REPEATED_SIGNATURE,
        "signatures[1].keyid",
    ),
    ("unknown type", _decode, _body(type="label_eaten"), ReasonCode.UNKNOWN_EVENT_TYPE, "type"),
    ("unknown field", _decode, _body(colour="red"), ReasonCode.UNKNOWN_FIELD, "colour"),
    ("missing field", _decode, _body(label_id=None), ReasonCode.MISSING_FIELD, "label_id"),
    ("wrong type", _decode, _body(label_id=7), ReasonCode.WRONG_TYPE, "label_id"),
    ("value outside its pattern", _decode, _body(site="bridgewater"), ReasonCode.INVALID_VALUE, "site"),
    ("time without a zone", _decode, _body(occurred_at="2026-01-01T11:00:00"), ReasonCode.NAIVE_TIMESTAMP, "occurred_at"),
    ("DIN check character", _decode, _body(din="G123498654321A"), ReasonCode.INVALID_DIN, "din"),
    ("control character", _decode, _body(reason="a C1 \u0085 control"), ReasonCode.CONTROL_CHARACTER, "reason"),
    ("a labelled date of birth", _decode, _body(reason="DOB: 1961-07-04"), ReasonCode.PHI_SUSPECTED, "reason"),
    ("a blank reason", _decode, _body(reason=" \t "), ReasonCode.INVALID_VALUE, "reason"),
    ("from the future", _decode, _body(occurred_at="2026-01-01T13:00:00Z"), ReasonCode.FUTURE_TIMESTAMP, "occurred_at"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "check", "raw", "code", "field"), WIRE, ids=[row[0] for row in WIRE])
def test_the_wire_refuses_with_the_code_and_names_the_field(
    what: str, check: object, raw: bytes, code: ReasonCode, field: str | None
) -> None:
    assert callable(check)
    with pytest.raises(Rejected) as refused:
        check(raw)
    assert (refused.value.code, refused.value.field) == (code, field), refused.value.message


def test_the_unchanged_body_and_envelope_pass() -> None:
    """The rows differ from an accepted input by their one change."""
    assert _decode(_body()) is not None
    assert _open(_envelope()) is not None
