"""The therapy: one patient's vein-to-vein journey under one COI, as plain rules over plain
state: `decide` says why an event may not come next, `evolve` applies one that may.

The COI is the consistency boundary: its material units (bags, samples, final product),
its manufacturing batch and its shipments live inside this aggregate, so every rule that
spans them ("no shipment before QA release") is checked against one consistent state and
each signed envelope becomes exactly one stored event in one per-patient chain.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal, assert_never
from uuid import NAMESPACE_URL, UUID, uuid5

import msgspec

from aggregates.base import Context
from aggregates.policy import SITES_ADOPTED
from aggregates.roles import allowed
from ledger.wire import events as ev
from ledger.wire.identifiers import din_fin
from ledger.wire.patient import bedside_signature_valid
from ledger.wire.rejection import ReasonCode, Rejected

NAMESPACE = uuid5(NAMESPACE_URL, "https://coi-ledger.example/therapies")

# The release panel: each must have a passing result before QA may release a batch.
REQUIRED_QC = ("sterility", "mycoplasma", "endotoxin", "identity", "potency", "viability")

# The only fields a correction may change: transcribed descriptions and times that no rule
# decided on. Anything else (identifiers, parties, results, decisions, what the rules built
# state from) is handled by a deviation, never by editing it after the fact.
CORRECTABLE: dict[str, frozenset[str]] = {
    "apheresis_collected": frozenset({"volume_ml", "started_at", "ended_at"}),
    "custody_transferred": frozenset({"location", "condition"}),
    "material_received": frozenset({"location", "condition"}),
    "manufacturing_step_completed": frozenset({"started_at", "ended_at", "material_lots"}),
    "qc_result_recorded": frozenset({"method"}),
    "shipment_received": frozenset({"location", "condition"}),
    "infused": frozenset({"thaw_started_at"}),
    "deviation_opened": frozenset({"description"}),
    "deviation_closed": frozenset({"outcome"}),
}

# Each step's place on the patient's timeline: the entities whose latest step it may not
# precede, and those it moves on (names resolved by Therapy._entities). Temperature readings
# move nothing: a logger read late still belongs to its transit window.
TIMELINE: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "apheresis_collected": (("coi",), ("unit_id",)),
    "label_printed": (("coi",), ("label_id",)),
    "label_applied": (("label_id", "unit_id"), ("label_id", "unit_id")),
    "label_voided": (("label_id",), ("label_id",)),
    "custody_transferred": (("unit_ids",), ("unit_ids",)),
    "material_received": (("unit_ids",), ("unit_ids",)),
    "manufacturing_started": (("input_unit_ids",), ("batch_id",)),
    "manufacturing_step_completed": (("batch_id",), ("batch_id",)),
    "manufacturing_completed": (("batch_id",), ("batch_id", "outputs")),
    "qc_sample_taken": (("batch_id",), ("sample_id",)),
    "qc_result_recorded": (("sample_id", "retest"), ("qc",)),
    "retest_authorised": (("deviation_id",), ("retest",)),
    "disposition": (("batch_id", "qc"), ("batch_id", "outputs")),
    "shipment_dispatched": (("unit_ids",), ("unit_ids", "shipment_id")),
    "temperature_recorded": (("shipment_id",), ()),
    "temperature_excursion": (("shipment_id",), ()),
    "shipment_received": (("shipment_id", "shipment_units"), ("shipment_units",)),
    "bedside_identity_verified": (("unit_id",), ("unit_id",)),
    "infused": (("unit_id",), ("unit_id",)),
    "deviation_opened": (("coi", "batch_id"), ("deviation_id",)),
    "deviation_closed": (("deviation_id",), ("deviation_id",)),
    "hold_placed": (("coi",), ("hold_id",)),
    "hold_released": (("hold_id",), ("hold_id",)),
    "record_corrected": (("coi",), ()),
    "patient_key_registered": (("coi",), ()),
    "treatment_site_changed": (("coi",), ()),
    "enrolled": ((), ()),
}
# The values unique across the whole ledger that a record of each type consults: (claim
# kind, body field, whether the record claims it). The ledger keeps them in its claims
# index; a verifier's replay decides them in sequence order before it replays the patients.
CLAIMS: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "apheresis_collected": (("din", "din", True),),
    "label_printed": (("din", "din", False),),
    "manufacturing_started": (("cartridge", "cartridge_id", True),),
}
_KINDS = {
    "unit_id": "unit",
    "unit_ids": "unit",
    "input_unit_ids": "unit",
    "sample_id": "unit",
    "label_id": "label",
    "batch_id": "batch",
    "shipment_id": "shipment",
    "deviation_id": "deviation",
    "hold_id": "hold",
}


@lru_cache(maxsize=65536)
def therapy_uuid(coi: str) -> UUID:
    return uuid5(NAMESPACE, coi)


def failure_deviation(event_id: UUID) -> str:
    """The deviation an excursion or a failed release test opens, derived from its event id."""
    return f"D-{event_id}"


def excursion_ids(event_id: UUID) -> tuple[str, str]:
    """The hold and deviation a temperature excursion opens, derived from its event id."""
    return f"H-{event_id}", failure_deviation(event_id)


def bedside_deviation(s: TherapyState, b: ev.Event) -> dict[str, Any] | None:
    """The deviation the ledger opens when it has accepted a bedside check that did not match
    (`s`: the therapy with `b` recorded), as a deviation_opened body without its header's
    event_id, occurred_at and actor; None for any other record. The ledger's service principal
    signs it (ledger/app/application.py): a signed record every verifier already checks, where
    a change to `evolve` would alter what old records replay to."""
    if not isinstance(b, ev.BedsideIdentityVerified) or s.bedside.get(b.unit_id) != "mismatch":
        return None
    unit = s.units.get(b.unit_id)
    return {
        "type": "deviation_opened", "site": b.site, "coi": s.coi,
        "deviation_id": failure_deviation(b.event_id), "severity": "critical",
        "batch_id": None if unit is None else unit.batch_id,
        "description": f"bedside identity check of unit {b.unit_id}: the scan did not match the "
        f"patient enrolled under {s.coi}; infusion is blocked",
        "reason": f"opened by the ledger: bedside identity mismatch recorded by event {b.event_id}",
    }  # fmt: skip


# How the last bedside check of a unit came out. "v0.1_proof": a stored v0.1 record whose proof
# equalled the commitment; it replays as it was recorded but allows no new infusion, because
# anyone reading the ledger could have copied that proof.
BedsideMatch = Literal["signature", "v0.1_proof", "mismatch"]


@dataclass
class Unit:
    unit_id: str
    kind: str  # bag | product | sample
    custodian: str
    site: str
    din: str | None = None
    batch_id: str | None = None
    parents: list[str] = field(default_factory=list)
    received_site: str | None = None
    consumed_by: str | None = None
    shipment_id: str | None = None
    infused: bool = False


@dataclass
class Batch:
    batch_id: str
    site: str
    cartridge_id: str
    inputs: list[str]
    started_at: datetime  # manufacturing_started's occurred_at: no step begins before it
    status: str = "in_progress"  # completed | released | rejected
    steps: list[str] = field(default_factory=list)
    windows: dict[UUID, tuple[datetime, datetime]] = field(default_factory=dict)  # step event -> its times
    outputs: list[str] = field(default_factory=list)
    samples: set[str] = field(default_factory=set)
    qc: dict[str, bool] = field(default_factory=dict)


@dataclass
class Hold:
    units: list[str]
    start: datetime
    end: datetime | None = None  # released

    def covers(self, unit_id: str, at: datetime) -> bool:
        """In force for this unit at `at`; an open hold blocks whatever follows it."""
        return unit_id in self.units and (self.end is None or self.start <= at < self.end)


@dataclass
class Shipment:
    shipment_id: str
    unit_ids: list[str]
    destination_site: str
    status: str = "in_transit"  # received
    received_at: datetime | None = None


@dataclass
class TherapyState:
    """One patient's journey as the rules see it; projections read the stored envelopes."""

    coi: str
    treatment_site: str
    patient_key: str | None = None
    patient_commitment: str | None = None  # v0.1 enrolments only
    units: dict[str, Unit] = field(default_factory=dict)
    labels: dict[str, tuple[str, str]] = field(default_factory=dict)  # label -> (din, status)
    batches: dict[str, Batch] = field(default_factory=dict)
    shipments: dict[str, Shipment] = field(default_factory=dict)
    holds: dict[str, Hold] = field(default_factory=dict)
    deviations: dict[str, tuple[str | None, bool]] = field(default_factory=dict)  # -> (batch, open)
    # opened by a failed release test -> (batch, test)
    qc_deviations: dict[str, tuple[str, str]] = field(default_factory=dict)
    retests: dict[tuple[str, str], str] = field(default_factory=dict)  # (batch, test) authorised -> deviation
    times: dict[tuple[str, str], datetime] = field(default_factory=dict)  # entity -> its last step
    notes: dict[UUID, list[str]] = field(default_factory=dict)  # event -> what the views must flag
    bedside: dict[str, BedsideMatch] = field(default_factory=dict)
    bodies: dict[UUID, ev.Event] = field(default_factory=dict)
    corrections: dict[tuple[UUID, str], str] = field(default_factory=dict)


