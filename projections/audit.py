"""The auditors' read models derived from one record: `derive` turns a stored record into
the rows it adds (projections/rows.py).

A journey record is read against its patient's state as aggregates/therapy.py evolves it, so
a status, a hold, a bedside outcome or a flag here is what the rules decided, never a second
reading of the events. `Patients` keeps recent patients' states; one it does not hold is
replayed from the records already projected for that patient.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar
from uuid import UUID

import msgspec

from aggregates.base import body_of
from aggregates.therapy import TherapyState, evolve, excursion_ids
from aggregates.views import bedside, holds_on, unit_status
from ledger.wire import events as ev
from ledger.wire.dsse import Signature, b64decode
from ledger.wire.keys import keyid_for
from projections.custody import ProjectionError, Record, as_utc
from projections.rows import (
    AuditRows,
    Closing,
    EdgeRow,
    FlagRow,
    IdentifierRow,
    QcRow,
    RecordRow,
    RegisterRow,
    RegistryRow,
    SignatureRow,
    StageRow,
    UnitRow,
)

CACHED_PATIENTS = 4096

# Body fields that name an identifier, and what kind of thing each names (a unit's kind,
# bag, product or sample, is read from the state instead).
_ID_FIELDS = {
    "coi": "coi",
    "scanned_coi": "coi",
    "din": "din",
    "scanned_dins": "din",
    "order_id": "order",
    "batch_id": "batch",
    "cartridge_id": "cartridge",
    "shuttle_id": "shuttle",
    "unit_id": "unit",
    "unit_ids": "unit",
    "input_unit_ids": "unit",
    "sample_id": "unit",
    "label_id": "label",
    "shipment_id": "shipment",
    "logger_id": "logger",
    "data_logger_id": "logger",
    "deviation_id": "deviation",
    "hold_id": "hold",
    "corrects_event_id": "event",
}


class _Signed(msgspec.Struct):
    signatures: list[Signature]


_signed = msgspec.json.Decoder(_Signed)


@dataclass
class Patient:
    """One patient as the projections last saw them."""

    state: TherapyState | None = None
    last: int = 0  # the latest sequence evolved: anything at or below it was seen already
    sequences: dict[UUID, int] = field(default_factory=dict)  # event_id -> sequence
    units: dict[str, UnitRow] = field(default_factory=dict)


class Patients:
    """Recent patients' states; `load(coi)` gives the records already projected for one that
    is not held, in sequence order."""

    def __init__(self, load: Callable[[str], list[Record]], size: int = CACHED_PATIENTS) -> None:
        self._load = load
        self._size = size
        self._held: OrderedDict[str, Patient] = OrderedDict()

    def get(self, coi: str) -> Patient:
        patient = self._held.get(coi)
        if patient is not None:
            self._held.move_to_end(coi)
            return patient
        patient, _ = replay(self._load(coi))
        self._held[coi] = patient
        if len(self._held) > self._size:
            self._held.popitem(last=False)
        return patient

    def forget(self) -> None:
        """Drop every patient held: what a rolled-back write left them holding."""
        self._held.clear()


def replay(records: Iterable[Record]) -> tuple[Patient, AuditRows]:
    """One patient from their records alone (a subset, for a view as of a time): where each
    unit stood after the last of them, and what the rules flagged."""
    patient, rows = Patient(), AuditRows()
    for sequence, _, envelope in records:
        _journey(patient, sequence, body_of(envelope), rows)
    return patient, rows


def derive(record: Record, patients: Patients, body: ev.Event | None = None) -> AuditRows:
    """The rows `record` adds; none for a journey record its patient has seen already.
    `body`: the record's, if the caller has read it already."""
    sequence, recorded_at, envelope = record
    body = body_of(envelope) if body is None else body
    rows = AuditRows()
    occurred_at = _time(sequence, body.occurred_at)
    outcome: str | None = None
    corrects: int | None = None
    coi: str | None = None
    if isinstance(body, ev.Journey):
        coi = body.coi
        patient = patients.get(coi)
        if sequence <= patient.last:
            return rows
        outcome = _journey(patient, sequence, body, rows)
        if isinstance(body, ev.RecordCorrected):
            corrects = patient.sequences.get(body.corrects_event_id)
    signatures = _signed.decode(envelope).signatures
    recorded = as_utc(recorded_at)
    if isinstance(body, ev.PRINCIPAL_TYPES):
        rows.registry.append(_registry(sequence, body, occurred_at, recorded, signatures))
    rows.records.append(
        RecordRow(
            sequence=sequence,
            coi=coi,
            event_type=_tag(body),
            event_id=str(body.event_id),
            occurred_at=occurred_at,
            recorded_at=recorded,
            site=body.site,
            actor=body.actor,
            reason=body.reason,
            outcome=outcome,
            corrects=corrects,
            envelope=envelope,
        )
    )
    manifestations = {m.principal: m for m in body.manifestations}
    for position, signature in enumerate(signatures):
        principal = signature.keyid.rsplit(":", 1)[0]
        shown = manifestations.get(principal)
        rows.signatures.append(
            SignatureRow(
                sequence=sequence,
                position=position,
                coi=coi,
                recorded_at=recorded,
                keyid=signature.keyid,
                principal=principal,
                printed_name=shown.printed_name if shown else None,
                signed_at=as_utc(shown.signed_at) if shown else None,
                meaning=shown.meaning if shown else None,
            )
        )
    return rows


