"""The genealogy export's own format, `coi-genealogy/1`: one patient's vein-to-vein journey
as a regulator or a partner system takes it away (`coi export genealogy --format json`; the
JSON Schema is `coi schema --genealogy`).

Every value read from the ledger is a `Fact`: the value exactly as the signed body holds it,
the sequence of the record it came from and the field (a JSON Pointer into that body) it was
read from, so anyone holding the records can check it (`coi verify-bundle` does, item by
item). What the rules decided (a unit's status, a bedside outcome) names the record that
decided it. The other formats (CSV, EPCIS, FHIR, HTML) are rendered from this document.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

FORMAT: Literal["coi-genealogy/1"] = "coi-genealogy/1"

Value = str | int | float | bool

# The status of a product whose latest bedside check did not match: QA released it, and the
# rules block its infusion.
BLOCKED = "blocked"


class Fact(msgspec.Struct, frozen=True):
    """A value as a signed record holds it."""

    value: Value
    sequence: int
    field: str  # a JSON Pointer (RFC 6901) into the record's signed body, e.g. "/outputs/0/unit_id"


class Signature(msgspec.Struct, frozen=True, kw_only=True):
    """One signature on a record and its Part 11 manifestation. A device or site system signs
    without one: its printed name and kind are the registry's."""

    sequence: int
    position: int  # its place among the envelope's signatures
    keyid: str
    principal: str
    kind: str | None  # person | device | site_system, as registered
    printed_name: str | None
    signed_at: str | None  # UTC, from the manifestation
    meaning: str | None
    manifested: bool  # the printed name, time and meaning are inside the signed body
    # Where the above was read: the manifestation in the signed body, or the registration.
    cited: list[Fact] = []


class Correction(msgspec.Struct, frozen=True, kw_only=True):
    """A later record restating one field of an earlier one; the old value stays visible."""

    sequence: int
    corrects: int  # the corrected record's sequence
    field: Fact
    old_value: Fact
    new_value: Fact
    reason: Fact
    by: Fact
    occurred_at: Fact


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """A record the export was made from."""

    sequence: int
    type: str
    event_id: str
    occurred_at: str
    recorded_at: str
    site: str
    actor: str
    reason: str | None
    outcome: str | None  # MATCH | MISMATCH | PASS | FAIL | RELEASED | REJECTED | EXCURSION
    flags: list[str]  # what the rules flagged on it
    leaf_index: int | None  # in the checkpoint's tree, where it was proved


class Patient(msgspec.Struct, frozen=True, kw_only=True):
    coi: Fact
    uri: str
    order_id: Fact
    product: Fact
    treatment_site: Fact
    enrolled_at: Fact
    enrolled_by: Fact


class Label(msgspec.Struct, frozen=True, kw_only=True):
    label_id: Fact
    din: Fact
    printed_at: Fact
    applied_to: Fact | None
    voided: Fact | None  # the reason it was voided


class Collection(msgspec.Struct, frozen=True, kw_only=True):
    """An apheresis collection: the donation (DIN) and the bag it filled."""

    din: Fact
    din_uri: str
    bag: Fact
    bag_uri: str
    product_code: Fact
    collection_facility: Fact
    volume_ml: Fact  # as recorded
    volume_ml_in_force: Fact  # as the latest correction of it restates it (else as recorded)
    started_at: Fact
    ended_at: Fact
    site: Fact
    collected_by: Fact
    corrections: list[Correction]


class CustodyStep(msgspec.Struct, frozen=True, kw_only=True):
    """A hand-off or a receipt of units."""

    sequence: int
    type: str  # custody_transferred | material_received | shipment_received
    units: list[Fact]
    from_custodian: Fact | None
    to_custodian: Fact | None
    location: Fact  # as recorded
    location_in_force: Fact  # as the latest correction of it restates it (else as recorded)
    condition: Fact
    condition_in_force: Fact
    occurred_at: Fact
    site: Fact
    corrections: list[Correction]


class Step(msgspec.Struct, frozen=True, kw_only=True):
    step: Fact
    started_at: Fact
    ended_at: Fact
    material_lots: list[Fact]
    alarms: list[Fact]
    performed_by: Fact


class Output(msgspec.Struct, frozen=True, kw_only=True):
    unit_id: Fact
    uri: str
    product_code: Fact
    volume_ml: Fact


class QcResult(msgspec.Struct, frozen=True, kw_only=True):
    sample_id: Fact
    test: Fact
    method: Fact
    result: Fact
    specification: Fact
    passed: Fact
    retest: bool  # recorded under a retest QA authorised
    occurred_at: Fact
    recorded_by: Fact


class Retest(msgspec.Struct, frozen=True, kw_only=True):
    test: Fact
    deviation_id: Fact
    authorised_at: Fact
    authorised_by: Fact
    reason: Fact | None


class Disposition(msgspec.Struct, frozen=True, kw_only=True):
    decision: Fact  # released | rejected
    occurred_at: Fact
    reason: Fact | None
    signatures: list[Signature]  # QA's, with its manifestation


