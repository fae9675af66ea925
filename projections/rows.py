"""The auditors' read models, one Struct per table row (columns in field order).

Every row is derived from one record and what came before it *for the same patient* (or,
for the registry, from registry records alone): records of different patients reach the
projector through different Kafka partitions in no fixed order, so nothing here may depend
on that order, and the live tables equal a rebuild's.
"""

from __future__ import annotations

from datetime import datetime

import msgspec


class RecordRow(msgspec.Struct, frozen=True, kw_only=True):
    """proj_records: every stored record, in log order; the trail and every timeline read it."""

    sequence: int
    coi: str | None  # None: a registry or policy record
    event_type: str
    event_id: str
    occurred_at: datetime
    recorded_at: datetime
    site: str
    actor: str
    reason: str | None = None
    # What the record decided, where it decides something: MATCH or MISMATCH (bedside check),
    # PASS or FAIL (a QC result), RELEASED or REJECTED (a disposition), EXCURSION (a
    # temperature excursion, which holds the shipment's units).
    outcome: str | None = None
    corrects: int | None = None  # the sequence of the record a correction corrects
    envelope: str


class SignatureRow(msgspec.Struct, frozen=True, kw_only=True):
    """proj_signatures: every signature on every record (the Part 11 manifest). The printed name,
    time and meaning are the record's manifestation for the signer; a device or site system
    signs without one (its name and kind come from the registry when read)."""

    sequence: int
    position: int  # the signature's place in the envelope
    coi: str | None
    recorded_at: datetime  # the record's: an actor's audit trail reads them in this order
    keyid: str
    principal: str
    printed_name: str | None = None
    signed_at: datetime | None = None
    meaning: str | None = None


class FlagRow(msgspec.Struct, frozen=True, kw_only=True):
    """proj_flags: what the rules flagged on a record, and which record made them say so (a
    hold reported later flags the steps inside it)."""

    sequence: int
    flagged_by: int
    note: str


class IdentifierRow(msgspec.Struct, frozen=True, kw_only=True):
    """proj_identifiers: each identifier a record names, with its patient."""

    identifier: str
    kind: str  # coi | din | batch | cartridge | bag | product | sample | unit | label | shipment | ...
    sequence: int
    coi: str


class UnitRow(msgspec.Struct, frozen=True, kw_only=True):
    """proj_units: every unit's status now, and the holds in force on it."""

    coi: str
    unit_id: str
    kind: str
    status: str  # aggregates.views.UnitStatus
    holds: tuple[str, ...]
    custodian: str
    site: str
    batch_id: str | None  # consumed into, made in or sampled from
    shipment_id: str | None
    bedside: str | None  # MATCH | MISMATCH: the latest bedside check
    sequence: int  # the record that set this row
    since: datetime


class EdgeRow(msgspec.Struct, frozen=True, kw_only=True):
    """proj_genealogy: patient -> donations -> bags -> batch (cartridge) -> products and samples
    -> shipments -> infusion."""

    coi: str
    parent_kind: str
    parent: str
    relation: str
    child_kind: str
    child: str
    sequence: int


class QcRow(msgspec.Struct, frozen=True, kw_only=True):
    """proj_qc: each release test result against its specification."""

    sequence: int
    coi: str
    batch_id: str
    sample_id: str
    test: str
    method: str
    result: str
    specification: str
    passed: bool
    retest: bool  # recorded under a retest QA authorised
    occurred_at: datetime
    actor: str


class RegisterRow(msgspec.Struct, frozen=True, kw_only=True):
    """proj_register: deviations, holds, excursions, corrections and dispositions network-wide,
    each open until the record that closes it (corrections and dispositions close at once)."""

    coi: str
    kind: str  # deviation | hold | excursion | correction | disposition
    item_id: str
    summary: str
    opened_sequence: int
    opened_at: datetime
    opened_by: str
    site: str
    reason: str | None = None
    severity: str | None = None
    batch_id: str | None = None
    links: tuple[str, ...] = ()  # the holds and deviations an excursion opened, a corrected record
    closed_sequence: int | None = None
    closed_at: datetime | None = None
    closed_by: str | None = None
    outcome: str | None = None


class Closing(msgspec.Struct, frozen=True, kw_only=True):
    """A record that closes a register entry opened before it."""

    coi: str
    kind: str
    item_id: str
    sequence: int
    at: datetime
    by: str
    outcome: str | None


class RegistryRow(msgspec.Struct, frozen=True, kw_only=True):
    """proj_registry_history: who registered, rotated or revoked a key, on whose authority, why."""

    sequence: int
    principal_id: str
    change: str  # registered | key_rotated | revoked | sites_bound | key_locked | key_unlocked
    keyid: str | None  # the key registered or rotated in; a revoked one (None: every key)
    effective_at: datetime  # valid_from, or the revocation's effective_at
    actor: str
    authority: tuple[str, ...]  # the keyids that signed the change
    occurred_at: datetime
    recorded_at: datetime
    printed_name: str | None = None  # registered only, like kind and roles
    kind: str | None = None
    roles: tuple[str, ...] = ()
    routine: bool = False
    reason: str | None = None
    sites: tuple[str, ...] = ()  # registered or sites_bound: the sites it binds (issue 14)


class StageRow(msgspec.Struct, frozen=True, kw_only=True):
    """proj_stages: how long each stage of the journey took, at the site where it ended."""

    coi: str
    stage: str
    subject: str  # the batch, shipment or unit the stage is about
    site: str
    started_at: datetime
    ended_at: datetime
    seconds: float
    start_sequence: int
    end_sequence: int


class AuditRows(msgspec.Struct):
    """What one record adds to the audit read models."""

    records: list[RecordRow] = []
    signatures: list[SignatureRow] = []
    flags: list[FlagRow] = []
    identifiers: list[IdentifierRow] = []
    units: list[UnitRow] = []
    edges: list[EdgeRow] = []
    qc: list[QcRow] = []
    register: list[RegisterRow] = []
    closings: list[Closing] = []
    registry: list[RegistryRow] = []
    stages: list[StageRow] = []