def _journey(patient: Patient, sequence: int, body: ev.Event, rows: AuditRows) -> str | None:
    """Evolve the patient by one record and add what it changed to `rows`; the record's outcome."""
    assert isinstance(body, ev.Journey)
    before = patient.state
    if before is None and not isinstance(body, ev.Enrolled):
        raise ProjectionError(
            f"sequence {sequence}: the projections hold no enrolment for {body.coi} "
            "(run `coi projections rebuild`)"
        )
    deviations = dict(before.deviations) if before else {}
    holds = {hold_id: hold.end for hold_id, hold in before.holds.items()} if before else {}
    noted = {event_id: len(notes) for event_id, notes in before.notes.items()} if before else {}
    retest = (
        before is not None
        and isinstance(body, ev.QcResultRecorded)
        and ((body.batch_id, body.test) in before.retests)
    )
    try:
        state = evolve(before, body)
    except (KeyError, IndexError, AssertionError) as exc:
        raise ProjectionError(
            f"sequence {sequence}: {body.coi}'s earlier records are not all in the projections "
            f"({type(exc).__name__}: {exc}; run `coi projections rebuild`)"
        ) from None
    patient.state, patient.last = state, sequence
    patient.sequences[body.event_id] = sequence
    at = _time(sequence, body.occurred_at)

    for event_id, notes in state.notes.items():
        for note in notes[noted.get(event_id, 0) :]:
            rows.flags.append(FlagRow(sequence=patient.sequences[event_id], flagged_by=sequence, note=note))
    rows.identifiers.extend(_identifiers(state, body, sequence, deviations, holds))
    rows.units.extend(_units(patient, state, sequence, at))
    rows.edges.extend(_edges(state, body, sequence))
    rows.register.extend(_opened(state, body, sequence, at, deviations, holds))
    rows.closings.extend(_closed(state, body, sequence, at, deviations, holds))
    rows.stages.extend(_stages(patient, state, body, sequence, at))
    match body:
        case ev.QcResultRecorded():
            rows.qc.append(
                QcRow(
                    sequence=sequence,
                    coi=body.coi,
                    batch_id=body.batch_id,
                    sample_id=body.sample_id,
                    test=body.test,
                    method=body.method,
                    result=body.result,
                    specification=body.specification,
                    passed=body.passed,
                    retest=retest,
                    occurred_at=at,
                    actor=body.actor,
                )
            )
            return "PASS" if body.passed else "FAIL"
        case ev.BedsideIdentityVerified():
            return bedside(state, body.unit_id)
        case ev.Disposition():
            return body.decision.upper()
        case ev.TemperatureExcursion():
            return "EXCURSION"
    return None


def _identifiers(
    state: TherapyState,
    body: ev.Journey,
    sequence: int,
    deviations: Mapping[str, object],
    holds: Mapping[str, object],
) -> list[IdentifierRow]:
    named: dict[tuple[str, str], None] = {(str(body.event_id), "event"): None}
    for name, kind in _id_fields(type(body)):
        value = getattr(body, name)
        for identifier in value if isinstance(value, list) else [] if value is None else [value]:
            named[(str(identifier), _unit_kind(state, str(identifier)) if kind == "unit" else kind)] = None
    for output in getattr(body, "outputs", ()):
        named[(output.unit_id, "product")] = None
    for deviation_id in state.deviations.keys() - deviations.keys():
        named[(deviation_id, "deviation")] = None
    for hold_id in state.holds.keys() - holds.keys():
        named[(hold_id, "hold")] = None
    return [IdentifierRow(identifier=i, kind=k, sequence=sequence, coi=body.coi) for i, k in named]


