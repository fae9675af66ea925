"""The event body: one msgspec Struct per event type, a tagged union on `type`.

Decoding is strict: unknown fields, wrong types and timestamps without a time zone are
errors. Site systems validate against the JSON Schema that `coi schema` prints.
"""

# No `from __future__ import annotations` here: msgspec would compile and evaluate every
# annotation string again each time it builds a decoder or the JSON Schema (that was half
# the time of `coi schema`); evaluated once, when the classes are made, they cost nothing later.
from datetime import datetime
from typing import Annotated, ClassVar, Literal, Union, cast
from uuid import UUID

import msgspec
from msgspec import Meta

from ledger.wire.identifiers import (
    COI_PATTERN,
    FIN_PATTERN,
    KEYED_DIN_PATTERN,
    PRINCIPAL_ID_PATTERN,
    din_problem,
)
from ledger.wire.version import WIRE_FORMAT

UtcTime = Annotated[datetime, Meta(tz=True, description="RFC 3339 time with a zone (UTC)")]
Coi = Annotated[
    str,
    Meta(pattern=COI_PATTERN.pattern, description="ISBT 128 Chain of Identity identifier (040)"),
]
Din = Annotated[
    str,
    Meta(
        pattern=KEYED_DIN_PATTERN.pattern,
        description="ISBT 128 DIN (13 characters) followed by its MOD 37-2 check character",
    ),
]
Fin = Annotated[str, Meta(pattern=FIN_PATTERN.pattern, description="ISBT 128 FIN")]
ProductCode = Annotated[
    str, Meta(pattern=r"^S[0-9]{4}[A-Z0-9]{3}$", description="ISBT 128 cellular product code")
]
Ident = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$")]
PrincipalId = Annotated[str, Meta(pattern=PRINCIPAL_ID_PATTERN.pattern)]
Sha256Hex = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]
Units = Annotated[list[Ident], Meta(min_length=1, max_length=64)]
Site = Annotated[str, Meta(pattern=r"^[A-Z]{2,3}-[A-Z0-9]{2,8}$", description="e.g. US-SSF")]
Text = Annotated[str, Meta(min_length=1, max_length=2000)]
# Bags and doses are hundreds of millilitres; the bound keeps absurd numbers off the record.
Millilitres = Annotated[float, Meta(gt=0, le=10_000)]
Celsius = Annotated[float, Meta(ge=-273.15, le=200)]
PatientKey = Annotated[
    str,
    Meta(
        pattern=r"^[A-Za-z0-9+/]{43}=$",
        description="base64 of the raw 32-byte Ed25519 public key derived from the wristband and "
        "the hospital's salt (README: Patient keys)",
    ),
]
PatientSignature = Annotated[
    str,
    Meta(
        pattern=r"^[A-Za-z0-9+/]{86}==$",
        description="base64 Ed25519 signature by the patient key over the bedside message "
        "(README: Patient keys); one that does not verify is recorded as a mismatch",
    ),
]
V01Digest = Annotated[
    str, Meta(pattern=r"^[0-9a-f]{64}$", description="v0.1 records only, refused in new ones")
]

Meaning = Literal["performed", "reviewed", "approved", "witnessed", "verified", "released", "rejected"]
Role = Literal[
    "admin",
    "enrolment",
    "collection",
    "courier",
    "manufacturing",
    "qc",
    "qa",
    "treatment",
    "logger",
    "ledger",
]
PrincipalKind = Literal["person", "device", "site_system"]
QcTest = Literal[
    "sterility", "mycoplasma", "endotoxin", "identity", "potency",
    "viability", "cell_count", "vcn", "rcl", "purity",
]  # fmt: skip
Step = Literal["enrichment", "activation", "transduction", "expansion", "formulation", "harvest"]


_NIL = UUID(int=0)
PublicKey = Annotated[
    str, Meta(pattern=r"^[A-Za-z0-9+/]{43}=$", description="base64 of the raw 32-byte Ed25519 key")
]


