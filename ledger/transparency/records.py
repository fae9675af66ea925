"""A record: one stored envelope with its place in its aggregate's chain. Its canonical
bytes are what the Merkle log commits to (leaf = SHA-256(0x00 || bytes)) and what the next
record of the same aggregate names as `prev`."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from uuid import UUID

import msgspec

from ledger.transparency.merkle import leaf_hash
from ledger.wire.dsse import b64decode

FIRST_PREV = "0" * 64  # the `prev` of an aggregate's first record


class Record(msgspec.Struct, frozen=True):
    """Field order is part of the format: the canonical bytes are this Struct as JSON."""

    stream: str  # the aggregate id (UUID, hex with dashes)
    version: int
    prev: str  # hex leaf hash of the previous record of the stream, FIRST_PREV for the first
    recorded_at: str  # ISO 8601 UTC, as stored
    envelope: str  # the DSSE envelope exactly as received


def record_bytes(stream: UUID, version: int, prev: str, recorded_at: datetime | str, envelope: str) -> bytes:
    stamp = recorded_at if isinstance(recorded_at, str) else recorded_at.isoformat()
    return canonical(Record(str(stream), version, prev, stamp, envelope))


def record_hash(stream: UUID, version: int, prev: str, recorded_at: datetime | str, envelope: str) -> str:
    """The record's leaf hash, hex."""
    return leaf_hash(record_bytes(stream, version, prev, recorded_at, envelope)).hex()


class _StoredState(msgspec.Struct):
    """The fields of a stored event's state that make up its record (eventsourcing JSON)."""

    timestamp: dict[str, str]
    envelope: str
    prev: str


_state = msgspec.json.Decoder(_StoredState)


def stored_record(stream: UUID | str, version: int, state: bytes) -> Record:
    """The record as the event store holds it (raises msgspec errors if the row is mangled)."""
    s = _state.decode(state)
    return Record(str(stream), version, s.prev, s.timestamp["_data_"], s.envelope)


@lru_cache(maxsize=4096)
def stream_name(originator_id: UUID | str) -> str:
    """The aggregate id as records spell it, from an events table row: SQLite stores 32 hex
    digits, PostgreSQL a UUID."""
    return str(originator_id if isinstance(originator_id, UUID) else UUID(originator_id))


def row_record(row: tuple[int, UUID | str, int, bytes]) -> Record:
    """The record of a row (sequence, originator id, version, state) read from the events table."""
    return stored_record(stream_name(row[1]), row[2], row[3])


class _Payload(msgspec.Struct):
    payload: str


class Header(msgspec.Struct, frozen=True):
    """What a stored body says about itself: its type, event id and COI (none outside a
    patient's journey). The ledger checked the whole body when it accepted it."""

    type: str
    event_id: UUID
    coi: str | None = None


_payload = msgspec.json.Decoder(_Payload)
_header = msgspec.json.Decoder(Header)


def payload_of(envelope: str) -> bytes:
    """The body bytes a stored envelope carries: what its signatures sign."""
    return b64decode(_payload.decode(envelope).payload, "payload")


def header_of_body(body: bytes) -> Header:
    """The header of a stored body, without decoding the rest of it."""
    return _header.decode(body)


def header_of(envelope: str) -> Header:
    """The header of a stored envelope's body."""
    return header_of_body(payload_of(envelope))


def canonical(record: Record) -> bytes:
    return msgspec.json.encode(record)