_ID_FIELDS_OF: dict[type, list[tuple[str, str]]] = {}


def _id_fields(kind: type[ev.Journey]) -> list[tuple[str, str]]:
    """The identifier fields a body type has (looked up once per type: this runs per record)."""
    found = _ID_FIELDS_OF.get(kind)
    if found is None:
        found = _ID_FIELDS_OF[kind] = [(n, k) for n, k in _ID_FIELDS.items() if n in kind.__struct_fields__]
    return found


def _unit_kind(state: TherapyState, unit_id: str) -> str:
    unit = state.units.get(unit_id)
    return unit.kind if unit is not None else "unit"


def _units(patient: Patient, state: TherapyState, sequence: int, at: datetime) -> Iterator[UnitRow]:
    """The units whose row this record changes."""
    for unit in state.units.values():
        row = UnitRow(
            coi=state.coi,
            unit_id=unit.unit_id,
            kind=unit.kind,
            status=unit_status(state, unit),
            holds=tuple(holds_on(state, unit.unit_id)),
            custodian=unit.custodian,
            site=unit.site,
            # As in current custody: the batch a bag was consumed into, too.
            batch_id=unit.batch_id or unit.consumed_by,
            shipment_id=unit.shipment_id,
            bedside=bedside(state, unit.unit_id),
            sequence=sequence,
            since=at,
        )
        was = patient.units.get(unit.unit_id)
        if was is None or _seen(was) != _seen(row):
            patient.units[unit.unit_id] = row
            yield row


def _seen(row: UnitRow) -> tuple[object, ...]:
    return (row.status, row.holds, row.custodian, row.site, row.batch_id, row.shipment_id, row.bedside)


def _edges(state: TherapyState, body: ev.Journey, sequence: int) -> list[EdgeRow]:
    def edge(parent_kind: str, parent: str, relation: str, child_kind: str, child: str) -> EdgeRow:
        return EdgeRow(
            coi=body.coi,
            parent_kind=parent_kind,
            parent=parent,
            relation=relation,
            child_kind=child_kind,
            child=child,
            sequence=sequence,
        )

    match body:
        case ev.ApheresisCollected():
            return [
                edge("patient", body.coi, "donated", "donation", body.din),
                edge("donation", body.din, "collected as", "bag", body.unit_id),
            ]
        case ev.LabelApplied():
            return [edge("label", body.label_id, "applied to", _unit_kind(state, body.unit_id), body.unit_id)]
        case ev.ManufacturingStarted():
            return [
                *(
                    edge(_unit_kind(state, u), u, "consumed into", "batch", body.batch_id)
                    for u in body.input_unit_ids
                ),
                edge("batch", body.batch_id, "made in", "cartridge", body.cartridge_id),
            ]
        case ev.ManufacturingCompleted():
            return [edge("batch", body.batch_id, "produced", "product", o.unit_id) for o in body.outputs]
        case ev.QcSampleTaken():
            return [edge("batch", body.batch_id, "sampled", "sample", body.sample_id)]
        case ev.ShipmentDispatched():
            return [
                edge(_unit_kind(state, u), u, "shipped in", "shipment", body.shipment_id)
                for u in body.unit_ids
            ]
        case ev.Infused():
            return [edge(_unit_kind(state, body.unit_id), body.unit_id, "infused into", "patient", body.coi)]
    return []


