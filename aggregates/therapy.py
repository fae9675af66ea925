"""The therapy: one patient's vein-to-vein journey under one COI.

The COI is the consistency boundary: its material units (bags, samples, final product),
its manufacturing batch and its shipments live inside this aggregate, so every rule that
spans them ("no shipment before QA release") is checked against one consistent state and
each signed envelope becomes exactly one stored event in one per-patient chain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal
from uuid import NAMESPACE_URL, UUID, uuid5

import msgspec

from aggregates.base import Ledgered
from aggregates.roles import allowed
from ledger import events as ev
from ledger.identifiers import din_fin
from ledger.patient import bedside_signature_valid
from ledger.rejection import Rejected

NAMESPACE = uuid5(NAMESPACE_URL, "https://coi-ledger.example/therapies")

# The release panel: each must have a passing result before QA may release a batch.
REQUIRED_QC = ("sterility", "mycoplasma", "endotoxin", "identity", "potency", "viability")

# Fields that identify, or that the rules decided on: a wrong one means a wrong record,
# handled by a deviation, never by editing it after the fact (the state the rules built from
# it would silently disagree with the corrected value).
PROTECTED_FIELDS = frozenset(
    {"event_id", "type", "coi", "actor", "site", "occurred_at", "din", "unit_id", "unit_ids",
     "batch_id", "sample_id", "shipment_id", "patient_commitment", "patient_proof", "input_unit_ids",
     "patient_key", "patient_signature",
     "outputs", "hold_id", "deviation_id", "manifestations", "from_custodian", "to_custodian",
     "destination_site", "witness", "scanned_coi", "scanned_dins", "decision", "test", "passed",
     "label_id", "cartridge_id", "collection_facility"}
)  # fmt: skip


@lru_cache(maxsize=65536)
def therapy_uuid(coi: str) -> UUID:
    return uuid5(NAMESPACE, coi)


def excursion_ids(event_id: UUID) -> tuple[str, str]:
    """The hold and deviation a temperature excursion opens, derived from its event id."""
    return f"H-{event_id}", f"D-{event_id}"


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
class Shipment:
    shipment_id: str
    unit_ids: list[str]
    destination_site: str
    status: str = "in_transit"  # received


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
            self.holds: dict[str, list[str]] = {}  # open holds -> units
            self.closed_holds: set[str] = set()
            self.deviations: dict[str, tuple[str | None, bool]] = {}  # -> (batch, open)
            self.bedside: dict[str, BedsideMatch] = {}
            self.bodies: dict[UUID, ev.Event] = {}
            self.corrections: dict[tuple[UUID, str], str] = {}
        self.bodies[body.event_id] = body
        getattr(self, "_apply_" + _tag(body), _nothing)(body)

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

    def _unit(self, unit_id: str, name: str = "unit_id") -> Unit:
        unit = self.units.get(unit_id)
        if unit is None:
            raise Rejected("unknown_unit", f"unit {unit_id} is not part of {self.coi}", name)
        return unit

    def _free(self, unit_ids: list[str], name: str = "unit_ids") -> list[Unit]:
        """The units, each known and not on hold (holds block every downstream step)."""
        units = [self._unit(u, name) for u in unit_ids]
        for unit in units:
            holds = [h for h, held in self.holds.items() if unit.unit_id in held]
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
        if b.ended_at < b.started_at:
            raise Rejected("invalid_value", "ended_at is before started_at", "ended_at")
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
        unit = self._unit(b.unit_id)
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
        units = self._free(b.unit_ids)
        for unit in units:
            if unit.consumed_by or unit.infused:
                gone = f"went into {unit.consumed_by}" if unit.consumed_by else "was infused"
                raise Rejected(
                    "out_of_sequence", f"unit {unit.unit_id} {gone}; it cannot change hands", "unit_ids"
                )
        self._custodian(units, b.from_custodian, "from_custodian")

    def _check_material_received(self, b: ev.MaterialReceived, _: frozenset[str]) -> None:
        units = self._free(b.unit_ids)
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
        for unit in self._free(b.input_unit_ids, "input_unit_ids"):
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
        if b.ended_at < b.started_at:
            raise Rejected("invalid_value", "ended_at is before started_at", "ended_at")

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

    def _check_disposition(self, b: ev.Disposition, _: frozenset[str]) -> None:
        batch = self._batch(b.batch_id, "completed")
        if not any(m.principal == b.actor for m in b.manifestations):
            raise Rejected("missing_manifestation", "disposition needs QA's e-signature", "manifestations")
        open_devs = [
            d for d, (bid, is_open) in self.deviations.items() if is_open and bid in (None, b.batch_id)
        ]
        if open_devs:
            raise Rejected(
                "open_deviation", f"deviation {', '.join(open_devs)} must be closed first", "batch_id"
            )
        self._free(batch.outputs, "batch_id")
        if b.decision == "released":
            missing = [t for t in REQUIRED_QC if t not in batch.qc]
            if missing:
                raise Rejected("qc_incomplete", f"no QC result yet for {', '.join(missing)}", "decision")
            failed = sorted(t for t, passed in batch.qc.items() if not passed)
            if failed:
                raise Rejected(
                    "qc_failed", f"failed QC: {', '.join(failed)}; it cannot be released", "decision"
                )

    def _check_shipment_dispatched(self, b: ev.ShipmentDispatched, _: frozenset[str]) -> None:
        self._new(b.shipment_id, self.shipments, "shipment_id")
        units = self._free(b.unit_ids)
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
        self._shipment(b.shipment_id, "in_transit")

    def _check_shipment_received(self, b: ev.ShipmentReceived, _: frozenset[str]) -> None:
        shipment = self._shipment(b.shipment_id, "in_transit")
        if b.site != shipment.destination_site:
            raise Rejected(
                "invalid_value", f"shipment {b.shipment_id} is bound for {shipment.destination_site}", "site"
            )
        self._custodian(self._free(shipment.unit_ids), b.actor, "actor")

    def _received_product(self, unit_id: str, site: str) -> Unit:
        unit = self._free([unit_id], "unit_id")[0]
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
        self._received_product(b.unit_id, b.site)
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
        self._received_product(b.unit_id, b.site)
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
        self._new(b.hold_id, self.holds.keys() | self.closed_holds, "hold_id")
        for unit_id in b.unit_ids:
            self._unit(unit_id, "unit_ids")

    def _check_hold_released(self, b: ev.HoldReleased, _: frozenset[str]) -> None:
        if b.hold_id not in self.holds:
            raise Rejected("out_of_sequence", f"hold {b.hold_id} is not open", "hold_id")
        if not any(m.principal == b.actor for m in b.manifestations):
            raise Rejected(
                "missing_manifestation", "releasing a hold needs QA's e-signature", "manifestations"
            )

    def _check_record_corrected(self, b: ev.RecordCorrected, roles: frozenset[str]) -> None:
        original = self.bodies.get(b.corrects_event_id)
        if original is None:
            raise Rejected(
                "unknown_event", f"event {b.corrects_event_id} is not in {self.coi}", "corrects_event_id"
            )
        tag = _tag(original)
        if "qa" not in roles and not allowed(roles, tag):
            raise Rejected("role_not_allowed", f"{b.actor} may not correct a {tag} record", "type")
        if b.field in PROTECTED_FIELDS or b.field not in original.__struct_fields__:
            raise Rejected(
                "correction_not_allowed", f"{tag}.{b.field} cannot be corrected; open a deviation",
                "field",
            )  # fmt: skip
        current = self.corrections.get((b.corrects_event_id, b.field))
        if current is None:
            current = _text(getattr(original, b.field))
        if b.old_value != current:
            raise Rejected(
                "stale_old_value", f"{tag}.{b.field} is {current!r}, not {b.old_value!r}", "old_value"
            )

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
        self.batches[b.batch_id].qc[b.test] = b.passed  # the latest result counts (retest)

    def _apply_disposition(self, b: ev.Disposition) -> None:
        self.batches[b.batch_id].status = b.decision

    def _apply_shipment_dispatched(self, b: ev.ShipmentDispatched) -> None:
        self.shipments[b.shipment_id] = Shipment(b.shipment_id, list(b.unit_ids), b.destination_site)
        for unit_id in b.unit_ids:
            self.units[unit_id].shipment_id = b.shipment_id

    def _apply_temperature_excursion(self, b: ev.TemperatureExcursion) -> None:
        hold_id, deviation_id = excursion_ids(b.event_id)
        units = self.shipments[b.shipment_id].unit_ids
        self.holds[hold_id] = list(units)
        self.deviations[deviation_id] = (self.units[units[0]].batch_id, True)

    def _apply_shipment_received(self, b: ev.ShipmentReceived) -> None:
        shipment = self.shipments[b.shipment_id]
        shipment.status = "received"
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

    def _apply_infused(self, b: ev.Infused) -> None:
        self.units[b.unit_id].infused = True

    def _apply_deviation_opened(self, b: ev.DeviationOpened) -> None:
        self.deviations[b.deviation_id] = (b.batch_id, True)

    def _apply_deviation_closed(self, b: ev.DeviationClosed) -> None:
        self.deviations[b.deviation_id] = (self.deviations[b.deviation_id][0], False)

    def _apply_hold_placed(self, b: ev.HoldPlaced) -> None:
        self.holds[b.hold_id] = list(b.unit_ids)

    def _apply_hold_released(self, b: ev.HoldReleased) -> None:
        del self.holds[b.hold_id]
        self.closed_holds.add(b.hold_id)

    def _apply_record_corrected(self, b: ev.RecordCorrected) -> None:
        self.corrections[(b.corrects_event_id, b.field)] = b.new_value


def _tag(body: ev.Event) -> str:
    return str(body.__struct_config__.tag)


def _text(value: object) -> str:
    """A field value as a correction names it: JSON text for non-strings."""
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def _nothing(*_: object) -> None:
    return None