# ------------------------------------------------------------------ decide and evolve


def decide(state: TherapyState | None, body: ev.JourneyEvent, ctx: Context) -> Rejected | None:
    """Why `body` may not be recorded next in the journey `state` (None: not enrolled yet),
    or None. Changes nothing."""
    try:
        _late_entry(body, ctx)
        if state is None:
            if not isinstance(body, ev.Enrolled):
                raise Rejected(ReasonCode.NOT_ENROLLED, f"{body.coi} has not been enrolled", "coi")
            _enrolment(body, ctx)
            return None
        _handlers(body)[0](state, body, ctx)
        for key in _entities(state, body, TIMELINE[_tag(body)][0]):
            since = state.times.get(key)
            if since is not None and body.occurred_at < since:
                raise Rejected(
                    ReasonCode.BEFORE_PREREQUISITE,
                    f"occurred_at {body.occurred_at.isoformat()} is before the last step on "
                    f"{key[0]} {key[1]} ({since.isoformat()}), which this step follows",
                    "occurred_at",
                )
    except Rejected as rejected:
        return rejected
    return None


def evolve(state: TherapyState | None, body: ev.JourneyEvent) -> TherapyState:
    """The journey after `body`, which `decide` accepted (or a stored record, accepted then).
    Changes `state` in place and returns it: the ledger keeps one state per patient in its
    cache, and copying it per event would cost more than the rules."""
    if state is None:
        assert isinstance(body, ev.Enrolled), f"a therapy starts with its enrolment, not {_tag(body)}"
        state = TherapyState(body.coi, body.treatment_site)
    state.bodies[body.event_id] = body
    _handlers(body)[1](state, body)
    for key in _entities(state, body, TIMELINE[_tag(body)][1]):
        state.times[key] = body.occurred_at
    return state


_Decide = Callable[[TherapyState, Any, Context], None]  # raises Rejected
_Evolve = Callable[[TherapyState, Any], None]
_HANDLERS: dict[type, tuple[_Decide, _Evolve]] = {}


def _handlers(body: ev.JourneyEvent) -> tuple[_Decide, _Evolve]:
    """The rule and the change for the body's class. The match below picks them; a dict
    remembers its answer per class, because a class pattern costs an isinstance call per
    case tried (about 0.25 us on a msgspec class), which over 27 cases would cost several
    times what the rule itself does for a small event."""
    found = _HANDLERS.get(type(body))
    if found is None:
        found = _HANDLERS[type(body)] = _match(body)
    return found


