"""The therapy: one patient's vein-to-vein journey under one COI.

The COI is the consistency boundary: its material units (bags, samples, final product),
its manufacturing batch and its shipments live inside this aggregate, so every rule that
spans them ("no shipment before QA release") is checked against one consistent state and
each signed envelope becomes exactly one stored event in one per-patient chain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Literal
from uuid import NAMESPACE_URL, UUID, uuid5

import msgspec

from aggregates.base import Ledgered
from aggregates.roles import allowed
from ledger.wire import events as ev
from ledger.wire.identifiers import din_fin
from ledger.wire.patient import bedside_signature_valid
from ledger.wire.rejection import Rejected

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
}
_KINDS = {"unit_id": "unit", "unit_ids": "unit", "input_unit_ids": "unit", "sample_id": "unit",
          "label_id": "label", "batch_id": "batch", "shipment_id": "shipment",
          "deviation_id": "deviation", "hold_id": "hold"}  # fmt: skip


@lru_cache(maxsize=65536)
def therapy_uuid(coi: str) -> UUID:
    return uuid5(NAMESPACE, coi)


def failure_deviation(event_id: UUID) -> str:
    """The deviation an excursion or a failed release test opens, derived from its event id."""
    return f"D-{event_id}"


def excursion_ids(event_id: UUID) -> tuple[str, str]:
    """The hold and deviation a temperature excursion opens, derived from its event id."""
    return f"H-{event_id}", failure_deviation(event_id)


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
    status: str = "in_progress"  # completed | released | rejected
    steps: list[str] = field(default_factory=list)
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


class Therapy(Ledgered):
    """State is private to the rules below; projections read the stored envelopes."""

    def mutate(self, body: ev.Event) -> None:
        if isinstance(body, ev.Enrolled):
            self.coi = body.coi
            self.patient_commitment = body.patient_commitment
            self.patient_key = body.patient_key
            self.treatment_site = body.treatment_site
            self.units: dict[str, Unit] = {}
            self.labels: dict[str, tuple[str, str]] = {}  # label -> (din, status)
            self.batches: dict[str, Batch] = {}
            self.shipments: dict[str, Shipment] = {}
            self.holds: dict[str, Hold] = {}
            self.deviations: dict[str, tuple[str | None, bool]] = {}  # -> (batch, open)
            self.qc_deviations: dict[str, tuple[str, str]] = {}  # opened by a failure -> (batch, test)
            self.retests: dict[tuple[str, str], str] = {}  # (batch, test) authorised -> deviation
            self.times: dict[tuple[str, str], datetime] = {("coi", body.coi): body.occurred_at}
            self.notes: dict[UUID, list[str]] = {}  # event -> what the views must flag beside it
            self.bedside: dict[str, BedsideMatch] = {}
            self.bodies: dict[UUID, ev.Event] = {}
            self.corrections: dict[tuple[UUID, str], str] = {}
        self.bodies[body.event_id] = body
        getattr(self, "_apply_" + _tag(body), _nothing)(body)
        for key in self._entities(body, TIMELINE.get(_tag(body), ((), ()))[1]):
            self.times[key] = body.occurred_at

    def _entities(self, b: ev.Event, names: tuple[str, ...]) -> list[tuple[str, str]]:
        """The (kind, id) of each entity `names` designate in `b` (see TIMELINE)."""
        keys: list[tuple[str, str]] = []
        batch_id = getattr(b, "batch_id", None)
        for name in names:
            if name == "coi":
                keys.append(("coi", self.coi))
            elif name == "qc":
                keys.append(("qc", str(batch_id)))
            elif name == "retest":
                keys.append(("retest", f"{batch_id}/{getattr(b, 'test', '')}"))
            elif name == "outputs":
                keys += [("unit", u) for u in self.batches[str(batch_id)].outputs]
            elif name == "shipment_units":
                keys += [("unit", u) for u in self.shipments[getattr(b, "shipment_id", "")].unit_ids]
            else:
                value = getattr(b, name)
                ids = value if isinstance(value, list) else [] if value is None else [value]
                keys += [(_KINDS[name], i) for i in ids]
        return keys

    # ------------------------------------------------------------------ checks

    @staticmethod
    def check_enrolment(body: ev.Enrolled) -> None:
        """Raise Rejected if a new enrolment lacks the patient key (stored ones are not asked)."""
        if body.patient_commitment is not None:
            raise Rejected(
                "invalid_value",
                "patient_commitment is no longer accepted: anyone reading the ledger could copy it "
                "as the bedside proof; send patient_key (README: Patient keys)",
                "patient_commitment",
            )
        if body.patient_key is None:
            raise Rejected(
                "missing_field", "enrolment registers the patient key (README: Patient keys)", "patient_key"
            )

    def check(self, body: ev.JourneyEvent, actor_roles: frozenset[str]) -> None:
        """Raise Rejected if `body` may not be recorded next; change nothing."""
        if isinstance(body, ev.Enrolled):
            raise Rejected("already_enrolled", f"{body.coi} is already enrolled", "coi")
        getattr(self, "_check_" + _tag(body), _nothing)(body, actor_roles)
        for key in self._entities(body, TIMELINE[_tag(body)][0]):
            since = self.times.get(key)
            if since is not None and body.occurred_at < since:
                raise Rejected(
                    "before_prerequisite",
                    f"occurred_at {body.occurred_at.isoformat()} is before the last step on "
                    f"{key[0]} {key[1]} ({since.isoformat()}), which this step follows",
                    "occurred_at",
                )

    def _unit(self, unit_id: str, name: str = "unit_id") -> Unit:
        unit = self.units.get(unit_id)
        if unit is None:
            raise Rejected("unknown_unit", f"unit {unit_id} is not part of {self.coi}", name)
        return unit

    def _free(self, unit_ids: list[str], at: datetime, name: str = "unit_ids") -> list[Unit]:
        """The units, each known and not on hold at `at` nor now (holds block every
        downstream step, and one released later still covers what happened inside it)."""
        units = [self._unit(u, name) for u in unit_ids]
        for unit in units:
            holds = [h for h, hold in self.holds.items() if hold.covers(unit.unit_id, at)]
            if holds:
                raise Rejected(
                    "unit_on_hold",
                    f"unit {unit.unit_id} is on hold ({', '.join(holds)}); QA must release it first",
                    name,
                )
        return units

    def _custodian(self, units: list[Unit], who: str, name: str) -> None:
        for unit in units:
            if unit.custodian != who:
                raise Rejected(
                    "not_custodian",
                    f"{who} is not the custodian of {unit.unit_id} (the custodian is {unit.custodian})",
                    name,
                )

    def _new(self, value: str, existing: object, name: str) -> None:
        if value in existing:  # type: ignore[operator]
            raise Rejected("duplicate_id", f"{name} {value} is already used in {self.coi}", name)

    def _batch(self, batch_id: str, *status: str) -> Batch:
        batch = self.batches.get(batch_id)
        if batch is None:
            raise Rejected("out_of_sequence", f"batch {batch_id} has not been started", "batch_id")
        if status and batch.status not in status:
            raise Rejected(
                "out_of_sequence", f"batch {batch_id} is {batch.status}, expected {' or '.join(status)}",
                "batch_id",
            )  # fmt: skip
        return batch

    def _shipment(self, shipment_id: str, status: str) -> Shipment:
        shipment = self.shipments.get(shipment_id)
        if shipment is None:
            raise Rejected("out_of_sequence", f"shipment {shipment_id} was not dispatched", "shipment_id")
        if shipment.status != status:
            raise Rejected("out_of_sequence", f"shipment {shipment_id} is {shipment.status}", "shipment_id")
        return shipment

    def _check_apheresis_collected(self, b: ev.ApheresisCollected, _: frozenset[str]) -> None:
        if din_fin(b.din) != b.collection_facility:
            raise Rejected(
                "invalid_value", f"DIN {b.din} was not issued by facility {b.collection_facility}", "din"
            )
        _span(b, "ended_at")
        self._new(b.unit_id, self.units, "unit_id")

    def _check_label_printed(self, b: ev.LabelPrinted, _: frozenset[str]) -> None:
        self._new(b.label_id, self.labels, "label_id")

    def _label(self, label_id: str) -> str:
        din, status = self.labels.get(label_id, ("", "missing"))
        if status != "printed":
            raise Rejected(
                "out_of_sequence", f"label {label_id} is {status}; only a printed label can be used",
                "label_id",
            )  # fmt: skip
        return din

    def _check_label_applied(self, b: ev.LabelApplied, _: frozenset[str]) -> None:
        din = self._label(b.label_id)
        unit = self._free([b.unit_id], b.occurred_at, "unit_id")[0]
        if unit.din is not None and unit.din != din:
            raise Rejected(
                "identity_mismatch", f"label {b.label_id} is for DIN {din}, the unit is {unit.din}",
                "unit_id",
            )  # fmt: skip

    def _check_label_voided(self, b: ev.LabelVoided, _: frozenset[str]) -> None:
        self._label(b.label_id)

    def _check_custody_transferred(self, b: ev.CustodyTransferred, _: frozenset[str]) -> None:
        if b.actor != b.from_custodian:
            raise Rejected("not_custodian", "a transfer is signed off by the releasing custodian", "actor")
        if b.from_custodian == b.to_custodian:
            raise Rejected("invalid_value", "from and to custodian are the same", "to_custodian")
        units = self._free(b.unit_ids, b.occurred_at)
        for unit in units:
            if unit.consumed_by or unit.infused:
                gone = f"went into {unit.consumed_by}" if unit.consumed_by else "was infused"
                raise Rejected(
                    "out_of_sequence", f"unit {unit.unit_id} {gone}; it cannot change hands", "unit_ids"
                )
        self._custodian(units, b.from_custodian, "from_custodian")

    def _check_material_received(self, b: ev.MaterialReceived, _: frozenset[str]) -> None:
        units = self._free(b.unit_ids, b.occurred_at)
        self._custodian(units, b.actor, "actor")
        if b.scanned_coi != self.coi:
            raise Rejected(
                "identity_mismatch", f"scanned COI {b.scanned_coi} is not {self.coi}", "scanned_coi"
            )
        expected = {u.din for u in units if u.din}
        if set(b.scanned_dins) != expected:
            raise Rejected(
                "identity_mismatch",
                f"scanned DINs {sorted(b.scanned_dins)} do not match the units ({sorted(expected)})",
                "scanned_dins",
            )

    def _check_manufacturing_started(self, b: ev.ManufacturingStarted, _: frozenset[str]) -> None:
        self._new(b.batch_id, self.batches, "batch_id")
        for unit in self._free(b.input_unit_ids, b.occurred_at, "input_unit_ids"):
            if unit.received_site != b.site or unit.site != b.site:
                raise Rejected(
                    "out_of_sequence",
                    f"unit {unit.unit_id} has not been received at {b.site}; record its receipt first",
                    "input_unit_ids",
                )
            if unit.consumed_by:
                raise Rejected(
                    "out_of_sequence", f"unit {unit.unit_id} already went into {unit.consumed_by}",
                    "input_unit_ids",
                )  # fmt: skip

    def _check_manufacturing_step_completed(
        self, b: ev.ManufacturingStepCompleted, _: frozenset[str]
    ) -> None:
        self._batch(b.batch_id, "in_progress")
        _span(b, "ended_at")

    def _check_manufacturing_completed(self, b: ev.ManufacturingCompleted, _: frozenset[str]) -> None:
        self._batch(b.batch_id, "in_progress")
        for output in b.outputs:
            self._new(output.unit_id, self.units, "outputs")

    def _check_qc_sample_taken(self, b: ev.QcSampleTaken, _: frozenset[str]) -> None:
        self._batch(b.batch_id, "completed")
        self._new(b.sample_id, self.units, "sample_id")

    def _check_qc_result_recorded(self, b: ev.QcResultRecorded, _: frozenset[str]) -> None:
        batch = self._batch(b.batch_id, "completed")
        if b.sample_id not in batch.samples:
            raise Rejected("unknown_unit", f"{b.sample_id} is not a sample of {b.batch_id}", "sample_id")
        if b.test in batch.qc and (b.batch_id, b.test) not in self.retests:
            raise Rejected(
                "retest_not_authorised",
                f"{b.batch_id} already has a {b.test} result; a retest counts only after QA's "
                "retest_authorised under the deviation of the failure",
                "test",
            )

    def _check_retest_authorised(self, b: ev.RetestAuthorised, _: frozenset[str]) -> None:
        self._batch(b.batch_id, "completed")
        _qa_signed(b, "authorising a retest")
        if self.qc_deviations.get(b.deviation_id) != (b.batch_id, b.test):
            raise Rejected(
                "retest_not_authorised",
                f"{b.deviation_id} is not the deviation a failed {b.test} test of {b.batch_id} opened",
                "deviation_id",
            )

    def _check_disposition(self, b: ev.Disposition, _: frozenset[str]) -> None:
        batch = self._batch(b.batch_id, "completed")
        _qa_signed(b, "disposition")
        self._free(batch.outputs, b.occurred_at, "batch_id")
        if b.decision == "rejected":
            return  # nothing may stop QA from rejecting a batch
        missing = [t for t in REQUIRED_QC if t not in batch.qc]
        if missing:
            raise Rejected("qc_incomplete", f"no QC result yet for {', '.join(missing)}", "decision")
        failed = sorted(t for t, passed in batch.qc.items() if not passed)
        if failed:
            raise Rejected("qc_failed", f"failed QC: {', '.join(failed)}; it cannot be released", "decision")
        open_devs = [
            d for d, (bid, is_open) in self.deviations.items() if is_open and bid in (None, b.batch_id)
        ]
        if open_devs:
            raise Rejected(
                "open_deviation", f"deviation {', '.join(open_devs)} must be closed first", "batch_id"
            )

    def _check_shipment_dispatched(self, b: ev.ShipmentDispatched, _: frozenset[str]) -> None:
        self._new(b.shipment_id, self.shipments, "shipment_id")
        units = self._free(b.unit_ids, b.occurred_at)
        for unit in units:
            status = self.batches[unit.batch_id].status if unit.batch_id else "not a product"
            if unit.kind != "product" or status != "released":
                raise Rejected(
                    "out_of_sequence", f"unit {unit.unit_id} is not QA-released product ({status})",
                    "unit_ids",
                )  # fmt: skip
            if unit.shipment_id:
                raise Rejected("out_of_sequence", f"unit {unit.unit_id} already shipped", "unit_ids")
        self._custodian(units, b.actor, "actor")

    def _check_temperature_recorded(self, b: ev.TemperatureRecorded, _: frozenset[str]) -> None:
        self._shipment(b.shipment_id, "in_transit")

    def _check_temperature_excursion(self, b: ev.TemperatureExcursion, _: frozenset[str]) -> None:
        # A logger is often read only at receipt: an excursion reported then is accepted, if it
        # lies within the transit.
        shipment = self.shipments.get(b.shipment_id)
        if shipment is None:
            raise Rejected("out_of_sequence", f"shipment {b.shipment_id} was not dispatched", "shipment_id")
        if shipment.received_at is not None and b.occurred_at > shipment.received_at:
            raise Rejected(
                "out_of_sequence", f"shipment {b.shipment_id} was received before this excursion",
                "occurred_at",
            )  # fmt: skip

    def _check_shipment_received(self, b: ev.ShipmentReceived, _: frozenset[str]) -> None:
        shipment = self._shipment(b.shipment_id, "in_transit")
        if b.site != shipment.destination_site:
            raise Rejected(
                "invalid_value", f"shipment {b.shipment_id} is bound for {shipment.destination_site}", "site"
            )
        self._custodian(self._free(shipment.unit_ids, b.occurred_at), b.actor, "actor")

    def _received_product(self, unit_id: str, site: str, at: datetime) -> Unit:
        unit = self._free([unit_id], at, "unit_id")[0]
        shipment = self.shipments.get(unit.shipment_id or "")
        if shipment is None or shipment.status != "received" or unit.received_site != site:
            raise Rejected("out_of_sequence", f"unit {unit_id} has not been received at {site}", "unit_id")
        if unit.infused:
            raise Rejected("out_of_sequence", f"unit {unit_id} was already infused", "unit_id")
        return unit

    def _check_patient_key_registered(self, b: ev.PatientKeyRegistered, _: frozenset[str]) -> None:
        if self.patient_key is not None:
            raise Rejected(
                "patient_key_exists", f"{self.coi} already has a patient key; it is registered once",
                "patient_key",
            )  # fmt: skip

    def _check_bedside_identity_verified(self, b: ev.BedsideIdentityVerified, _: frozenset[str]) -> None:
        self._received_product(b.unit_id, b.site, b.occurred_at)
        if b.patient_proof is not None or b.patient_signature is None:
            raise Rejected(
                "patient_signature_required",
                "a bedside check is proven by patient_signature, made with the key derived from the "
                "wristband scan (README: Patient keys); the v0.1 patient_proof could be copied from "
                "the ledger",
                "patient_proof" if b.patient_proof is not None else "patient_signature",
            )
        if self.patient_key is None:
            raise Rejected(
                "patient_key_missing",
                f"{self.coi} was enrolled before patient keys: register its key "
                "(patient_key_registered) before the bedside check",
                "patient_signature",
            )

    def _check_infused(self, b: ev.Infused, _: frozenset[str]) -> None:
        self._received_product(b.unit_id, b.site, b.occurred_at)
        matched = self.bedside.get(b.unit_id)
        if matched is None:
            raise Rejected("identity_not_verified", f"no bedside identity check for {b.unit_id}", "unit_id")
        if matched == "mismatch":
            raise Rejected(
                "identity_mismatch",
                f"the last bedside check of {b.unit_id} did not match the enrolled patient: "
                "infusion is blocked",
                "unit_id",
            )
        if matched == "v0.1_proof":
            raise Rejected(
                "identity_not_verified",
                f"the bedside check of {b.unit_id} used the v0.1 proof, which can be copied from the "
                "ledger: register the patient key and repeat the check with patient_signature",
                "unit_id",
            )

    def _check_deviation_opened(self, b: ev.DeviationOpened, _: frozenset[str]) -> None:
        self._new(b.deviation_id, self.deviations, "deviation_id")
        if b.batch_id is not None:
            self._batch(b.batch_id)

    def _check_deviation_closed(self, b: ev.DeviationClosed, _: frozenset[str]) -> None:
        if not self.deviations.get(b.deviation_id, (None, False))[1]:
            raise Rejected("out_of_sequence", f"deviation {b.deviation_id} is not open", "deviation_id")

    def _check_hold_placed(self, b: ev.HoldPlaced, _: frozenset[str]) -> None:
        self._new(b.hold_id, self.holds, "hold_id")
        for unit_id in b.unit_ids:
            self._unit(unit_id, "unit_ids")

    def _check_hold_released(self, b: ev.HoldReleased, _: frozenset[str]) -> None:
        hold = self.holds.get(b.hold_id)
        if hold is None or hold.end is not None:
            raise Rejected("out_of_sequence", f"hold {b.hold_id} is not open", "hold_id")
        _qa_signed(b, "releasing a hold")

    def _check_record_corrected(self, b: ev.RecordCorrected, roles: frozenset[str]) -> None:
        original = self.bodies.get(b.corrects_event_id)
        if original is None:
            raise Rejected(
                "unknown_event", f"event {b.corrects_event_id} is not in {self.coi}", "corrects_event_id"
            )
        tag = _tag(original)
        if "qa" not in roles and not allowed(roles, tag):
            raise Rejected("role_not_allowed", f"{b.actor} may not correct a {tag} record", "type")
        correctable = CORRECTABLE.get(tag, frozenset())
        if b.field not in correctable:
            raise Rejected(
                "not_correctable",
                f"{tag}.{b.field} cannot be corrected (correctable: "
                f"{', '.join(sorted(correctable)) or 'none'}); open a deviation",
                "field",
            )
        if b.occurred_at < original.occurred_at:
            raise Rejected(
                "before_prerequisite", "a correction cannot precede the record it corrects", "occurred_at"
            )
        current = self.corrections.get((b.corrects_event_id, b.field))
        if current is None:
            current = _text(getattr(original, b.field))
        if b.old_value != current:
            raise Rejected(
                "stale_old_value", f"{tag}.{b.field} is {current!r}, not {b.old_value!r}", "old_value"
            )
        _span(self._corrected(original, b.field, b.new_value), "new_value")

    def _corrected(self, original: ev.Event, name: str, new_value: str) -> ev.Event:
        """`original` with its corrections so far and this one, checked against its schema."""
        fields = msgspec.to_builtins(original)
        changes = {f: v for (e, f), v in self.corrections.items() if e == original.event_id}
        for key, text in {**changes, name: new_value}.items():
            fields[key] = text if isinstance(getattr(original, key), str) else _json_or_text(text)
        try:
            return msgspec.json.decode(msgspec.json.encode(fields), type=type(original))
        except msgspec.ValidationError as exc:
            raise Rejected("invalid_value", f"new_value for {name}: {exc}", "new_value") from None

    # --------------------------------------------------------------- mutations

    def _apply_apheresis_collected(self, b: ev.ApheresisCollected) -> None:
        self.units[b.unit_id] = Unit(b.unit_id, "bag", b.actor, b.site, din=b.din, received_site=b.site)

    def _apply_label_printed(self, b: ev.LabelPrinted) -> None:
        self.labels[b.label_id] = (b.din, "printed")

    def _apply_label_applied(self, b: ev.LabelApplied) -> None:
        self.labels[b.label_id] = (self.labels[b.label_id][0], "applied")

    def _apply_label_voided(self, b: ev.LabelVoided) -> None:
        self.labels[b.label_id] = (self.labels[b.label_id][0], "voided")

    def _apply_custody_transferred(self, b: ev.CustodyTransferred) -> None:
        for unit_id in b.unit_ids:
            self.units[unit_id].custodian = b.to_custodian

    def _apply_material_received(self, b: ev.MaterialReceived) -> None:
        for unit_id in b.unit_ids:
            self.units[unit_id].received_site = b.site
            self.units[unit_id].site = b.site

    def _apply_manufacturing_started(self, b: ev.ManufacturingStarted) -> None:
        self.batches[b.batch_id] = Batch(b.batch_id, b.site, b.cartridge_id, list(b.input_unit_ids))
        for unit_id in b.input_unit_ids:
            self.units[unit_id].consumed_by = b.batch_id

    def _apply_manufacturing_step_completed(self, b: ev.ManufacturingStepCompleted) -> None:
        self.batches[b.batch_id].steps.append(b.step)

    def _apply_manufacturing_completed(self, b: ev.ManufacturingCompleted) -> None:
        batch = self.batches[b.batch_id]
        batch.status = "completed"
        custodian = self.units[batch.inputs[0]].custodian
        for output in b.outputs:
            batch.outputs.append(output.unit_id)
            self.units[output.unit_id] = Unit(
                output.unit_id, "product", custodian, b.site, batch_id=b.batch_id,
                parents=list(batch.inputs), received_site=b.site,
            )  # fmt: skip

    def _apply_qc_sample_taken(self, b: ev.QcSampleTaken) -> None:
        batch = self.batches[b.batch_id]
        batch.samples.add(b.sample_id)
        self.units[b.sample_id] = Unit(
            b.sample_id, "sample", b.actor, b.site, batch_id=b.batch_id, parents=list(batch.outputs)
        )

    def _apply_qc_result_recorded(self, b: ev.QcResultRecorded) -> None:
        self.batches[b.batch_id].qc[b.test] = b.passed  # an authorised retest counts
        self.retests.pop((b.batch_id, b.test), None)
        if not b.passed and b.test in REQUIRED_QC:
            deviation_id = failure_deviation(b.event_id)
            self.deviations[deviation_id] = (b.batch_id, True)
            self.qc_deviations[deviation_id] = (b.batch_id, b.test)
            self.times[("deviation", deviation_id)] = b.occurred_at
            self._note(b.event_id, f"failed release test: opened deviation {deviation_id}")

    def _apply_retest_authorised(self, b: ev.RetestAuthorised) -> None:
        self.retests[(b.batch_id, b.test)] = b.deviation_id

    def _apply_disposition(self, b: ev.Disposition) -> None:
        self.batches[b.batch_id].status = b.decision

    def _apply_shipment_dispatched(self, b: ev.ShipmentDispatched) -> None:
        self.shipments[b.shipment_id] = Shipment(b.shipment_id, list(b.unit_ids), b.destination_site)
        for unit_id in b.unit_ids:
            self.units[unit_id].shipment_id = b.shipment_id

    def _apply_temperature_excursion(self, b: ev.TemperatureExcursion) -> None:
        hold_id, deviation_id = excursion_ids(b.event_id)
        units = self.shipments[b.shipment_id].unit_ids
        self.deviations[deviation_id] = (self.units[units[0]].batch_id, True)
        self.times[("deviation", deviation_id)] = b.occurred_at
        self._note(b.event_id, f"placed hold {hold_id} and opened deviation {deviation_id}")
        self._place_hold(hold_id, units, b.occurred_at)

    def _apply_shipment_received(self, b: ev.ShipmentReceived) -> None:
        shipment = self.shipments[b.shipment_id]
        shipment.status = "received"
        shipment.received_at = b.occurred_at
        for unit_id in shipment.unit_ids:
            self.units[unit_id].received_site = b.site
            self.units[unit_id].site = b.site

    def _apply_patient_key_registered(self, b: ev.PatientKeyRegistered) -> None:
        self.patient_key = b.patient_key

    def _apply_bedside_identity_verified(self, b: ev.BedsideIdentityVerified) -> None:
        # Both forms, since stored v0.1 records replay too; check() admits only signatures.
        if b.patient_signature is not None:
            ok = self.patient_key is not None and bedside_signature_valid(
                self.patient_key, b.patient_signature, self.coi, b.unit_id, b.event_id
            )
            self.bedside[b.unit_id] = "signature" if ok else "mismatch"
        else:
            matched = b.patient_proof is not None and b.patient_proof == self.patient_commitment
            self.bedside[b.unit_id] = "v0.1_proof" if matched else "mismatch"
        if self.bedside[b.unit_id] == "mismatch":
            # Recorded, not refused: the views must not let it read as a check that passed.
            self._note(b.event_id, "MISMATCH: the scan is not the patient enrolled under this COI")

    def _apply_infused(self, b: ev.Infused) -> None:
        self.units[b.unit_id].infused = True

    def _apply_deviation_opened(self, b: ev.DeviationOpened) -> None:
        self.deviations[b.deviation_id] = (b.batch_id, True)

    def _apply_deviation_closed(self, b: ev.DeviationClosed) -> None:
        self.deviations[b.deviation_id] = (self.deviations[b.deviation_id][0], False)

    def _apply_hold_placed(self, b: ev.HoldPlaced) -> None:
        self._place_hold(b.hold_id, list(b.unit_ids), b.occurred_at)

    def _place_hold(self, hold_id: str, units: list[str], start: datetime) -> None:
        """A hold reported late covers steps already recorded inside it: flag them."""
        hold = self.holds[hold_id] = Hold(units, start)
        for event_id, body in self.bodies.items():
            names = TIMELINE.get(_tag(body), ((), ()))
            touched = {i for kind, i in self._entities(body, names[0] + names[1]) if kind == "unit"}
            if body.occurred_at >= start and any(hold.covers(u, body.occurred_at) for u in touched):
                self._note(event_id, f"inside hold {hold_id}, which was reported later")

    def _note(self, event_id: UUID, text: str) -> None:
        self.notes.setdefault(event_id, []).append(text)

    def _apply_hold_released(self, b: ev.HoldReleased) -> None:
        self.holds[b.hold_id].end = b.occurred_at

    def _apply_record_corrected(self, b: ev.RecordCorrected) -> None:
        self.corrections[(b.corrects_event_id, b.field)] = b.new_value


def _tag(body: ev.Event) -> str:
    return str(body.__struct_config__.tag)


def _text(value: object) -> str:
    """A field value as a correction names it: JSON text for non-strings."""
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def _span(b: ev.Event, name: str) -> None:
    started, ended = getattr(b, "started_at", None), getattr(b, "ended_at", None)
    if started is not None and ended is not None and ended < started:
        raise Rejected("invalid_value", "ended_at is before started_at", name)


def _qa_signed(b: ev.Event, what: str) -> None:
    if not any(m.principal == b.actor for m in b.manifestations):
        raise Rejected("missing_manifestation", f"{what} needs QA's e-signature", "manifestations")


def _json_or_text(text: str) -> object:
    """A non-string field's new value: JSON (a number, a list) or else the text itself
    (a time written without quotes); the field's schema decides whether it fits."""
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return text


def _nothing(*_: object) -> None:
    return None
