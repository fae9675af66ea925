"""What the ledger publishes on Kafka. Site systems publish bare DSSE envelopes (keyed by
COI) on coi.site-events; everything else is one of these msgspec Structs as JSON."""

from __future__ import annotations

from typing import TypeVar

import msgspec

from ledger.wire.version import WIRE_FORMAT

# The Kafka key of everything without a COI (principal registry changes): one key, so one
# partition, so they stay in order.
REGISTRY_KEY = "registry"


class LedgerRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """An accepted record with its receipt, on coi.ledger (key: the COI, or REGISTRY_KEY).

    A record too large for the broker goes by reference: no `envelope`, but its
    `envelope_sha256`; consumers read the envelope from the ledger by `sequence`."""

    sequence: int  # global sequence (the ledger's receipt)
    leaf_index: int  # its leaf in the Merkle log
    leaf_hash: str  # hex SHA-256(0x00 || record bytes)
    stream: str
    version: int
    prev: str
    recorded_at: str
    envelope: str | None = None  # the DSSE envelope exactly as received
    event_id: str
    type: str
    coi: str | None = None
    envelope_sha256: str | None = None  # hex, of the envelope's UTF-8 bytes: set when sent by reference
    format: int = WIRE_FORMAT


class Rejection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A refused input on coi.rejected: the original bytes, a stable code and a message."""

    code: str
    message: str
    original: str  # base64 of the bytes exactly as consumed (the first 64 KiB of an oversize one)
    original_size: int
    original_sha256: str
    source_topic: str
    source_partition: int
    source_offset: int
    rejected_at: str
    field: str | None = None
    event_id: str | None = None
    coi: str | None = None
    format: int = WIRE_FORMAT


class SecurityEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A refused submission in the security log (Part 11.300(d)): in the ledger's table
    `coi_security` and on coi.security (key: the source), never in the GxP record. Who and
    which key are what the envelope claims: only `authenticated` says the signature proved it."""

    code: str
    message: str
    at: str  # when the ledger refused it (RFC 3339, UTC)
    # where it came from: "kafka:TOPIC/PARTITION/OFFSET", "cli:USER@HOST"; room for "token:..."
    source: str
    authenticated: bool  # the actor's signature verified with a key in force
    envelope_sha256: str  # of the bytes as received
    payload_sha256: str | None = None  # of the signed payload, when the envelope could be opened
    principal: str | None = None  # the actor the body names (else the first signature's principal)
    keyid: str | None = None  # the actor's signature's keyid (else the first signature's)
    event_id: str | None = None
    field: str | None = None
    format: int = WIRE_FORMAT


class SignedCheckpoint(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A signed tree head on coi.checkpoints (key: the log origin)."""

    origin: str
    tree_size: int
    root_hash: str  # base64
    note: str  # the C2SP signed note, verbatim
    # An RFC 9162 consistency proof (base64 hashes) from the checkpoint the relay published
    # before this one, of size `proof_from` (0: none), so a monitor can hold it to the last
    # it kept. Absent in messages from before monitors.
    proof_from: int = 0
    consistency: list[str] = []
    # The note with the witnesses' cosignature lines added (C2SP tlog-cosignature), when any
    # witness cosigned it; absent in messages from before witnesses.
    cosigned: str | None = None
    format: int = WIRE_FORMAT


class NewerFormatError(ValueError):
    """A message in a newer wire format than this program reads."""


class _Format(msgspec.Struct):
    format: int = 1  # absent: written before versions existed


_format = msgspec.json.Decoder(_Format)
M = TypeVar("M", LedgerRecord, Rejection, SignedCheckpoint)


def decode(raw: bytes, kind: type[M]) -> M:
    """`raw` as a `kind`, refusing a newer format before its fields (which this program may
    not know) are read. Raises msgspec's errors for a message that is not one."""
    written = _format.decode(raw).format
    if written > WIRE_FORMAT:
        raise NewerFormatError(
            f"a {kind.__name__} in wire format {written}, newer than this program reads "
            f"(up to {WIRE_FORMAT}): upgrade coi-ledger"
        )
    message = msgspec.json.decode(raw, type=kind)
    # A message without the field is of the first format, not of this one.
    return message if message.format == written else msgspec.structs.replace(message, format=written)