def _match(body: ev.JourneyEvent) -> tuple[_Decide, _Evolve]:
    match body:
        case ev.Enrolled():
            return _decide_enrolled, _evolve_enrolled
        case ev.PatientKeyRegistered():
            return _decide_patient_key_registered, _evolve_patient_key_registered
        case ev.TreatmentSiteChanged():
            return _decide_treatment_site_changed, _evolve_treatment_site_changed
        case ev.ApheresisCollected():
            return _decide_apheresis_collected, _evolve_apheresis_collected
        case ev.LabelPrinted():
            return _decide_label_printed, _evolve_label_printed
        case ev.LabelApplied():
            return _decide_label_applied, _evolve_label_applied
        case ev.LabelVoided():
            return _decide_label_voided, _evolve_label_voided
        case ev.CustodyTransferred():
            return _decide_custody_transferred, _evolve_custody_transferred
        case ev.MaterialReceived():
            return _decide_material_received, _evolve_material_received
        case ev.ManufacturingStarted():
            return _decide_manufacturing_started, _evolve_manufacturing_started
        case ev.ManufacturingStepCompleted():
            return _decide_manufacturing_step_completed, _evolve_manufacturing_step_completed
        case ev.ManufacturingCompleted():
            return _decide_manufacturing_completed, _evolve_manufacturing_completed
        case ev.QcSampleTaken():
            return _decide_qc_sample_taken, _evolve_qc_sample_taken
        case ev.QcResultRecorded():
            return _decide_qc_result_recorded, _evolve_qc_result_recorded
        case ev.RetestAuthorised():
            return _decide_retest_authorised, _evolve_retest_authorised
        case ev.Disposition():
            return _decide_disposition, _evolve_disposition
        case ev.ShipmentDispatched():
            return _decide_shipment_dispatched, _evolve_shipment_dispatched
        case ev.TemperatureRecorded():
            return _decide_temperature_recorded, _evolve_temperature_recorded
        case ev.TemperatureExcursion():
            return _decide_temperature_excursion, _evolve_temperature_excursion
        case ev.ShipmentReceived():
            return _decide_shipment_received, _evolve_shipment_received
        case ev.BedsideIdentityVerified():
            return _decide_bedside_identity_verified, _evolve_bedside_identity_verified
        case ev.Infused():
            return _decide_infused, _evolve_infused
        case ev.DeviationOpened():
            return _decide_deviation_opened, _evolve_deviation_opened
        case ev.DeviationClosed():
            return _decide_deviation_closed, _evolve_deviation_closed
        case ev.HoldPlaced():
            return _decide_hold_placed, _evolve_hold_placed
        case ev.HoldReleased():
            return _decide_hold_released, _evolve_hold_released
        case ev.RecordCorrected():
            return _decide_record_corrected, _evolve_record_corrected
        case _:
            assert_never(body)


def _entities(s: TherapyState, b: ev.Event, names: tuple[str, ...]) -> list[tuple[str, str]]:
    """The (kind, id) of each entity `names` designate in `b` (see TIMELINE)."""
    keys: list[tuple[str, str]] = []
    batch_id = getattr(b, "batch_id", None)
    for name in names:
        if name == "coi":
            keys.append(("coi", s.coi))
        elif name == "qc":
            keys.append(("qc", str(batch_id)))
        elif name == "retest":
            keys.append(("retest", f"{batch_id}/{getattr(b, 'test', '')}"))
        elif name == "outputs":
            keys += [("unit", u) for u in s.batches[str(batch_id)].outputs]
        elif name == "shipment_units":
            keys += [("unit", u) for u in s.shipments[getattr(b, "shipment_id", "")].unit_ids]
        else:
            value = getattr(b, name)
            ids = value if isinstance(value, list) else [] if value is None else [value]
            keys += [(_KINDS[name], i) for i in ids]
    return keys


# ------------------------------------------------------------------ rules


def _unit(s: TherapyState, unit_id: str, name: str = "unit_id") -> Unit:
    unit = s.units.get(unit_id)
    if unit is None:
        raise Rejected(ReasonCode.UNKNOWN_UNIT, f"unit {unit_id} is not part of {s.coi}", name)
    return unit


def _free(s: TherapyState, unit_ids: list[str], at: datetime, name: str = "unit_ids") -> list[Unit]:
    """The units, each known and not on hold at `at` nor now (holds block every
    downstream step, and one released later still covers what happened inside it)."""
    units = [_unit(s, u, name) for u in unit_ids]
    for unit in units:
        holds = [h for h, hold in s.holds.items() if hold.covers(unit.unit_id, at)]
        if holds:
            raise Rejected(
                ReasonCode.UNIT_ON_HOLD,
                f"unit {unit.unit_id} is on hold ({', '.join(holds)}); QA must release it first",
                name,
            )
    return units


def _custodian(s: TherapyState, units: list[Unit], who: str, name: str) -> None:
    for unit in units:
        if unit.custodian != who:
            raise Rejected(
                ReasonCode.NOT_CUSTODIAN,
                f"{who} is not the custodian of {unit.unit_id} (the custodian is {unit.custodian})",
                name,
            )


def _new(s: TherapyState, value: str, existing: Container[str], name: str) -> None:
    if value in existing:
        raise Rejected(ReasonCode.DUPLICATE_ID, f"{name} {value} is already used in {s.coi}", name)


def _batch(s: TherapyState, batch_id: str, *status: str) -> Batch:
    batch = s.batches.get(batch_id)
    if batch is None:
        raise Rejected(ReasonCode.OUT_OF_SEQUENCE, f"batch {batch_id} has not been started", "batch_id")
    if status and batch.status not in status:
        raise Rejected(
            ReasonCode.OUT_OF_SEQUENCE,
            f"batch {batch_id} is {batch.status}, expected {' or '.join(status)}",
            "batch_id",
        )
    return batch


def _shipment(s: TherapyState, shipment_id: str, status: str) -> Shipment:
    shipment = s.shipments.get(shipment_id)
    if shipment is None:
        raise Rejected(
            ReasonCode.OUT_OF_SEQUENCE, f"shipment {shipment_id} was not dispatched", "shipment_id"
        )
    if shipment.status != status:
        raise Rejected(
            ReasonCode.OUT_OF_SEQUENCE, f"shipment {shipment_id} is {shipment.status}", "shipment_id"
        )
    return shipment


def _enrolment(b: ev.Enrolled, ctx: Context) -> None:
    """From rules version 1, an enrolment carries the patient key (under version 0, the
    v0.1 commitment was accepted: a stored v0.1 ledger replays)."""
    if ctx.policy.version < 1:
        return
    if b.patient_commitment is not None:
        raise Rejected(
            ReasonCode.INVALID_VALUE,
            "patient_commitment is no longer accepted: anyone reading the ledger could copy it "
            "as the bedside proof; send patient_key (README: Patient keys)",
            "patient_commitment",
        )
    if b.patient_key is None:
        raise Rejected(
            ReasonCode.MISSING_FIELD,
            "enrolment registers the patient key (README: Patient keys)",
            "patient_key",
        )


def _decide_enrolled(s: TherapyState, b: ev.Enrolled, ctx: Context) -> None:
    raise Rejected(ReasonCode.ALREADY_ENROLLED, f"{b.coi} is already enrolled", "coi")