class Batch(msgspec.Struct, frozen=True, kw_only=True):
    """A manufacturing run: inputs into a cartridge in a Cell Shuttle slot, outputs, QC, QA."""

    batch_id: Fact
    uri: str
    status: str  # in_progress | completed | released | rejected, as the rules hold it
    site: Fact
    shuttle_id: Fact
    slot: Fact
    cartridge_id: Fact
    recipe_version: Fact
    inputs: list[Fact]
    started_at: Fact
    steps: list[Step]
    completed_at: Fact | None
    outputs: list[Output]
    samples: list[Fact]
    qc: list[QcResult]
    retests: list[Retest]
    disposition: Disposition | None  # the one in force: the latest


class Reading(msgspec.Struct, frozen=True, kw_only=True):
    logger_id: Fact
    celsius: Fact
    occurred_at: Fact
    excursion: bool
    limit_celsius: Fact | None  # an excursion's
    duration_s: Fact | None


class Shipment(msgspec.Struct, frozen=True, kw_only=True):
    shipment_id: Fact
    uri: str
    units: list[Fact]
    shipper_id: Fact
    data_logger_id: Fact
    origin_site: Fact
    destination_site: Fact
    dispatched_at: Fact
    received_at: Fact | None
    received_location: Fact | None
    received_condition: Fact | None
    logger_reviewed: Fact | None
    temperatures: list[Reading]


class Bedside(msgspec.Struct, frozen=True, kw_only=True):
    sequence: int
    unit_id: Fact
    outcome: Literal["MATCH", "MISMATCH"]  # what the rules decided from the patient's signature
    occurred_at: Fact
    checked_by: Fact
    witness: Fact
    signatures: list[Signature]


class Infusion(msgspec.Struct, frozen=True, kw_only=True):
    unit_id: Fact
    thaw_started_at: Fact
    occurred_at: Fact
    infused_by: Fact
    site: Fact


class Product(msgspec.Struct, frozen=True, kw_only=True):
    """A final product unit and where it stands now, as the rules hold it."""

    unit_id: Fact
    uri: str
    batch_id: str | None
    # the rules' status, or blocked: released, and a bedside MISMATCH blocks its infusion
    status: UnitStatus
    status_sequence: int  # the record that set it
    holds: list[str]  # in force now
    custodian: str
    site: str
    shipment_id: str | None
    bedside: str | None  # MATCH | MISMATCH: the latest check


class RegisterEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A deviation, hold, excursion, correction or disposition, open or closed."""

    kind: str
    item_id: str
    summary: str
    opened_sequence: int
    opened_at: str
    opened_by: str
    site: str
    reason: str | None
    severity: str | None
    batch_id: str | None
    links: list[str]
    closed_sequence: int | None
    closed_at: str | None
    closed_by: str | None
    outcome: str | None


class Node(msgspec.Struct, frozen=True, kw_only=True):
    id: str  # the thing's URI
    kind: str  # patient | donation | bag | batch | cartridge | product | sample | shipment | label
    label: str
    status: str | None


class Edge(msgspec.Struct, frozen=True, kw_only=True):
    source: str
    target: str
    relation: str
    sequence: int


class Graph(msgspec.Struct, frozen=True):
    nodes: list[Node]
    edges: list[Edge]


class Verification(msgspec.Struct, frozen=True, kw_only=True):
    """What was checked before the export was written, and against which checkpoint."""

    status: Literal["verified", "not verified", "failed"]
    origin: str  # the ledger (its checkpoints' origin line)
    tree_size: int  # the checkpoint every record was proved in
    root_hash: str  # base64, as in the checkpoint note
    checkpoint: str  # the signed note, verbatim (with witnesses' cosignatures where given)
    signed_by: str  # the ledger key ids that signed the checkpoint
    proved: list[str]
    not_proved: list[str]
    failure: str | None
    left_out: int  # the patient's records after that checkpoint: not in this export


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """The journey in plain words, for the first line of every report."""

    stage: Stage
    summary: str
    alarms: list[str]  # what a reader must not miss: a failed test, a rejection, a mismatch, an open hold
    notes: list[str] = []  # what was resolved: a retest that passed, a hold released, a correction


UtcTime = Annotated[str, Meta(extra_json_schema={"format": "date-time"})]
Stage = Literal[
    "enrolled", "collected", "manufacturing", "in QC", "released", "rejected", "shipped", "received",
    "blocked", "infused",
]  # fmt: skip
UnitStatus = Literal[
    "in_custody", "in_transit", "quarantined", "released", "rejected", "consumed", "infused", "blocked"
]


class Genealogy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    format: Literal["coi-genealogy/1"]
    exported_at: UtcTime
    asked: str  # "COI ..." or "batch ..."
    id_base: Annotated[str, Meta(pattern=r"^https://[a-z0-9.-]+(:[0-9]+)?(/[^?#\s]*)?$")]
    outcome: Outcome
    patient: Patient
    labels: list[Label]
    collections: list[Collection]
    custody: list[CustodyStep]
    batches: list[Batch]
    products: list[Product]
    shipments: list[Shipment]
    bedside: list[Bedside]
    infusions: list[Infusion]
    register: list[RegisterEntry]
    corrections: list[Correction]
    signatures: list[Signature]
    records: list[Record]
    graph: Graph
    verification: Verification


def json_schema() -> dict[str, object]:
    """The JSON Schema (2020-12) of the document, with its $id."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://coi-ledger.example/schemas/genealogy/v1.json",
        "title": f"coi-ledger batch genealogy export ({FORMAT})",
        **msgspec.json.schema(Genealogy),
    }