class Manifestation(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Part 11.50: who signed (printed name), when (UTC) and what the signature means."""

    principal: PrincipalId
    printed_name: Text
    signed_at: UtcTime
    meaning: Meaning


class Body(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Header common to every event."""

    stored: ClassVar[bool] = False  # a Stored* class below: read back under the old rules
    event_id: UUID
    occurred_at: UtcTime
    site: Site
    actor: PrincipalId
    reason: Text | None = None
    manifestations: list[Manifestation] = []

    def __post_init__(self) -> None:
        # A DIN keyed in by hand is accepted only with a correct check character, wherever
        # it appears; msgspec has no hook on the Din type itself, so the header checks.
        for name in ("din", "scanned_dins"):
            value = getattr(self, name, None)
            for i, din in enumerate([value] if isinstance(value, str) else value or []):
                problem = din_problem(din)
                if problem:
                    at = name if isinstance(value, str) else f"{name}[{i}]"
                    raise ValueError(f"invalid DIN: {problem} - at `$.{at}`")
        for name in ("event_id", "corrects_event_id"):
            if getattr(self, name, None) == _NIL and not self.stored:
                raise ValueError(f"the nil UUID identifies no event - at `$.{name}`")


# --- the principal registry (signed by an administrator) ---------------------------


BoundSites = Annotated[list[Site], Meta(max_length=32)]


class PrincipalRegistered(Body, frozen=True, tag="principal_registered"):
    principal_id: PrincipalId
    kind: PrincipalKind
    printed_name: Text
    roles: Annotated[list[Role], Meta(min_length=1)]
    public_key: PublicKey
    valid_from: UtcTime
    # The registered sites the principal acts for (aggregates/site.py); records from before
    # sites existed bind none.
    sites: BoundSites = []


class PrincipalKeyRotated(Body, frozen=True, tag="principal_key_rotated"):
    principal_id: PrincipalId
    public_key: PublicKey
    valid_from: UtcTime
    # A planned replacement (not a loss): envelopes in flight signed with the old key are
    # still accepted for a short grace after valid_from.
    routine: bool = False


KeyId = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9._-]{1,63}:[0-9a-f]{16}$")]


class PrincipalRevoked(Body, frozen=True, tag="principal_revoked"):
    principal_id: PrincipalId
    effective_at: UtcTime
    keyid: KeyId | None = None  # None revokes every key of the principal


class PrincipalKeyLocked(Body, frozen=True, tag="principal_key_locked"):
    """The ledger's service principal locks a key after repeated authenticated failures
    (aggregates/security.py); `failures` are the digests of the signed payloads refused."""

    principal_id: PrincipalId
    keyid: KeyId
    failures: Annotated[list[Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]], Meta(max_length=100)] = []


class PrincipalKeyUnlocked(Body, frozen=True, tag="principal_key_unlocked"):
    """An administrator lifts a lock; the header `reason` is mandatory."""

    principal_id: PrincipalId
    keyid: KeyId


class PrincipalSitesBound(Body, frozen=True, tag="principal_sites_bound"):
    """More sites for a principal registered before (or without) them: bindings only grow;
    revoke the principal to end them."""

    principal_id: PrincipalId
    sites: Annotated[list[Site], Meta(min_length=1, max_length=32)]


# --- the sites (signed by an administrator) ---------------------------------------------