def _decide_treatment_site_changed(s: TherapyState, b: ev.TreatmentSiteChanged, ctx: Context) -> None:
    if b.treatment_site == s.treatment_site:
        raise Rejected(
            ReasonCode.INVALID_VALUE, f"{s.coi} is already treated at {s.treatment_site}", "treatment_site"
        )
    if not any("qa" in ctx.roles.get(m.principal, ()) for m in b.manifestations):
        raise Rejected(
            ReasonCode.MISSING_MANIFESTATION,
            "moving a patient to another hospital needs QA's e-signature beside the enrolment's",
            "manifestations",
        )
    # A product on its way to the old hospital is refused there once the patient moves: let
    # it arrive (or record its loss by a deviation) before the patient moves.
    for shipment in s.shipments.values():
        if shipment.status == "in_transit":
            raise Rejected(
                ReasonCode.OUT_OF_SEQUENCE,
                f"shipment {shipment.shipment_id} is in transit to {shipment.destination_site}; "
                "record its receipt first",
                "treatment_site",
            )


def _treatment_site(s: TherapyState, site: str, name: str, ctx: Context) -> None:
    """From rules version 1: the product goes to, and is given at, the enrolled hospital."""
    if ctx.policy.version >= 1 and site != s.treatment_site:
        raise Rejected(
            ReasonCode.WRONG_TREATMENT_SITE,
            f"{name} {site} is not the treatment site of {s.coi} ({s.treatment_site}); "
            "a move to another hospital is recorded first (treatment_site_changed)",
            name,
        )


def _claim(
    code: ReasonCode, kind: str, value: str, name: str, ctx: Context, owner: str | None = None
) -> None:
    """A DIN or cartridge belongs to one patient: free, or already `owner`'s."""
    holder = ctx.claims.owner(kind, value)
    if holder is not None and holder != owner:
        raise Rejected(code, f"{kind} {value} already belongs to {holder}", name)


def _decide_apheresis_collected(s: TherapyState, b: ev.ApheresisCollected, ctx: Context) -> None:
    _claim(ReasonCode.DIN_IN_USE, "din", b.din, "din", ctx)
    if din_fin(b.din) != b.collection_facility:
        raise Rejected(
            ReasonCode.INVALID_VALUE, f"DIN {b.din} was not issued by facility {b.collection_facility}", "din"
        )
    _interval(b, None, ctx)
    _new(s, b.unit_id, s.units, "unit_id")


def _decide_label_printed(s: TherapyState, b: ev.LabelPrinted, ctx: Context) -> None:
    _claim(ReasonCode.DIN_IN_USE, "din", b.din, "din", ctx, owner=b.coi)
    _new(s, b.label_id, s.labels, "label_id")


def _label(s: TherapyState, label_id: str) -> str:
    din, status = s.labels.get(label_id, ("", "missing"))
    if status != "printed":
        raise Rejected(
            ReasonCode.OUT_OF_SEQUENCE,
            f"label {label_id} is {status}; only a printed label can be used",
            "label_id",
        )
    return din


def _decide_label_applied(s: TherapyState, b: ev.LabelApplied, ctx: Context) -> None:
    din = _label(s, b.label_id)
    unit = _free(s, [b.unit_id], b.occurred_at, "unit_id")[0]
    if unit.din is not None and unit.din != din:
        raise Rejected(
            ReasonCode.IDENTITY_MISMATCH,
            f"label {b.label_id} is for DIN {din}, the unit is {unit.din}",
            "unit_id",
        )


def _decide_label_voided(s: TherapyState, b: ev.LabelVoided, ctx: Context) -> None:
    _label(s, b.label_id)


def _decide_custody_transferred(s: TherapyState, b: ev.CustodyTransferred, ctx: Context) -> None:
    if b.actor != b.from_custodian:
        raise Rejected(
            ReasonCode.NOT_CUSTODIAN, "a transfer is signed off by the releasing custodian", "actor"
        )
    if b.from_custodian == b.to_custodian:
        raise Rejected(ReasonCode.INVALID_VALUE, "from and to custodian are the same", "to_custodian")
    units = _free(s, b.unit_ids, b.occurred_at)
    _not_gone(units, "cannot change hands")
    _custodian(s, units, b.from_custodian, "from_custodian")


def _not_gone(units: list[Unit], cannot: str) -> None:
    """A unit that went into a batch or was infused no longer exists as such."""
    for unit in units:
        if unit.consumed_by or unit.infused:
            gone = f"went into {unit.consumed_by}" if unit.consumed_by else "was infused"
            raise Rejected(ReasonCode.OUT_OF_SEQUENCE, f"unit {unit.unit_id} {gone}; it {cannot}", "unit_ids")


def _decide_material_received(s: TherapyState, b: ev.MaterialReceived, ctx: Context) -> None:
    units = _free(s, b.unit_ids, b.occurred_at)
    if ctx.policy.version >= 2:  # version 1 received them again (found by a property test)
        _not_gone(units, "cannot be received")
    _custodian(s, units, b.actor, "actor")
    if b.scanned_coi != s.coi:
        raise Rejected(
            ReasonCode.IDENTITY_MISMATCH, f"scanned COI {b.scanned_coi} is not {s.coi}", "scanned_coi"
        )
    expected = {u.din for u in units if u.din}
    if set(b.scanned_dins) != expected:
        raise Rejected(
            ReasonCode.IDENTITY_MISMATCH,
            f"scanned DINs {sorted(b.scanned_dins)} do not match the units ({sorted(expected)})",
            "scanned_dins",
        )


def _decide_manufacturing_started(s: TherapyState, b: ev.ManufacturingStarted, ctx: Context) -> None:
    _claim(ReasonCode.CARTRIDGE_IN_USE, "cartridge", b.cartridge_id, "cartridge_id", ctx)
    _new(s, b.batch_id, s.batches, "batch_id")
    for unit in _free(s, b.input_unit_ids, b.occurred_at, "input_unit_ids"):
        if unit.received_site != b.site or unit.site != b.site:
            raise Rejected(
                ReasonCode.OUT_OF_SEQUENCE,
                f"unit {unit.unit_id} has not been received at {b.site}; record its receipt first",
                "input_unit_ids",
            )
        if unit.consumed_by:
            raise Rejected(
                ReasonCode.OUT_OF_SEQUENCE,
                f"unit {unit.unit_id} already went into {unit.consumed_by}",
                "input_unit_ids",
            )


