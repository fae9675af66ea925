"""Custody read models: where every unit has been (the timeline) and where it is now.

`project` turns one stored record into rows for both models. It is pure: what a record
leaves unsaid (whose hands a new product is in, which units a shipment carried) it reads
from current custody through the `CustodyReader` it is given. It never judges a record:
the ledger accepted it, so it happened, and the state it leads to is the one
aggregates/therapy.py derives.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

import msgspec

from aggregates.base import body_of
from ledger.wire import events as ev

# (sequence, recorded_at, envelope): recorded_at as LedgerApplication.records() yields it, or as the
# ISO 8601 text a LedgerRecord carries on Kafka.
Record = tuple[int, datetime | str, str]

# Handing a unit over does not end these: a product stays in transit until its shipment is
# received, and what is left of a consumed or infused unit stays consumed or infused.
_STATUS_KEPT_ON_TRANSFER = frozenset({"in_transit", "consumed", "infused"})


class ProjectionError(Exception):
    """A stored record the read models cannot hold; the message names it and says why."""


class CurrentCustody(msgspec.Struct, frozen=True, kw_only=True):
    """Where one unit is now. Unit ids are unique within a COI, so (coi, unit_id) is the key."""

    coi: str
    unit_id: str
    kind: str  # bag | product | sample | unknown (first seen after its creation)
    custodian: str
    site: str  # the site the unit is at, as the therapy sees it (set by collection and receipts)
    custody: str  # held | in_transit | received | consumed | infused: where it is, not whether it may be used
    since: datetime  # occurred_at of the record that set this row
    sequence: int  # that record's sequence: only a newer one replaces the row
    location: str | None = None  # as the last record stated it
    batch_id: str | None = None  # consumed into, made in or sampled from
    shipment_id: str | None = None


class TimelineRow(msgspec.Struct, frozen=True, kw_only=True):
    """One unit moved or located by one record."""

    sequence: int
    position: int  # the unit's place among the units of the record
    unit_id: str
    coi: str
    event_type: str
    custodian: str  # after the event
    site: str  # where the record was signed
    occurred_at: datetime
    recorded_at: datetime
    actor: str
    from_custodian: str | None = None  # custody transfers only: both sign
    to_custodian: str | None = None
    location: str | None = None
    batch_id: str | None = None
    shipment_id: str | None = None
    parents: tuple[str, ...] = ()  # the units a product was made from


class Changes(msgspec.Struct, frozen=True):
    timeline: list[TimelineRow]
    current: list[CurrentCustody]


class CustodyReader(Protocol):
    """What `project` reads of current custody, as the changes before this record left it."""

    def unit(self, coi: str, unit_id: str) -> CurrentCustody | None: ...

    def batch_inputs(self, coi: str, batch_id: str) -> list[CurrentCustody]:
        """The units manufacturing_started consumed into the batch, in the order it listed them."""
        ...

    def shipment_units(self, coi: str, shipment_id: str) -> list[CurrentCustody]:
        """The units shipment_dispatched sent, in the order it listed them."""
        ...


def project(record: Record, custody: CustodyReader, body: ev.Event | None = None) -> Changes:
    """The rows one record adds (timeline) and replaces (current); none if it moves no unit.
    `body`: the record's, if the caller has read it already."""
    sequence, recorded_at, envelope = record
    body = body_of(envelope) if body is None else body
    if not isinstance(body, ev.Journey):
        return Changes([], [])
    try:
        occurred_at = as_utc(body.occurred_at)
    except OverflowError:  # a zone east of UTC in the first hours of year 1
        raise ProjectionError(
            f"sequence {sequence}: occurred_at {body.occurred_at.isoformat()} has no UTC form (before year 1)"
        ) from None
    moved = _moved(body, custody, _Now(sequence, occurred_at))
    transfer = body if isinstance(body, ev.CustodyTransferred) else None
    timeline = [
        TimelineRow(
            sequence=sequence,
            position=position,
            unit_id=state.unit_id,
            coi=body.coi,
            event_type=str(body.__struct_config__.tag),
            custodian=state.custodian,
            site=body.site,
            occurred_at=occurred_at,
            recorded_at=as_utc(recorded_at),
            actor=body.actor,
            from_custodian=transfer.from_custodian if transfer else None,
            to_custodian=transfer.to_custodian if transfer else None,
            location=state.location,
            batch_id=state.batch_id,
            shipment_id=state.shipment_id,
            parents=parents,
        )
        for position, (state, parents) in enumerate(moved)
    ]
    return Changes(timeline, [state for state, _ in moved])


