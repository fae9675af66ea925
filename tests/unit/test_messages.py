"""The Kafka messages carry their wire format: older messages (without one) still decode,
a newer major version is refused by name before its unknown fields are read."""

from __future__ import annotations

import msgspec
import pytest

from ledger.wire.messages import LedgerRecord, NewerFormatError, Rejection, SignedCheckpoint, decode
from ledger.wire.version import WIRE_FORMAT

RECORD = LedgerRecord(
    sequence=7, leaf_index=6, leaf_hash="00" * 32, stream="s", version=1, prev="p",
    recorded_at="2026-01-01T00:00:00+00:00", envelope="{}", event_id="e", type="t",
)  # fmt: skip
REJECTION = Rejection(
    "bad_signature", "m", "b3JpZ2luYWw=", 8, "00", "coi.site-events", 0, 3, "2026-01-01T00:00:00Z"
)
CHECKPOINT = SignedCheckpoint("coi.test/log", 7, "cm9vdA==", "note")
MESSAGES = [RECORD, REJECTION, CHECKPOINT]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_a_message_says_its_format_and_reads_back(message: msgspec.Struct) -> None:
    raw = msgspec.json.encode(message)
    assert msgspec.json.decode(raw)["format"] == WIRE_FORMAT
    assert decode(raw, type(message)) == message


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_a_message_written_before_versions_is_format_1(message: msgspec.Struct) -> None:
    old = msgspec.json.decode(msgspec.json.encode(message))
    del old["format"]
    assert decode(msgspec.json.encode(old), type(message)).format == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_a_newer_major_version_is_refused_by_name(message: msgspec.Struct) -> None:
    newer = {**msgspec.json.decode(msgspec.json.encode(message)), "format": WIRE_FORMAT + 1, "new_field": 1}
    with pytest.raises(NewerFormatError, match=f"wire format {WIRE_FORMAT + 1}.*upgrade coi-ledger"):
        decode(msgspec.json.encode(newer), type(message))


def test_a_message_of_this_format_with_an_unknown_field_is_still_malformed() -> None:
    raw = {**msgspec.json.decode(msgspec.json.encode(CHECKPOINT)), "extra": 1}
    with pytest.raises(msgspec.ValidationError):
        decode(msgspec.json.encode(raw), SignedCheckpoint)


def test_a_checkpoint_from_before_monitors_reads_as_one_without_a_proof() -> None:
    old = {"origin": "coi.test/log", "tree_size": 7, "root_hash": "cm9vdA==", "note": "note", "format": 1}
    message = decode(msgspec.json.encode(old), SignedCheckpoint)
    assert (message.proof_from, message.consistency) == (0, [])
    proven = msgspec.structs.replace(CHECKPOINT, proof_from=4, consistency=["cm9vdA=="])
    assert decode(msgspec.json.encode(proven), SignedCheckpoint) == proven


def test_a_checkpoint_from_before_witnesses_reads_without_cosignatures() -> None:
    old = b'{"origin": "coi.test/log", "tree_size": 7, "root_hash": "cm9vdA==", "note": "note", "format": 1}'
    assert decode(old, SignedCheckpoint).cosigned is None
    cosigned = msgspec.structs.replace(CHECKPOINT, cosigned="note\n\u2014 w1 AAAA\n")
    assert decode(msgspec.json.encode(cosigned), SignedCheckpoint) == cosigned