def _decide_manufacturing_step_completed(
    s: TherapyState, b: ev.ManufacturingStepCompleted, ctx: Context
) -> None:
    _batch(s, b.batch_id, "in_progress")
    _interval(b, None, ctx)
    if ctx.policy.version >= 2:
        _inside_batch(s, b, None)


def _decide_manufacturing_completed(s: TherapyState, b: ev.ManufacturingCompleted, ctx: Context) -> None:
    _batch(s, b.batch_id, "in_progress")
    for output in b.outputs:
        _new(s, output.unit_id, s.units, "outputs")


def _decide_qc_sample_taken(s: TherapyState, b: ev.QcSampleTaken, ctx: Context) -> None:
    _batch(s, b.batch_id, "completed")
    _new(s, b.sample_id, s.units, "sample_id")


def _decide_qc_result_recorded(s: TherapyState, b: ev.QcResultRecorded, ctx: Context) -> None:
    batch = _batch(s, b.batch_id, "completed")
    if b.sample_id not in batch.samples:
        raise Rejected(ReasonCode.UNKNOWN_UNIT, f"{b.sample_id} is not a sample of {b.batch_id}", "sample_id")
    if b.test in batch.qc and (b.batch_id, b.test) not in s.retests:
        raise Rejected(
            ReasonCode.RETEST_NOT_AUTHORISED,
            f"{b.batch_id} already has a {b.test} result; a retest counts only after QA's "
            "retest_authorised under the deviation of the failure",
            "test",
        )


def _decide_retest_authorised(s: TherapyState, b: ev.RetestAuthorised, ctx: Context) -> None:
    _batch(s, b.batch_id, "completed")
    _qa_signed(b, "authorising a retest")
    if s.qc_deviations.get(b.deviation_id) != (b.batch_id, b.test):
        raise Rejected(
            ReasonCode.RETEST_NOT_AUTHORISED,
            f"{b.deviation_id} is not the deviation a failed {b.test} test of {b.batch_id} opened",
            "deviation_id",
        )


def _decide_disposition(s: TherapyState, b: ev.Disposition, ctx: Context) -> None:
    batch = _batch(s, b.batch_id, "completed")
    _qa_signed(b, "disposition")
    _of_manufacturing_site(b, batch, ctx)
    _free(s, batch.outputs, b.occurred_at, "batch_id")
    if b.decision == "rejected":
        if ctx.policy.version >= 2 and not b.reason:  # Annex 11 §9: a rejection says why
            raise Rejected(ReasonCode.REASON_REQUIRED, "a rejection needs a reason", "reason")
        return  # nothing else may stop QA from rejecting a batch
    missing = [t for t in REQUIRED_QC if t not in batch.qc]
    if missing:
        raise Rejected(ReasonCode.QC_INCOMPLETE, f"no QC result yet for {', '.join(missing)}", "decision")
    failed = sorted(t for t, passed in batch.qc.items() if not passed)
    if failed:
        raise Rejected(
            ReasonCode.QC_FAILED, f"failed QC: {', '.join(failed)}; it cannot be released", "decision"
        )
    open_devs = [d for d, (bid, is_open) in s.deviations.items() if is_open and bid in (None, b.batch_id)]
    if open_devs:
        raise Rejected(
            ReasonCode.OPEN_DEVIATION, f"deviation {', '.join(open_devs)} must be closed first", "batch_id"
        )


def _of_manufacturing_site(b: ev.Disposition, batch: Batch, ctx: Context) -> None:
    """Where the log adopted the site rules: QA of the site that made the batch decides on it."""
    if ctx.policy.adopted >= SITES_ADOPTED and batch.site not in ctx.bound.get(b.actor, frozenset()):
        raise Rejected(
            ReasonCode.SITE_NOT_BOUND,
            f"{b.actor} is not bound to {batch.site}, where {b.batch_id} was made: QA of that site "
            "releases or rejects it",
            "actor",
        )


def _decide_shipment_dispatched(s: TherapyState, b: ev.ShipmentDispatched, ctx: Context) -> None:
    _treatment_site(s, b.destination_site, "destination_site", ctx)
    _new(s, b.shipment_id, s.shipments, "shipment_id")
    units = _free(s, b.unit_ids, b.occurred_at)
    for unit in units:
        status = s.batches[unit.batch_id].status if unit.batch_id else "not a product"
        if unit.kind != "product" or status != "released":
            raise Rejected(
                ReasonCode.OUT_OF_SEQUENCE,
                f"unit {unit.unit_id} is not QA-released product ({status})",
                "unit_ids",
            )
        if unit.shipment_id:
            raise Rejected(ReasonCode.OUT_OF_SEQUENCE, f"unit {unit.unit_id} already shipped", "unit_ids")
    _custodian(s, units, b.actor, "actor")


def _decide_temperature_recorded(s: TherapyState, b: ev.TemperatureRecorded, ctx: Context) -> None:
    _shipment(s, b.shipment_id, "in_transit")


def _decide_temperature_excursion(s: TherapyState, b: ev.TemperatureExcursion, ctx: Context) -> None:
    # A logger is often read only at receipt: an excursion reported then is accepted, if it
    # lies within the transit.
    shipment = s.shipments.get(b.shipment_id)
    if shipment is None:
        raise Rejected(
            ReasonCode.OUT_OF_SEQUENCE, f"shipment {b.shipment_id} was not dispatched", "shipment_id"
        )
    if shipment.received_at is not None and b.occurred_at > shipment.received_at:
        raise Rejected(
            ReasonCode.OUT_OF_SEQUENCE,
            f"shipment {b.shipment_id} was received before this excursion",
            "occurred_at",
        )


def _decide_shipment_received(s: TherapyState, b: ev.ShipmentReceived, ctx: Context) -> None:
    shipment = _shipment(s, b.shipment_id, "in_transit")
    if b.site != shipment.destination_site:
        raise Rejected(
            ReasonCode.INVALID_VALUE,
            f"shipment {b.shipment_id} is bound for {shipment.destination_site}",
            "site",
        )
    _custodian(s, _free(s, shipment.unit_ids, b.occurred_at), b.actor, "actor")