def _opened(
    state: TherapyState,
    body: ev.Journey,
    sequence: int,
    at: datetime,
    deviations: dict[str, tuple[str | None, bool]],
    holds: dict[str, datetime | None],
) -> list[RegisterRow]:
    def opened(kind: str, item_id: str, summary: str, **fields: object) -> RegisterRow:
        return RegisterRow(
            coi=body.coi,
            kind=kind,
            item_id=item_id,
            summary=summary,
            opened_sequence=sequence,
            opened_at=at,
            opened_by=body.actor,
            site=body.site,
            reason=body.reason,
            **fields,  # type: ignore[arg-type]
        )

    rows = []
    for deviation_id in state.deviations.keys() - deviations.keys():
        batch_id = state.deviations[deviation_id][0]
        match body:
            case ev.DeviationOpened():
                rows.append(
                    opened(
                        "deviation", deviation_id, body.description, severity=body.severity, batch_id=batch_id
                    )
                )
            case ev.QcResultRecorded():
                summary = f"failed release test {body.test}: result {body.result!r}"
                summary += f", specification {body.specification!r}"
                rows.append(opened("deviation", deviation_id, summary, batch_id=batch_id))
            case ev.TemperatureExcursion():
                rows.append(opened("deviation", deviation_id, _excursion(body), batch_id=batch_id))
    for hold_id in sorted(state.holds.keys() - holds.keys()):
        held = state.holds[hold_id].units
        summary = f"hold on {', '.join(held)}" + (
            f" after {_excursion(body)}" if isinstance(body, ev.TemperatureExcursion) else ""
        )
        rows.append(opened("hold", hold_id, summary, links=tuple(held), batch_id=_batch_of(state, held)))
    match body:
        case ev.TemperatureExcursion():
            shipped = state.shipments[body.shipment_id].unit_ids
            rows.append(
                opened(
                    "excursion",
                    str(body.event_id),
                    _excursion(body),
                    links=excursion_ids(body.event_id),
                    batch_id=_batch_of(state, shipped),
                )
            )
        case ev.RecordCorrected():
            summary = f"{body.field}: {body.old_value!r} -> {body.new_value!r}"
            rows.append(
                opened(
                    "correction",
                    str(body.event_id),
                    summary,
                    links=(str(body.corrects_event_id),),
                    **_closed_now(sequence, at, body.actor, "corrected"),
                )
            )
        case ev.Disposition():
            rows.append(
                opened(
                    "disposition",
                    body.batch_id,
                    f"batch {body.batch_id} {body.decision}",
                    batch_id=body.batch_id,
                    **_closed_now(sequence, at, body.actor, body.decision),
                )
            )
    return rows


def _batch_of(state: TherapyState, unit_ids: list[str]) -> str | None:
    """The batch the units were made in (or went into), so a register per batch finds them."""
    for unit_id in unit_ids:
        unit = state.units.get(unit_id)
        if unit is not None and (unit.batch_id or unit.consumed_by):
            return unit.batch_id or unit.consumed_by
    return None


def _closed_now(sequence: int, at: datetime, by: str, outcome: str) -> dict[str, object]:
    return {"closed_sequence": sequence, "closed_at": at, "closed_by": by, "outcome": outcome}


def _closed(
    state: TherapyState,
    body: ev.Journey,
    sequence: int,
    at: datetime,
    deviations: dict[str, tuple[str | None, bool]],
    holds: dict[str, datetime | None],
) -> list[Closing]:
    def closing(kind: str, item_id: str, outcome: str | None) -> Closing:
        return Closing(
            coi=body.coi, kind=kind, item_id=item_id, sequence=sequence, at=at, by=body.actor, outcome=outcome
        )

    rows = []
    for deviation_id, (_, was_open) in deviations.items():
        if was_open and not state.deviations[deviation_id][1]:
            outcome = body.outcome if isinstance(body, ev.DeviationClosed) else None
            rows.append(closing("deviation", deviation_id, outcome))
            excursion = _excursion_of(state, deviation_id)
            if excursion is not None:  # an excursion is closed when its investigation is
                rows.append(closing("excursion", excursion, outcome))
    for hold_id, end in holds.items():
        if end is None and state.holds[hold_id].end is not None:
            rows.append(closing("hold", hold_id, body.reason or "released"))
    return rows


def _excursion_of(state: TherapyState, deviation_id: str) -> str | None:
    try:
        event_id = UUID(deviation_id.removeprefix("D-"))
    except ValueError:
        return None
    opened_by = state.bodies.get(event_id)
    return str(event_id) if isinstance(opened_by, ev.TemperatureExcursion) else None


def _excursion(body: ev.TemperatureExcursion) -> str:
    return (
        f"temperature excursion on shipment {body.shipment_id}: {body.celsius} °C against a limit of "
        f"{body.limit_celsius} °C for {body.duration_s} s (logger {body.logger_id})"
    )


B = TypeVar("B", bound=ev.Journey)


def _first(state: TherapyState, kind: type[B], **match: object) -> B | None:
    """The first record of `kind` whose fields equal `match`."""
    for body in state.bodies.values():
        if isinstance(body, kind) and all(getattr(body, k) == v for k, v in match.items()):
            return body
    return None