SiteKind = Literal["collection", "manufacturing", "treatment", "courier_hub", "administration"]
Country = Annotated[str, Meta(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2, e.g. US")]
TimeZone = Annotated[
    str, Meta(pattern=r"^[A-Za-z][A-Za-z0-9_+/-]{0,63}$", description="IANA time zone, e.g. America/New_York")
]


class SiteRegistered(Body, frozen=True, tag="site_registered"):
    """A site events may happen at, and principals may be bound to (aggregates/site.py)."""

    code: Site
    name: Text
    country: Country
    time_zone: TimeZone
    kind: SiteKind


# --- the acceptance policy (signed by administrators) ------------------------------------

# Whole seconds; the bound only keeps absurd numbers off the record: each setting's own
# bounds are in aggregates/policy.py, where the rules check them.
Seconds = Annotated[int, Meta(ge=0, le=2**31)]


class PolicyAdopted(Body, frozen=True, tag="policy_adopted"):
    """A boundary in the log: from here on, records are judged by rules `version` with these
    settings (README: Policy). The header `reason` is mandatory."""

    version: Annotated[int, Meta(ge=1, le=2**31)]
    skew_seconds: Seconds
    rotation_grace_seconds: Seconds
    late_entry_after_seconds: Seconds
    lock_threshold: Annotated[int, Meta(ge=0, le=2**31)]


# --- the journey of one therapy (one COI) -------------------------------------------


class Journey(Body, frozen=True, kw_only=True):
    coi: Coi


class Enrolled(Journey, frozen=True, tag="enrolled"):
    order_id: Ident
    product: Text
    treatment_site: Site
    patient_key: PatientKey | None = None  # required of new enrolments (aggregates/therapy.py)
    # v0.1 records only: anyone reading the ledger could copy it as the bedside proof.
    patient_commitment: V01Digest | None = None


class PatientKeyRegistered(Journey, frozen=True, tag="patient_key_registered"):
    """The patient key of a patient enrolled before keys existed (once, before infusion)."""

    patient_key: PatientKey


class TreatmentSiteChanged(Journey, frozen=True, tag="treatment_site_changed"):
    """The patient moves to another hospital: shipments, bedside checks and infusions from
    now on are at `treatment_site`. Signed under the enrolment role with QA's e-signature,
    with a reason."""

    treatment_site: Site


class ApheresisCollected(Journey, frozen=True, tag="apheresis_collected"):
    din: Din
    product_code: ProductCode
    collection_facility: Fin
    unit_id: Ident
    started_at: UtcTime
    ended_at: UtcTime
    volume_ml: Millilitres


class LabelPrinted(Journey, frozen=True, tag="label_printed"):
    label_id: Ident
    din: Din


class LabelApplied(Journey, frozen=True, tag="label_applied"):
    label_id: Ident
    unit_id: Ident


class LabelVoided(Journey, frozen=True, tag="label_voided"):
    label_id: Ident


class CustodyTransferred(Journey, frozen=True, tag="custody_transferred"):
    unit_ids: Units
    from_custodian: PrincipalId
    to_custodian: PrincipalId
    location: Text
    condition: Text


class MaterialReceived(Journey, frozen=True, tag="material_received"):
    unit_ids: Units
    location: Text
    condition: Text
    scanned_coi: Coi
    scanned_dins: list[Din] = []


class ManufacturingStarted(Journey, frozen=True, tag="manufacturing_started"):
    batch_id: Ident
    shuttle_id: Ident
    slot: Annotated[int, Meta(ge=1, le=16)]
    cartridge_id: Ident
    recipe_version: Ident
    input_unit_ids: Units


class ManufacturingStepCompleted(Journey, frozen=True, tag="manufacturing_step_completed"):
    batch_id: Ident
    step: Step
    started_at: UtcTime
    ended_at: UtcTime
    material_lots: list[Ident] = []
    alarms: list[Text] = []


class Output(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    unit_id: Ident
    product_code: ProductCode
    volume_ml: Millilitres


class ManufacturingCompleted(Journey, frozen=True, tag="manufacturing_completed"):
    batch_id: Ident
    outputs: Annotated[list[Output], Meta(min_length=1, max_length=16)]


class QcSampleTaken(Journey, frozen=True, tag="qc_sample_taken"):
    batch_id: Ident
    sample_id: Ident


class QcResultRecorded(Journey, frozen=True, tag="qc_result_recorded"):
    batch_id: Ident
    sample_id: Ident
    test: QcTest
    method: Text
    result: Text
    specification: Text
    passed: bool


class RetestAuthorised(Journey, frozen=True, tag="retest_authorised"):
    """QA allows one more result of `test` for the batch, under the deviation its failure opened."""

    batch_id: Ident
    deviation_id: Ident
    test: QcTest


class Disposition(Journey, frozen=True, tag="disposition"):
    batch_id: Ident
    decision: Literal["released", "rejected"]


class ShipmentDispatched(Journey, frozen=True, tag="shipment_dispatched"):
    shipment_id: Ident
    unit_ids: Units
    shipper_id: Ident
    data_logger_id: Ident
    destination_site: Site


class TemperatureRecorded(Journey, frozen=True, tag="temperature_recorded"):
    shipment_id: Ident
    logger_id: Ident
    celsius: Celsius


class TemperatureExcursion(Journey, frozen=True, tag="temperature_excursion"):
    """Places a hold on the shipment's units and opens a deviation (ids derived from event_id)."""

    shipment_id: Ident
    logger_id: Ident
    celsius: Celsius
    limit_celsius: Celsius
    duration_s: Annotated[int, Meta(ge=0, le=31 * 24 * 3600)]  # a month: longer than any shipment


class ShipmentReceived(Journey, frozen=True, tag="shipment_received"):
    shipment_id: Ident
    location: Text
    condition: Text
    logger_reviewed: bool


class BedsideIdentityVerified(Journey, frozen=True, tag="bedside_identity_verified"):
    unit_id: Ident
    witness: PrincipalId
    patient_signature: PatientSignature | None = None  # required of new checks (therapy.py)
    # v0.1 records only: it had to equal the enrolment's commitment, which anyone can read.
    patient_proof: V01Digest | None = None


class Infused(Journey, frozen=True, tag="infused"):
    unit_id: Ident
    thaw_started_at: UtcTime


class DeviationOpened(Journey, frozen=True, tag="deviation_opened"):
    deviation_id: Ident
    description: Text
    severity: Literal["minor", "major", "critical"]
    batch_id: Ident | None = None


class DeviationClosed(Journey, frozen=True, tag="deviation_closed"):
    deviation_id: Ident
    outcome: Text


class HoldPlaced(Journey, frozen=True, tag="hold_placed"):
    hold_id: Ident
    unit_ids: Units


class HoldReleased(Journey, frozen=True, tag="hold_released"):
    hold_id: Ident


class RecordCorrected(Journey, frozen=True, tag="record_corrected"):
    """A correction: the old value stays in the original record and is repeated here."""

    corrects_event_id: UUID
    field: Annotated[str, Meta(pattern=r"^[a-z_]{1,40}$")]
    old_value: Annotated[str, Meta(max_length=2000)]
    new_value: Annotated[str, Meta(max_length=2000)]


RegistryEvent = Union[  # noqa: UP007
    PrincipalRegistered, PrincipalKeyRotated, PrincipalRevoked, PrincipalSitesBound, PrincipalKeyLocked,
    PrincipalKeyUnlocked,
]  # fmt: skip
# The same, for isinstance (mypy narrows by a tuple of classes, not by a Union alias).
PRINCIPAL_TYPES = (
    PrincipalRegistered, PrincipalKeyRotated, PrincipalRevoked, PrincipalSitesBound, PrincipalKeyLocked,
    PrincipalKeyUnlocked,
)  # fmt: skip
JourneyEvent = Union[  # noqa: UP007
    Enrolled, PatientKeyRegistered, ApheresisCollected, LabelPrinted, LabelApplied, LabelVoided,
    CustodyTransferred, MaterialReceived, ManufacturingStarted, ManufacturingStepCompleted,
    ManufacturingCompleted, QcSampleTaken, QcResultRecorded, RetestAuthorised, Disposition,
    ShipmentDispatched, TemperatureRecorded, TemperatureExcursion, ShipmentReceived,
    BedsideIdentityVerified, Infused, DeviationOpened, DeviationClosed,
    HoldPlaced, HoldReleased, RecordCorrected,
    TreatmentSiteChanged,
]  # fmt: skip
Event = Union[RegistryEvent, SiteRegistered, PolicyAdopted, JourneyEvent]  # noqa: UP007
# The registry's records, principals and sites: replayed before any record they authorise.
REGISTRY_TYPES: tuple[type[Body], ...] = (*PRINCIPAL_TYPES, SiteRegistered)

EVENT_TYPES: dict[str, type[Body]] = {
    cls.__struct_config__.tag: cls
    # (mypy does not see a Union alias's __args__)
    for cls in (*REGISTRY_TYPES, PolicyAdopted, *JourneyEvent.__args__)  # type: ignore[attr-defined]
}


# --- reading back what is stored ------------------------------------------------------
#
# A stored body was accepted under the rules of its day. Constraints added since (site
# patterns, bounds on numbers, key patterns, the nil UUID) are checked at the door, when a
# body is decoded for submission; replaying a record accepted before them must not fail, or
# an old ledger's patient could never be loaded again. Each Stored* class is its event class
# with those fields typed as they were; isinstance and `match` see the event class.

_AS_ACCEPTED: dict[str, object] = {
    "treatment_site": str, "destination_site": str, "volume_ml": float, "celsius": float,
    "limit_celsius": float, "duration_s": int, "public_key": str, "keyid": str | None,
    "old_value": str, "new_value": str,
}  # fmt: skip


class StoredOutput(Output, frozen=True):
    volume_ml: float


def _as_stored(cls: type[Body]) -> type[Body]:
    as_accepted = {**_AS_ACCEPTED, "outputs": list[StoredOutput]}
    defaults = dict(zip(reversed(cls.__struct_fields__), reversed(cls.__struct_defaults__), strict=False))
    fields = [
        (name, as_accepted[name], defaults[name]) if name in defaults else (name, as_accepted[name])
        for name in cls.__struct_fields__
        if name in as_accepted
    ]
    stored = cast("type[Body]", msgspec.defstruct(
        f"Stored{cls.__name__}", fields, bases=(cls,), tag=cls.__struct_config__.tag,
        namespace={"stored": True}, frozen=True, forbid_unknown_fields=True,
    ))  # fmt: skip
    return stored


STORED_TYPES = tuple(_as_stored(cls) for cls in EVENT_TYPES.values())
StoredEvent = Union[STORED_TYPES]  # type: ignore[valid-type]  # noqa: UP007


# Where the schema of the body says it lives: versioned with the wire format, so a site system
# that pinned this address keeps validating against the format it was written for.
SCHEMA_ID = f"https://coi-ledger.example/schemas/event/v{WIRE_FORMAT}.json"


def json_schema() -> dict[str, object]:
    """The JSON Schema (2020-12) of the body, for site systems in any language: `$id` names it,
    `x-wire-format` is the wire format version (ledger/wire/version.py)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "x-wire-format": WIRE_FORMAT,
        **msgspec.json.schema(Event),
    }