def _received_product(s: TherapyState, unit_id: str, site: str, at: datetime) -> Unit:
    unit = _free(s, [unit_id], at, "unit_id")[0]
    shipment = s.shipments.get(unit.shipment_id or "")
    if shipment is None or shipment.status != "received" or unit.received_site != site:
        raise Rejected(
            ReasonCode.OUT_OF_SEQUENCE, f"unit {unit_id} has not been received at {site}", "unit_id"
        )
    if unit.infused:
        raise Rejected(ReasonCode.OUT_OF_SEQUENCE, f"unit {unit_id} was already infused", "unit_id")
    return unit


def _decide_patient_key_registered(s: TherapyState, b: ev.PatientKeyRegistered, ctx: Context) -> None:
    if s.patient_key is not None:
        raise Rejected(
            ReasonCode.PATIENT_KEY_EXISTS,
            f"{s.coi} already has a patient key; it is registered once",
            "patient_key",
        )


def _decide_bedside_identity_verified(s: TherapyState, b: ev.BedsideIdentityVerified, ctx: Context) -> None:
    _treatment_site(s, b.site, "site", ctx)
    _received_product(s, b.unit_id, b.site, b.occurred_at)
    if ctx.policy.version < 1:
        return  # ledgers under version 0 took the v0.1 patient_proof (evolve judges it)
    if b.patient_proof is not None or b.patient_signature is None:
        raise Rejected(
            ReasonCode.PATIENT_SIGNATURE_REQUIRED,
            "a bedside check is proven by patient_signature, made with the key derived from the "
            "wristband scan (README: Patient keys); the v0.1 patient_proof could be copied from "
            "the ledger",
            "patient_proof" if b.patient_proof is not None else "patient_signature",
        )
    if s.patient_key is None:
        raise Rejected(
            ReasonCode.PATIENT_KEY_MISSING,
            f"{s.coi} was enrolled before patient keys: register its key "
            "(patient_key_registered) before the bedside check",
            "patient_signature",
        )


def _decide_infused(s: TherapyState, b: ev.Infused, ctx: Context) -> None:
    _treatment_site(s, b.site, "site", ctx)
    _interval(b, None, ctx)
    _received_product(s, b.unit_id, b.site, b.occurred_at)
    matched = s.bedside.get(b.unit_id)
    if matched is None:
        raise Rejected(
            ReasonCode.IDENTITY_NOT_VERIFIED, f"no bedside identity check for {b.unit_id}", "unit_id"
        )
    if matched == "mismatch":
        raise Rejected(
            ReasonCode.IDENTITY_MISMATCH,
            f"the last bedside check of {b.unit_id} did not match the enrolled patient: infusion is blocked",
            "unit_id",
        )
    if matched == "v0.1_proof" and ctx.policy.version >= 1:  # version 0 infused after it
        raise Rejected(
            ReasonCode.IDENTITY_NOT_VERIFIED,
            f"the bedside check of {b.unit_id} used the v0.1 proof, which can be copied from the "
            "ledger: register the patient key and repeat the check with patient_signature",
            "unit_id",
        )


def _decide_deviation_opened(s: TherapyState, b: ev.DeviationOpened, ctx: Context) -> None:
    _new(s, b.deviation_id, s.deviations, "deviation_id")
    if b.batch_id is not None:
        _batch(s, b.batch_id)


def _decide_deviation_closed(s: TherapyState, b: ev.DeviationClosed, ctx: Context) -> None:
    if not s.deviations.get(b.deviation_id, (None, False))[1]:
        raise Rejected(ReasonCode.OUT_OF_SEQUENCE, f"deviation {b.deviation_id} is not open", "deviation_id")


def _decide_hold_placed(s: TherapyState, b: ev.HoldPlaced, ctx: Context) -> None:
    _new(s, b.hold_id, s.holds, "hold_id")
    for unit_id in b.unit_ids:
        unit = _unit(s, unit_id, "unit_ids")
        if ctx.policy.version >= 2 and (unit.consumed_by or unit.infused):
            gone = f"went into batch {unit.consumed_by}" if unit.consumed_by else "was infused"
            raise Rejected(
                ReasonCode.UNIT_CONSUMED,
                f"unit {unit_id} {gone}: there is nothing left to hold; open a deviation instead",
                "unit_ids",
            )


def _decide_hold_released(s: TherapyState, b: ev.HoldReleased, ctx: Context) -> None:
    hold = s.holds.get(b.hold_id)
    if hold is None or hold.end is not None:
        raise Rejected(ReasonCode.OUT_OF_SEQUENCE, f"hold {b.hold_id} is not open", "hold_id")
    _qa_signed(b, "releasing a hold")


def _decide_record_corrected(s: TherapyState, b: ev.RecordCorrected, ctx: Context) -> None:
    original = s.bodies.get(b.corrects_event_id)
    if original is None:
        raise Rejected(
            ReasonCode.UNKNOWN_EVENT, f"event {b.corrects_event_id} is not in {s.coi}", "corrects_event_id"
        )
    tag = _tag(original)
    roles = ctx.roles.get(b.actor, frozenset())
    if "qa" not in roles and not allowed(roles, tag):
        raise Rejected(ReasonCode.ROLE_NOT_ALLOWED, f"{b.actor} may not correct a {tag} record", "type")
    correctable = CORRECTABLE.get(tag, frozenset())
    if b.field not in correctable:
        raise Rejected(
            ReasonCode.NOT_CORRECTABLE,
            f"{tag}.{b.field} cannot be corrected (correctable: "
            f"{', '.join(sorted(correctable)) or 'none'}); open a deviation",
            "field",
        )
    if b.occurred_at < original.occurred_at:
        raise Rejected(
            ReasonCode.BEFORE_PREREQUISITE,
            "a correction cannot precede the record it corrects",
            "occurred_at",
        )
    current = s.corrections.get((b.corrects_event_id, b.field))
    if current is None:
        current = _text(getattr(original, b.field))
    if b.old_value != current:
        raise Rejected(
            ReasonCode.STALE_OLD_VALUE, f"{tag}.{b.field} is {current!r}, not {b.old_value!r}", "old_value"
        )
    corrected = _corrected(s, original, b.field, b.new_value)
    _interval(corrected, "new_value", ctx)
    if isinstance(corrected, ev.ManufacturingStepCompleted) and ctx.policy.version >= 2:
        _inside_batch(s, corrected, "new_value")