class _Now:
    """Stamps the rows of one record with its sequence and time."""

    def __init__(self, sequence: int, occurred_at: datetime) -> None:
        self.sequence = sequence
        self.occurred_at = occurred_at

    def new(self, body: ev.Journey, unit_id: str, kind: str, custodian: str, **fields: str) -> CurrentCustody:
        return CurrentCustody(
            coi=body.coi, unit_id=unit_id, kind=kind, custodian=custodian, site=body.site,
            custody="held", since=self.occurred_at, sequence=self.sequence, **fields,
        )  # fmt: skip

    def moved(self, was: CurrentCustody, location: str | None = None, **fields: str) -> CurrentCustody:
        # A location not restated is no longer known: the unit has left the one stated before.
        return msgspec.structs.replace(
            was, since=self.occurred_at, sequence=self.sequence, location=location, **fields
        )


def _moved(
    body: ev.Journey, custody: CustodyReader, now: _Now
) -> list[tuple[CurrentCustody, tuple[str, ...]]]:
    """Each unit the record moves or locates: its new state and, for a product, its parents."""
    match body:
        case ev.ApheresisCollected():
            return [(now.new(body, body.unit_id, "bag", body.actor), ())]
        case ev.CustodyTransferred():
            return [
                (now.moved(was, body.location, custodian=body.to_custodian, custody=_after_transfer(was)), ())
                for was in _units(body, body.unit_ids, custody)
            ]
        case ev.MaterialReceived():
            return [
                (now.moved(was, body.location, site=body.site, custody="received"), ())
                for was in _units(body, body.unit_ids, custody)
            ]
        case ev.ManufacturingStarted():
            slot = f"{body.shuttle_id} slot {body.slot}"
            return [
                (now.moved(was, slot, custody="consumed", batch_id=body.batch_id), ())
                for was in _units(body, body.input_unit_ids, custody)
            ]
        case ev.ManufacturingCompleted():
            # As in the therapy: the product is in the hands of whoever holds the first input.
            inputs = custody.batch_inputs(body.coi, body.batch_id)
            custodian = inputs[0].custodian if inputs else body.actor
            parents = tuple(unit.unit_id for unit in inputs)
            return [
                (now.new(body, output.unit_id, "product", custodian, batch_id=body.batch_id), parents)
                for output in body.outputs
            ]
        case ev.QcSampleTaken():
            return [(now.new(body, body.sample_id, "sample", body.actor, batch_id=body.batch_id), ())]
        case ev.ShipmentDispatched():
            return [
                (now.moved(was, custody="in_transit", shipment_id=body.shipment_id), ())
                for was in _units(body, body.unit_ids, custody)
            ]
        case ev.ShipmentReceived():
            return [
                (now.moved(was, body.location, site=body.site, custody="received"), ())
                for was in custody.shipment_units(body.coi, body.shipment_id)
            ]
        case ev.Infused():
            return [(now.moved(was, custody="infused"), ()) for was in _units(body, [body.unit_id], custody)]
    return []


def _units(body: ev.Journey, unit_ids: list[str], custody: CustodyReader) -> list[CurrentCustody]:
    return [custody.unit(body.coi, unit_id) or _unseen(body, unit_id) for unit_id in unit_ids]


def _unseen(body: ev.Journey, unit_id: str) -> CurrentCustody:
    """A unit the model has not seen (the projector started after its collection), taken as
    held by the record's signer at the record's site."""
    return CurrentCustody(
        coi=body.coi, unit_id=unit_id, kind="unknown", custodian=body.actor, site=body.site,
        custody="held", since=as_utc(body.occurred_at), sequence=0,
    )  # fmt: skip


def as_utc(at: datetime | str) -> datetime:
    return (datetime.fromisoformat(at) if isinstance(at, str) else at).astimezone(UTC)


def _after_transfer(was: CurrentCustody) -> str:
    return was.custody if was.custody in _STATUS_KEPT_ON_TRANSFER else "held"