def _stages(
    patient: Patient, state: TherapyState, body: ev.Journey, sequence: int, at: datetime
) -> list[StageRow]:
    """The stages this record ends (README: Stages)."""
    ends: list[tuple[str, str, ev.Journey | None]] = []
    match body:
        case ev.ApheresisCollected():
            ends.append(("enrolment to collection", body.unit_id, _first(state, ev.Enrolled)))
        case ev.MaterialReceived():
            for unit_id in body.unit_ids:
                collected = _first(state, ev.ApheresisCollected, unit_id=unit_id)
                ends.append(("collection to manufacturing site", unit_id, collected))
        case ev.ManufacturingCompleted():
            ends.append(
                (
                    "manufacturing",
                    body.batch_id,
                    _first(state, ev.ManufacturingStarted, batch_id=body.batch_id),
                )
            )
        case ev.Disposition():
            completed = _first(state, ev.ManufacturingCompleted, batch_id=body.batch_id)
            ends.append(("QC and disposition", body.batch_id, completed))
        case ev.ShipmentDispatched():
            batch_id = state.units[body.unit_ids[0]].batch_id
            released = _first(state, ev.Disposition, batch_id=batch_id) if batch_id else None
            ends.append(("release to dispatch", body.shipment_id, released))
        case ev.ShipmentReceived():
            ends.append(
                (
                    "shipment",
                    body.shipment_id,
                    _first(state, ev.ShipmentDispatched, shipment_id=body.shipment_id),
                )
            )
        case ev.Infused():
            shipment_id = state.units[body.unit_id].shipment_id
            received = _first(state, ev.ShipmentReceived, shipment_id=shipment_id) if shipment_id else None
            ends.append(("receipt to infusion", body.unit_id, received))
            ends.append(("vein to vein", body.unit_id, _first(state, ev.ApheresisCollected)))
    rows = []
    for stage, subject, start in ends:
        if start is None:
            continue
        started = _time(sequence, start.occurred_at)
        rows.append(
            StageRow(
                coi=body.coi,
                stage=stage,
                subject=subject,
                site=body.site,
                started_at=started,
                ended_at=at,
                seconds=(at - started).total_seconds(),
                start_sequence=patient.sequences[start.event_id],
                end_sequence=sequence,
            )
        )
    return rows


def _registry(
    sequence: int,
    body: ev.RegistryEvent,
    occurred_at: datetime,
    recorded_at: datetime,
    signatures: list[Signature],
) -> RegistryRow:
    common = {
        "sequence": sequence,
        "principal_id": body.principal_id,
        "actor": body.actor,
        "authority": tuple(s.keyid for s in signatures),
        "occurred_at": occurred_at,
        "recorded_at": recorded_at,
        "reason": body.reason,
    }
    match body:
        case ev.PrincipalRegistered():
            return RegistryRow(
                change="registered",
                keyid=_keyid(body.principal_id, body.public_key),
                effective_at=_time(sequence, body.valid_from),
                printed_name=body.printed_name,
                kind=body.kind,
                roles=tuple(body.roles),
                sites=tuple(body.sites),
                **common,  # type: ignore[arg-type]
            )
        case ev.PrincipalKeyRotated():
            return RegistryRow(
                change="key_rotated",
                keyid=_keyid(body.principal_id, body.public_key),
                effective_at=_time(sequence, body.valid_from),
                routine=body.routine,
                **common,  # type: ignore[arg-type]
            )
        case ev.PrincipalSitesBound():
            return RegistryRow(
                change="sites_bound",
                keyid=None,
                effective_at=occurred_at,
                sites=tuple(body.sites),
                **common,  # type: ignore[arg-type]
            )
        case ev.PrincipalKeyLocked() | ev.PrincipalKeyUnlocked():
            locked = isinstance(body, ev.PrincipalKeyLocked)
            return RegistryRow(
                change="key_locked" if locked else "key_unlocked",
                keyid=body.keyid,
                effective_at=occurred_at,
                **common,  # type: ignore[arg-type]
            )
    return RegistryRow(
        change="revoked",
        keyid=body.keyid,
        effective_at=_time(sequence, body.effective_at),
        **common,  # type: ignore[arg-type]
    )


def _keyid(principal_id: str, public_key: str) -> str:
    return keyid_for(principal_id, b64decode(public_key, "public_key"))


def _time(sequence: int, at: datetime) -> datetime:
    try:
        return as_utc(at)
    except OverflowError:  # a zone east of UTC in the first hours of year 1
        raise ProjectionError(
            f"sequence {sequence}: {at.isoformat()} has no UTC form (before year 1)"
        ) from None


def _tag(body: ev.Event) -> str:
    return str(body.__struct_config__.tag)