def _corrected(s: TherapyState, original: ev.Event, name: str, new_value: str) -> ev.Event:
    """`original` with its corrections so far and this one, checked against its schema."""
    fields = msgspec.to_builtins(original)
    changes = {f: v for (e, f), v in s.corrections.items() if e == original.event_id}
    for key, text in {**changes, name: new_value}.items():
        fields[key] = text if isinstance(getattr(original, key), str) else _json_or_text(text)
    try:
        return msgspec.json.decode(msgspec.json.encode(fields), type=type(original))
    except msgspec.ValidationError as exc:
        raise Rejected(ReasonCode.INVALID_VALUE, f"new_value for {name}: {exc}", "new_value") from None


# --------------------------------------------------------------- mutations


def _evolve_enrolled(s: TherapyState, b: ev.Enrolled) -> None:
    s.patient_key, s.patient_commitment = b.patient_key, b.patient_commitment
    s.times[("coi", b.coi)] = b.occurred_at


def _evolve_treatment_site_changed(s: TherapyState, b: ev.TreatmentSiteChanged) -> None:
    s.treatment_site = b.treatment_site


def _evolve_temperature_recorded(s: TherapyState, b: ev.TemperatureRecorded) -> None:
    """A reading changes nothing the rules decide on (the projections keep it)."""


def _evolve_apheresis_collected(s: TherapyState, b: ev.ApheresisCollected) -> None:
    s.units[b.unit_id] = Unit(b.unit_id, "bag", b.actor, b.site, din=b.din, received_site=b.site)


def _evolve_label_printed(s: TherapyState, b: ev.LabelPrinted) -> None:
    s.labels[b.label_id] = (b.din, "printed")


def _evolve_label_applied(s: TherapyState, b: ev.LabelApplied) -> None:
    s.labels[b.label_id] = (s.labels[b.label_id][0], "applied")


def _evolve_label_voided(s: TherapyState, b: ev.LabelVoided) -> None:
    s.labels[b.label_id] = (s.labels[b.label_id][0], "voided")


def _evolve_custody_transferred(s: TherapyState, b: ev.CustodyTransferred) -> None:
    for unit_id in b.unit_ids:
        s.units[unit_id].custodian = b.to_custodian


def _evolve_material_received(s: TherapyState, b: ev.MaterialReceived) -> None:
    for unit_id in b.unit_ids:
        s.units[unit_id].received_site = b.site
        s.units[unit_id].site = b.site


def _evolve_manufacturing_started(s: TherapyState, b: ev.ManufacturingStarted) -> None:
    s.batches[b.batch_id] = Batch(b.batch_id, b.site, b.cartridge_id, list(b.input_unit_ids), b.occurred_at)
    for unit_id in b.input_unit_ids:
        s.units[unit_id].consumed_by = b.batch_id


def _evolve_manufacturing_step_completed(s: TherapyState, b: ev.ManufacturingStepCompleted) -> None:
    batch = s.batches[b.batch_id]
    batch.steps.append(b.step)
    batch.windows[b.event_id] = (b.started_at, b.ended_at)


def _evolve_manufacturing_completed(s: TherapyState, b: ev.ManufacturingCompleted) -> None:
    batch = s.batches[b.batch_id]
    batch.status = "completed"
    custodian = s.units[batch.inputs[0]].custodian
    for output in b.outputs:
        batch.outputs.append(output.unit_id)
        s.units[output.unit_id] = Unit(
            output.unit_id,
            "product",
            custodian,
            b.site,
            batch_id=b.batch_id,
            parents=list(batch.inputs),
            received_site=b.site,
        )


def _evolve_qc_sample_taken(s: TherapyState, b: ev.QcSampleTaken) -> None:
    batch = s.batches[b.batch_id]
    batch.samples.add(b.sample_id)
    s.units[b.sample_id] = Unit(
        b.sample_id, "sample", b.actor, b.site, batch_id=b.batch_id, parents=list(batch.outputs)
    )


def _evolve_qc_result_recorded(s: TherapyState, b: ev.QcResultRecorded) -> None:
    s.batches[b.batch_id].qc[b.test] = b.passed  # an authorised retest counts
    s.retests.pop((b.batch_id, b.test), None)
    if not b.passed and b.test in REQUIRED_QC:
        deviation_id = failure_deviation(b.event_id)
        s.deviations[deviation_id] = (b.batch_id, True)
        s.qc_deviations[deviation_id] = (b.batch_id, b.test)
        s.times[("deviation", deviation_id)] = b.occurred_at
        _note(s, b.event_id, f"failed release test: opened deviation {deviation_id}")


def _evolve_retest_authorised(s: TherapyState, b: ev.RetestAuthorised) -> None:
    s.retests[(b.batch_id, b.test)] = b.deviation_id


def _evolve_disposition(s: TherapyState, b: ev.Disposition) -> None:
    s.batches[b.batch_id].status = b.decision


def _evolve_shipment_dispatched(s: TherapyState, b: ev.ShipmentDispatched) -> None:
    s.shipments[b.shipment_id] = Shipment(b.shipment_id, list(b.unit_ids), b.destination_site)
    for unit_id in b.unit_ids:
        s.units[unit_id].shipment_id = b.shipment_id


def _evolve_temperature_excursion(s: TherapyState, b: ev.TemperatureExcursion) -> None:
    hold_id, deviation_id = excursion_ids(b.event_id)
    units = s.shipments[b.shipment_id].unit_ids
    s.deviations[deviation_id] = (s.units[units[0]].batch_id, True)
    s.times[("deviation", deviation_id)] = b.occurred_at
    _note(s, b.event_id, f"placed hold {hold_id} and opened deviation {deviation_id}")
    _place_hold(s, hold_id, units, b.occurred_at)


def _evolve_shipment_received(s: TherapyState, b: ev.ShipmentReceived) -> None:
    shipment = s.shipments[b.shipment_id]
    shipment.status = "received"
    shipment.received_at = b.occurred_at
    for unit_id in shipment.unit_ids:
        s.units[unit_id].received_site = b.site
        s.units[unit_id].site = b.site


def _evolve_patient_key_registered(s: TherapyState, b: ev.PatientKeyRegistered) -> None:
    s.patient_key = b.patient_key


def _evolve_bedside_identity_verified(s: TherapyState, b: ev.BedsideIdentityVerified) -> None:
    # Both forms, since stored v0.1 records replay too; check() admits only signatures.
    if b.patient_signature is not None:
        ok = s.patient_key is not None and bedside_signature_valid(
            s.patient_key, b.patient_signature, s.coi, b.unit_id, b.event_id
        )
        s.bedside[b.unit_id] = "signature" if ok else "mismatch"
    else:
        matched = b.patient_proof is not None and b.patient_proof == s.patient_commitment
        s.bedside[b.unit_id] = "v0.1_proof" if matched else "mismatch"
    if s.bedside[b.unit_id] == "mismatch":
        # Recorded, not refused: the views must not let it read as a check that passed.
        _note(s, b.event_id, "MISMATCH: the scan is not the patient enrolled under this COI")


def _evolve_infused(s: TherapyState, b: ev.Infused) -> None:
    s.units[b.unit_id].infused = True


def _evolve_deviation_opened(s: TherapyState, b: ev.DeviationOpened) -> None:
    s.deviations[b.deviation_id] = (b.batch_id, True)


def _evolve_deviation_closed(s: TherapyState, b: ev.DeviationClosed) -> None:
    s.deviations[b.deviation_id] = (s.deviations[b.deviation_id][0], False)


def _evolve_hold_placed(s: TherapyState, b: ev.HoldPlaced) -> None:
    _place_hold(s, b.hold_id, list(b.unit_ids), b.occurred_at)


def _place_hold(s: TherapyState, hold_id: str, units: list[str], start: datetime) -> None:
    """A hold reported late covers steps already recorded inside it: flag them."""
    hold = s.holds[hold_id] = Hold(units, start)
    for event_id, body in s.bodies.items():
        names = TIMELINE.get(_tag(body), ((), ()))
        touched = {i for kind, i in _entities(s, body, names[0] + names[1]) if kind == "unit"}
        if body.occurred_at >= start and any(hold.covers(u, body.occurred_at) for u in touched):
            _note(s, event_id, f"inside hold {hold_id}, which was reported later")


def _note(s: TherapyState, event_id: UUID, text: str) -> None:
    s.notes.setdefault(event_id, []).append(text)


def _evolve_hold_released(s: TherapyState, b: ev.HoldReleased) -> None:
    s.holds[b.hold_id].end = b.occurred_at


def _evolve_record_corrected(s: TherapyState, b: ev.RecordCorrected) -> None:
    original = s.bodies[b.corrects_event_id]
    if isinstance(original, ev.ManufacturingStepCompleted):  # later steps are judged by its new times
        step = _corrected(s, original, b.field, b.new_value)
        assert isinstance(step, ev.ManufacturingStepCompleted)
        s.batches[step.batch_id].windows[step.event_id] = (step.started_at, step.ended_at)
    s.corrections[(b.corrects_event_id, b.field)] = b.new_value


def _tag(body: ev.Event) -> str:
    return str(body.__struct_config__.tag)


def _text(value: object) -> str:
    """A field value as a correction names it: JSON text for non-strings."""
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def _interval(b: ev.Event, name: str | None, ctx: Context) -> None:
    """An event's times in order: started_at <= ended_at always; from rules version 2 also no
    time of its interval after occurred_at (an event is recorded when it is over). `name`: the
    field to name (a correction's new_value), else the time at fault."""
    started, ended = getattr(b, "started_at", None), getattr(b, "ended_at", None)
    if started is not None and ended is not None and ended < started:
        raise Rejected(
            ReasonCode.INTERVAL_OUT_OF_ORDER,
            f"ended_at {ended.isoformat()} is before started_at {started.isoformat()}",
            name or "ended_at",
        )
    if ctx.policy.version < 2:
        return
    for time_name in ("started_at", "ended_at", "thaw_started_at"):
        value = getattr(b, time_name, None)
        if value is not None and value > b.occurred_at:
            raise Rejected(
                ReasonCode.INTERVAL_OUT_OF_ORDER,
                f"{time_name} {value.isoformat()} is after occurred_at {b.occurred_at.isoformat()}",
                name or time_name,
            )


def _inside_batch(s: TherapyState, b: ev.ManufacturingStepCompleted, name: str | None) -> None:
    """A step runs inside its batch (not before manufacturing_started) and overlaps none of
    the batch's other steps (a corrected step is compared with the others)."""
    batch = s.batches[b.batch_id]
    if b.started_at < batch.started_at:
        raise Rejected(
            ReasonCode.INTERVAL_OUT_OF_ORDER,
            f"started_at {b.started_at.isoformat()} is before batch {b.batch_id} started "
            f"({batch.started_at.isoformat()})",
            name or "started_at",
        )
    for event_id, (start, end) in batch.windows.items():
        if event_id != b.event_id and b.started_at < end and start < b.ended_at:
            other = s.bodies[event_id]
            raise Rejected(
                ReasonCode.INTERVAL_OUT_OF_ORDER,
                f"{b.started_at.isoformat()}..{b.ended_at.isoformat()} overlaps step "
                f"{getattr(other, 'step', '?')} of {b.batch_id} ({start.isoformat()}..{end.isoformat()}, "
                f"event {event_id}): one batch runs one step at a time",
                name or "started_at",
            )


def _late_entry(b: ev.JourneyEvent, ctx: Context) -> None:
    """From rules version 2, an entry later than the policy's late_entry_after says why."""
    late = ctx.received_at - b.occurred_at > ctx.policy.late_entry_after
    if ctx.policy.version >= 2 and late and not b.reason:
        raise Rejected(
            ReasonCode.LATE_ENTRY_REASON_REQUIRED,
            f"occurred_at {b.occurred_at.isoformat()} is more than {ctx.policy.late_entry_after} before "
            f"the ledger's receipt ({ctx.received_at.isoformat()}): a late entry gives a reason",
            "reason",
        )


def _qa_signed(b: ev.Event, what: str) -> None:
    if not any(m.principal == b.actor for m in b.manifestations):
        raise Rejected(ReasonCode.MISSING_MANIFESTATION, f"{what} needs QA's e-signature", "manifestations")


def _json_or_text(text: str) -> object:
    """A non-string field's new value: JSON (a number, a list) or else the text itself
    (a time written without quotes); the field's schema decides whether it fits."""
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return text
